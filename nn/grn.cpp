#include "nn/grn.h"

#include "ops/grn.h"

namespace cnx::nn {

GRN::GRN(int64_t d, double e) : Module("GRN"), dim(d), eps(e) {
    CNX_CHECK(d > 0, "GRN: dim must be positive, got ", d);
    gamma = register_parameter("gamma", zeros({1, 1, 1, d}),
                               ParamOptions().no_weight_decay().alias("timm", "weight", {d}));
    beta = register_parameter("beta", zeros({1, 1, 1, d}), ParamOptions().no_weight_decay().alias("timm", "bias", {d}));
}

Tensor GRN::forward(const Tensor& x) {
    CNX_CHECK(x.dim() == 4 && x.size(3) == dim, "GRN(", dim, "): input ", x.str(), " must be NHWC with ", dim,
              " channels");
    return grn(x, gamma, beta, eps);
}

}  // namespace cnx::nn
