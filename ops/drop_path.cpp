// Stochastic depth (Huang et al. 2016) as used in ConvNeXt's residual branches: one Bernoulli
// draw per sample (dim 0), kept samples scaled by 1/keep so the expectation is unchanged.
#include "ops/drop_path.h"

#include <vector>

#include "core/autograd.h"
#include "ops/parallel.h"
#include "core/rng.h"

namespace cnx {
namespace {

// out[n, i] = x[n, i] * scale[n]; also the backward with (dout, same scale).
template <class T>
void per_sample_scale(T* out, const T* x, const std::vector<double>& scale, int64_t N, int64_t inner) {
    parallel_range(N, N * inner >= kParallelMin ? 1 : N, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
            const T s = (T)scale[n];
            const T* xn = x + n * inner;
            T* on = out + n * inner;
#pragma omp simd
            for (int64_t i = 0; i < inner; ++i) on[i] = xn[i] * s;
        }
    });
}

Tensor apply_scale(const Tensor& x, const std::vector<double>& scale) {
    Tensor out = empty_like(x);
    const int64_t N = x.size(0), inner = N ? x.numel() / N : 0;
    CNX_DISPATCH(x.dtype(), "drop_path",
                 { per_sample_scale<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), scale, N, inner); });
    return out;
}

}  // namespace

Tensor drop_path(const Tensor& x, double p, bool training, Generator* gen) {
    CNX_CHECK(x.defined(), "drop_path: undefined input");
    CNX_CHECK(p >= 0.0 && p <= 1.0, "drop_path: drop probability ", p, " is not in [0, 1]");
    if (!training || p == 0.0) return x;
    CNX_CHECK(x.dim() >= 1, "drop_path: input ", x.str(), " has no sample dimension");
    const double keep = 1.0 - p;
    Generator& g = gen ? *gen : default_generator();
    const int64_t N = x.size(0);
    std::vector<double> scale(N);
    // p == 1 drops every sample; the scale of a kept sample never gets used then.
    for (int64_t n = 0; n < N; ++n) scale[n] = g.uniform() < keep ? 1.0 / keep : 0.0;
    Tensor out = apply_scale(x, scale);
    if (autograd::records("drop_path", {x}))
        autograd::record("drop_path", out, {x},
                         [scale](const Tensor& dout) -> std::vector<Tensor> { return {apply_scale(dout, scale)}; });
    return out;
}

}  // namespace cnx
