// Global Response Normalization with its own kernels: one pass over x for the per-image sums of
// squares, one for y; the backward one pass over (dy, x) for its per-image sums and one for dx.
// The O(N C) algebra between the passes is in ops/kernels/grn_math.h, shared with the fused V2
// MLP (ops/fused_grn.cpp).
#include "ops/grn.h"

#include <memory>
#include <vector>

#include "core/autograd.h"
#include "ops/column_sum.h"
#include "ops/kernels/grn_math.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

struct GrnDims {
    int64_t N, P, C;  // images, positions per image (H W), channels
};

// x, y [N, P, C]; gamma, beta [C]; G, Nx, s [N, C] and denom [N] (mean G + eps) kept for backward.
template <class T>
void grn_forward(const T* x, const T* gamma, const T* beta, const GrnDims& d, double eps, T* y, T* G, T* Nx, T* s,
                 double* denom) {
    const int64_t N = d.N, P = d.P, C = d.C;
    std::vector<double> q(N * C);
    column_sums<double>(N, P, C, q.data(), 1.0, [&](int64_t n, int64_t r0, int64_t r1, double* acc) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* a = x + (n * P + r) * C;
#pragma omp simd
            for (int64_t k = 0; k < C; ++k) acc[k] += (double)a[k] * (double)a[k];
        }
    });
    for (int64_t n = 0; n < N; ++n)
        denom[n] = grn_math::stats(q.data() + n * C, gamma, C, eps, G + n * C, Nx + n * C, s + n * C);
    parallel_range(N * P, N * P * C >= kParallelMin ? std::max<int64_t>(1, 4096 / C) : N * P, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const T* a = x + i * C;
            const T* sn = s + (i / P) * C;
            T* o = y + i * C;
#pragma omp simd
            for (int64_t k = 0; k < C; ++k) o[k] = a[k] * sn[k] + beta[k];
        }
    });
}

// dx [N, P, C] (may be null); dgamma, dbeta [C] (may be null) are written. TX: how x was saved (T,
// or BFloat16 under Precision::BF16, widened as it is read).
template <class T, class TX>
void grn_backward(const T* dy, const TX* x, const T* gamma, const T* G, const T* Nx, const T* s, const double* denom,
                  const GrnDims& d, T* dx, T* dgamma, T* dbeta) {
    const int64_t N = d.N, P = d.P, C = d.C;
    std::vector<T> r(N * C);
    grn_math::backward_stats(dy, x, [](TX v) { return (T)widen(v); }, gamma, G, Nx, denom, N, P, C, r.data(), dgamma,
                             dbeta);
    if (!dx) return;
    parallel_range(N * P, N * P * C >= kParallelMin ? std::max<int64_t>(1, 4096 / C) : N * P, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const T* g = dy + i * C;
            const TX* a = x + i * C;
            const T* sn = s + (i / P) * C;
            const T* rn = r.data() + (i / P) * C;
            T* o = dx + i * C;
#pragma omp simd
            for (int64_t k = 0; k < C; ++k) o[k] = g[k] * sn[k] + (T)widen(a[k]) * rn[k];
        }
    });
}

void check_param(const char* what, const Tensor& p, const Tensor& x) {
    const int64_t C = x.size(3);
    CNX_CHECK(p.defined(), "grn: ", what, " is undefined");
    CNX_CHECK(p.dtype() == x.dtype(), "grn: ", what, " ", p.str(), " and input ", x.str(), " have different dtypes");
    CNX_CHECK(p.numel() == C && p.size(-1) == C, "grn: ", what, " ", p.str(), " should hold the ", C,
              " channels of input ", x.str(), " ([", C, "] or [1, 1, 1, ", C, "])");
}

}  // namespace

Tensor grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
    CNX_CHECK(x.defined() && x.dim() == 4, "grn: input must be NHWC [N, H, W, C], got ",
              x.defined() ? x.str() : "undefined");
    check_param("gamma", gamma, x);
    check_param("beta", beta, x);
    CNX_CHECK(eps >= 0, "grn: eps must not be negative, got ", eps);
    const GrnDims d{x.size(0), x.size(1) * x.size(2), x.size(3)};
    const DType dt = x.dtype();
    Tensor y = empty_like(x);
    Tensor G = Tensor::empty({d.N, d.C}, dt), Nx = Tensor::empty({d.N, d.C}, dt), s = Tensor::empty({d.N, d.C}, dt);
    auto denom = std::make_shared<std::vector<double>>(d.N);
    CNX_DISPATCH(dt, "grn", {
        grn_forward<scalar_t>(x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(), d, eps,
                              y.data<scalar_t>(), G.data<scalar_t>(), Nx.data<scalar_t>(), s.data<scalar_t>(),
                              denom->data());
    });
    if (!autograd::records("grn", {x, gamma, beta})) return y;
    const bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    const SavedTensor sx = save_for_backward(x);  // the statistics G, Nx, s stay in x's dtype
    Tensor gd = gamma.detach();
    const Shape gshape = gamma.shape(), bshape = beta.shape();
    autograd::record("grn", y, {x, gamma, beta}, [=](const Tensor& g) -> std::vector<Tensor> {
        Tensor dx = need_x ? empty_like(g) : Tensor();
        Tensor dgamma = need_g ? Tensor::empty(gshape, g.dtype()) : Tensor();
        Tensor dbeta = need_b ? Tensor::empty(bshape, g.dtype()) : Tensor();
        if (sx.is_bf16()) {
            grn_backward<float>(g.data<float>(), sx.stored().data<BFloat16>(), gd.data<float>(), G.data<float>(),
                                Nx.data<float>(), s.data<float>(), denom->data(), d,
                                need_x ? dx.data<float>() : nullptr, need_g ? dgamma.data<float>() : nullptr,
                                need_b ? dbeta.data<float>() : nullptr);
            return {dx, dgamma, dbeta};
        }
        CNX_DISPATCH(g.dtype(), "grn backward", {
            grn_backward<scalar_t>(g.data<scalar_t>(), sx.stored().data<scalar_t>(), gd.data<scalar_t>(),
                                   G.data<scalar_t>(), Nx.data<scalar_t>(), s.data<scalar_t>(), denom->data(), d,
                                   need_x ? dx.data<scalar_t>() : nullptr, need_g ? dgamma.data<scalar_t>() : nullptr,
                                   need_b ? dbeta.data<scalar_t>() : nullptr);
        });
        return {dx, dgamma, dbeta};
    });
    return y;
}

}  // namespace cnx
