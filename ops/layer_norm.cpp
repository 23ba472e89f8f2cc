// Layer normalisation over the last dimension (Ba et al. 2016), as in llm.c's
// layernorm_forward / layernorm_backward: the forward saves mean and rstd per row, the backward
// needs nothing else. Statistics are two-pass (mean, then the mean of squared deviations), which
// avoids the cancellation of E[x^2] - E[x]^2 in float.
#include "ops/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/column_sum.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

// One row's output from its statistics. The forward and the regeneration below share it, so a
// regenerated output has the forward's bits.
template <class T>
inline void layernorm_apply_row(T* o, const T* x, T m, T s, const T* weight, const T* bias, int64_t C) {
    if (weight && bias) {
#pragma omp simd
        for (int64_t i = 0; i < C; ++i) o[i] = (x[i] - m) * s * weight[i] + bias[i];
    } else {
        for (int64_t i = 0; i < C; ++i) {
            T n = (x[i] - m) * s;
            if (weight) n *= weight[i];
            if (bias) n += bias[i];
            o[i] = n;
        }
    }
}

// The output again from the saved statistics: one pass, no reductions.
template <class T>
void layernorm_apply(T* out, const T* inp, const T* mean, const T* rstd, const T* weight, const T* bias, int64_t rows,
                     int64_t C) {
    parallel_range(rows, rows * C >= kParallelMin ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
            layernorm_apply_row(out + r * C, inp + r * C, mean[r], rstd[r], weight, bias, C);
    });
}

// inp, out [rows, C]; mean, rstd [rows]; weight, bias [C] or null (no affine).
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t rows,
                       int64_t C, double eps) {
    parallel_range(rows, rows * C >= kParallelMin ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* x = inp + r * C;
            T* o = out + r * C;
            T m = 0;
#pragma omp simd reduction(+ : m)
            for (int64_t i = 0; i < C; ++i) m += x[i];
            m /= (T)C;
            T v = 0;
#pragma omp simd reduction(+ : v)
            for (int64_t i = 0; i < C; ++i) {
                T d = x[i] - m;
                v += d * d;
            }
            v /= (T)C;
            const T s = (T)1 / std::sqrt(v + (T)eps);
            layernorm_apply_row(o, x, m, s, weight, bias, C);
            mean[r] = m;
            rstd[r] = s;
        }
    });
}

// dinp (may be null) [rows, C] is written; dweight, dbias (may be null) [C] are written, not
// accumulated. Their column sums go through column_sums (ops/column_sum.h): double accumulators,
// the same result for any thread count. TX: how the input was saved (T, or BFloat16).
template <class T, class TX>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const TX* inp, const T* weight, const T* mean,
                        const T* rstd, int64_t rows, int64_t C) {
    // [dweight | dbias] are accumulated side by side, in the same pass over the row that sums
    // dnorm for dinp; a half that is not wanted is simply not copied out.
    std::vector<T> sums(2 * C), ones;
    if (!weight) ones.assign(C, T(1));
    column_sums<T>(1, rows, 2 * C, sums.data(), 1.0, [&](int64_t, int64_t r0, int64_t r1, double* acc) {
        // Local pointers: read through the closure, GCC turned w[i] into gathers.
        const T* w = weight ? weight : ones.data();
        double* accw = acc;
        double* accb = acc + C;
        for (int64_t r = r0; r < r1; ++r) {
            const TX* x = inp + r * C;
            const T* g = dout + r * C;
            const T m = mean[r], s = rstd[r];
            // dnorm = g * w; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
            T dnorm_mean = 0, dnorm_norm_mean = 0;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
            for (int64_t i = 0; i < C; ++i) {
                const T norm = (widen(x[i]) - m) * s, dnorm = w[i] * g[i];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
                accw[i] += (double)(norm * g[i]);
                accb[i] += (double)g[i];
            }
            if (!dinp) continue;
            dnorm_mean /= (T)C;
            dnorm_norm_mean /= (T)C;
            T* dx = dinp + r * C;
#pragma omp simd
            for (int64_t i = 0; i < C; ++i) {
                const T norm = (widen(x[i]) - m) * s;
                dx[i] = (w[i] * g[i] - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
    });
    if (dweight) std::copy(sums.begin(), sums.begin() + C, dweight);
    if (dbias) std::copy(sums.begin() + C, sums.end(), dbias);
}

void check_args(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
    CNX_CHECK(x.defined() && x.dim() >= 1, op, ": input must have at least one dimension, got ",
              x.defined() ? x.str() : "undefined");
    const int64_t C = x.size(-1);
    for (const Tensor* p : {&weight, &bias}) {
        if (!p->defined()) continue;
        const char* what = p == &weight ? "weight" : "bias";
        CNX_CHECK(p->dim() == 1 && p->size(0) == C, op, ": ", what, " ", p->str(), " does not match input ",
                  x.str(), " (expected [", C, "])");
        CNX_CHECK(p->dtype() == x.dtype(), op, ": ", what, " ", p->str(), " and input ", x.str(),
                  " have different dtypes");
    }
}


}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    check_args("layer_norm", x, weight, bias);
    const int64_t C = x.size(-1), rows = C ? x.numel() / C : 0;
    Tensor out = empty_like(x);
    Tensor mean = Tensor::empty({rows}, x.dtype()), rstd = Tensor::empty({rows}, x.dtype());
    CNX_DISPATCH(x.dtype(), "layer_norm", {
        layernorm_forward<scalar_t>(out.data<scalar_t>(), mean.data<scalar_t>(), rstd.data<scalar_t>(),
                                    x.data<scalar_t>(), data_or_null<scalar_t>(weight), data_or_null<scalar_t>(bias),
                                    rows, C, eps);
    });
    if (autograd::records("layer_norm", {x, weight, bias})) {
        const SavedTensor sx = save_for_backward(x);  // statistics stay float32
        Tensor wd = weight.defined() ? weight.detach() : Tensor();
        const bool need_x = x.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
                   need_b = bias.defined() && bias.requires_grad();
        autograd::record("layer_norm", out, {x, weight, bias},
                         [=](const Tensor& g) -> std::vector<Tensor> {
                             Tensor dx = need_x ? empty_like(g) : Tensor();
                             Tensor dw = need_w ? Tensor::empty({C}, g.dtype()) : Tensor();
                             Tensor db = need_b ? Tensor::empty({C}, g.dtype()) : Tensor();
                             if (sx.is_bf16() && !meta_mode()) {
                                 layernorm_backward<float>(data_or_null<float>(dx), data_or_null<float>(dw),
                                                           data_or_null<float>(db), g.data<float>(),
                                                           sx.stored().data<BFloat16>(), data_or_null<float>(wd),
                                                           mean.data<float>(), rstd.data<float>(), rows, C);
                                 return {dx, dw, db};
                             }
                             CNX_DISPATCH(g.dtype(), "layer_norm backward", {
                                 layernorm_backward<scalar_t>(
                                     data_or_null<scalar_t>(dx), data_or_null<scalar_t>(dw), data_or_null<scalar_t>(db),
                                     g.data<scalar_t>(), sx.stored().data<scalar_t>(), data_or_null<scalar_t>(wd),
                                     mean.data<scalar_t>(), rstd.data<scalar_t>(), rows, C);
                             });
                             return {dx, dw, db};
                         });
        // The output again, from the saved input and statistics: one pass over it (ops/saved.h,
        // Recompute::Cheap).
        if (recomputes_cheap()) {
            Tensor bd = bias.defined() ? bias.detach() : Tensor();
            const Shape shape = out.shape();
            autograd::offer_regenerate(out, [sx, wd, bd, mean, rstd, shape, rows, C]() {
                const Tensor xin = sx.get();
                Tensor o = Tensor::empty(shape, xin.dtype());
                CNX_DISPATCH(xin.dtype(), "layer_norm (recomputed)", {
                    layernorm_apply<scalar_t>(o.data<scalar_t>(), xin.data<scalar_t>(), mean.data<scalar_t>(),
                                              rstd.data<scalar_t>(), data_or_null<scalar_t>(wd),
                                              data_or_null<scalar_t>(bd), rows, C);
                });
                return o;
            });
        }
    }
    return out;
}

namespace ref {
// Textbook formula, statistics in double, no autograd: what the kernel above is tested against.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    check_args("ref::layer_norm", x, weight, bias);
    const int64_t C = x.size(-1), rows = C ? x.numel() / C : 0;
    std::vector<double> xv = x.to_vector(), wv, bv, out(x.numel());
    if (weight.defined()) wv = weight.to_vector();
    if (bias.defined()) bv = bias.to_vector();
    for (int64_t r = 0; r < rows; ++r) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < C; ++i) m += xv[r * C + i];
        m /= C;
        for (int64_t i = 0; i < C; ++i) v += (xv[r * C + i] - m) * (xv[r * C + i] - m);
        v /= C;
        for (int64_t i = 0; i < C; ++i) {
            double n = (xv[r * C + i] - m) / std::sqrt(v + eps);
            out[r * C + i] = n * (wv.empty() ? 1.0 : wv[i]) + (bv.empty() ? 0.0 : bv[i]);
        }
    }
    return from_vector(out, x.shape(), x.dtype());
}
}  // namespace ref

}  // namespace cnx
