#pragma once
#include "core/tensor.h"

namespace cnx {
class Generator;
// Stochastic depth: each sample (first dim) is kept with probability 1 - p and scaled by
// 1 / (1 - p), or zeroed. Identity when !training or p == 0. Uses the default generator if none.
Tensor drop_path(const Tensor& x, double p, bool training, Generator* gen = nullptr);
}  // namespace cnx
