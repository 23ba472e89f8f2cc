#pragma once
#include "core/tensor.h"

namespace cnx {
// Normalises over the last dimension: (x - mean) * rstd * weight + bias. weight/bias [C] or
// undefined (no affine). On NHWC this is also the official "channels_first" LayerNorm.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6);
namespace ref {
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
}
}  // namespace cnx
