#pragma once
// Global Response Normalization, the layer ConvNeXt V2 adds (Woo et al. 2023, "ConvNeXt V2:
// Co-designing and Scaling ConvNets with Masked Autoencoders"), on NHWC activations:
//
//   Gx = ||x||_2 over H and W          per image and channel          [N, 1, 1, C]
//   Nx = Gx / (mean of Gx over C + eps)                               [N, 1, 1, C]
//   y  = gamma * (x * Nx) + beta + x
//
// gamma and beta keep the official names and shape [1, 1, 1, C] and start at zero (GRN starts
// as the identity); timm stores them as mlp.grn.weight / mlp.grn.bias of shape [C]. Neither is
// weight-decayed (the official V2 rule: names ending .gamma or .beta).
#include "nn/module.h"

namespace cnx::nn {

class GRN : public Module {
public:
    explicit GRN(int64_t dim, double eps = 1e-6);
    Tensor forward(const Tensor& x) override;  // NHWC [N, H, W, dim]
    int64_t dim;
    double eps;
    Tensor gamma, beta;  // [1, 1, 1, dim]
};

}  // namespace cnx::nn
