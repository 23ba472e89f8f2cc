#include "nn/grn.h"

#include "ops/elementwise.h"
#include "ops/pointwise.h"
#include "ops/reduce.h"

namespace cnx::nn {

GRN::GRN(int64_t d, double e) : Module("GRN"), dim(d), eps(e) {
    CNX_CHECK(d > 0, "GRN: dim must be positive, got ", d);
    gamma = register_parameter("gamma", zeros({1, 1, 1, d}),
                               ParamOptions().no_weight_decay().alias("timm", "weight", {d}));
    beta = register_parameter("beta", zeros({1, 1, 1, d}), ParamOptions().no_weight_decay().alias("timm", "bias", {d}));
}

// Composed from gradchecked primitives: no kernel and no backward of its own.
Tensor GRN::forward(const Tensor& x) {
    CNX_CHECK(x.dim() == 4 && x.size(3) == dim, "GRN(", dim, "): input ", x.str(), " must be NHWC with ", dim,
              " channels");
    Tensor gx = sqrt(sum(x * x, {1, 2}, /*keepdim=*/true));  // [N, 1, 1, C]
    Tensor nx = gx / (mean(gx, {-1}, true) + eps);          // [N, 1, 1, C]
    return gamma * (x * nx) + beta + x;
}

}  // namespace cnx::nn
