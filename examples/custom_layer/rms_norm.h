#pragma once
// A new layer written from the library's primitive ops: RMS normalisation over the last dim
// (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"; torch.nn.RMSNorm):
//
//   y = x / sqrt(mean(x^2 over the last dim) + eps) * weight
//
// Every op below (mul, mean, add, sqrt, div) has a hand-written, gradchecked backward, so the
// layer needs none of its own: autograd composes it. This one header is all a user writes; the
// layer can later earn a fused kernel of its own and this version becomes its reference.
#include <convnext/convnext.h>

#include <cstdint>

namespace custom {

// The layer as a function of tensors, as torch.nn.functional.rms_norm: x [..., C], weight [C].
// Being a plain function of its inputs, it is what gradcheck differentiates with respect to the
// input and the parameter alike.
inline cnx::Tensor rms_norm(const cnx::Tensor& x, const cnx::Tensor& weight, double eps = 1e-6) {
    cnx::Tensor mean_square = cnx::mean(cnx::mul(x, x), {-1}, /*keepdim=*/true);  // [..., 1]
    cnx::Tensor rms = cnx::sqrt(cnx::add(mean_square, eps));
    return cnx::mul(cnx::div(x, rms), weight);  // [..., C] / [..., 1], then * [C] (broadcasting)
}

// The module: one registered parameter, `weight` [C], starting at 1 (the layer starts as a pure
// normalisation). 1-D, so the training library's parameter groups leave it out of weight decay,
// as they do LayerNorm's weight.
class RMSNorm : public cnx::nn::Module {
public:
    explicit RMSNorm(int64_t dim, double eps = 1e-6) : Module("RMSNorm"), dim(dim), eps(eps) {
        weight = register_parameter("weight", cnx::ones({dim}));
    }
    cnx::Tensor forward(const cnx::Tensor& x) override {
        CNX_CHECK(x.dim() >= 1 && x.size(-1) == dim, "RMSNorm(", dim, "): input ", x.str(),
                  " does not end in ", dim, " channels");
        return rms_norm(x, weight, eps);
    }

    int64_t dim;
    double eps;
    cnx::Tensor weight;  // [dim]
};

}  // namespace custom
