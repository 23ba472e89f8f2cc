#pragma once
#include "core/tensor.h"

namespace cnx {
// Global Response Normalization (ConvNeXt V2) over an NHWC tensor x [N, H, W, C]:
//
//   G[n,c]  = sqrt(sum over h, w of x[n,h,w,c]^2)
//   Nx[n,c] = G[n,c] / (mean over c of G[n,c] + eps)
//   y       = gamma * (x * Nx) + beta + x
//
// gamma and beta hold C values, shaped [C] or [1, 1, 1, C] (the official parameters); their
// gradients come back in the same shape. The float64 gradient check and the equality with the
// same layer composed from sqrt, sum, mean, mul, div and add are in the tests. Where an image's
// channel is zero everywhere, G = 0 and the gradient through G is taken as 0 (torch.norm's choice).
Tensor grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-6);
}  // namespace cnx
