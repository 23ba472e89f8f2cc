#pragma once
#include "core/tensor.h"

namespace cnx {

// The MLP half of a ConvNeXt block, with its layer scale and residual, as one op:
//
//   out = residual + gamma * (GELU(u · w1^T + b1) · w2^T + b2)
//
// u [..., C], w1 [H, C], b1 [H], w2 [C, H], b2 [C], gamma [C], residual shaped like u. b1, b2,
// gamma and residual may be undefined (left out of the formula). GELU is the exact erf form.
//
// The numbers of linear -> gelu -> linear -> channel_scale -> add (to float rounding), for less
// time and memory: GELU(h) is never stored — the second GEMM applies GELU to h as it reads it, and
// bias, gamma and the residual in its output pass; the backward keeps only u and h (not GELU(h),
// nor the second GEMM's output), applies GELU to h while packing it for dW2 and GELU' to the dh
// GEMM's output tile, and gets dgamma from the dW2 product instead of from a saved output.
Tensor convnext_mlp(const Tensor& u, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                    const Tensor& gamma, const Tensor& residual);

}  // namespace cnx
