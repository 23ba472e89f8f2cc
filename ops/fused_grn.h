#pragma once
#include "core/tensor.h"

namespace cnx {

// The MLP half of a ConvNeXt V2 block, with its residual, as one op:
//
//   out = residual + GRN(GELU(u · w1^T + b1)) · w2^T + b2
//
// u NHWC [N, H, W, C] (GRN reduces over each image's H and W), w1 [K, C], b1 [K], GRN's gamma
// and beta K values ([K] or [1, 1, 1, K], gradients in the same shape), w2 [C, K], b2 [C],
// residual shaped like u. b1, b2 and residual may be undefined (left out of the formula). GELU
// is the exact erf form; GRN as ops/grn.h with this eps.
//
// The numbers of linear -> gelu -> grn -> linear -> add (to float rounding), in less time and
// memory: GELU(h) is never stored apart from the GRN output, the GRN statistics come from the
// pass that applies GELU, and the backward keeps only u, h and the GRN output (see fused_grn.cpp).
Tensor convnextv2_mlp(const Tensor& u, const Tensor& w1, const Tensor& b1, const Tensor& grn_gamma,
                      const Tensor& grn_beta, const Tensor& w2, const Tensor& b2, const Tensor& residual,
                      double eps = 1e-6);

}  // namespace cnx
