#pragma once
#include "core/tensor.h"

namespace cnx {
// GELU: exact x * Phi(x) with erf, or PyTorch's approximate='tanh' form.
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
}  // namespace cnx
