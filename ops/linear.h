#pragma once
#include "core/tensor.h"

namespace cnx {
// a [..., M, K] @ b [K, N] -> [..., M, N]  (leading dims of a are flattened into M)
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] @ weight[out, in]^T + bias[out] -> [..., out]; bias may be undefined.
// On NHWC activations this is the 1x1 convolution (pwconv1/pwconv2 of a ConvNeXt block).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
}  // namespace cnx
