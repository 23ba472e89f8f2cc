// convnextv2_mlp: pwconv1 -> GELU -> GRN -> pwconv2 -> residual in two GEMMs and two passes over
// the hidden activation forward, four GEMMs and two passes backward.
//
// GRN needs each image's sum of squares over all its positions between GELU and pwconv2, so it
// cannot live in one GEMM's epilogue. Forward, with a = GELU(h), per image n:
//   h   = u·w1^T + b1                  GEMM 1 (bias in its epilogue); h kept for the backward
//   y   = a, q[n,k] = sum_p a^2         pass 1: GELU applied once, the sums taken as it is written
//   y   = y s_n + beta                  pass 2, s_n = 1 + gamma Nx_n (ops/kernels/grn_math.h)
//   out = y·w2^T + b2 + residual        GEMM 2 (bias and residual in its epilogue)
// Backward, with g = dout [M, C]:
//   dw2 = g^T·y,  db2 = colsum(g)       (y, the GRN output, is what the forward kept)
//   dy  = g·w2                          [M, K]
//   pass 1: a = GELU(h); per image S = sum_p dy a, and colsum(dy) = dbeta
//   pass 2: dh = (dy s_n + a r_n) GELU'(h), in place of dy (GELU and GELU' share one erf)
//   dw1 = dh^T·u,  db1 = colsum(dh),  du = dh·w1,  dresidual = g
// Per-image sums run through column_sums: double accumulators, the same result for any number of
// threads. Scaling w2 per image instead of writing y (y s_n · w2^T = a · (w2 diag s_n)^T) would
// save pass 2 but split GEMM 2 into one small GEMM per image (49 rows in ConvNeXt-T's last
// stage), and dw2 would then need y anyway.
#include "ops/fused_grn.h"

#include <memory>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/column_sum.h"
#include "ops/gemm.h"
#include "ops/kernels/gelu_math.h"
#include "ops/kernels/grn_math.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

struct Dims {
    int64_t N, P, C, K;  // images, positions per image, channels, hidden channels
    int64_t M() const { return N * P; }
};

// Rows per parallel chunk of an element-wise pass over [rows, K].
int64_t row_grain(const Dims& d) { return d.M() * d.K >= kParallelMinCostly ? std::max<int64_t>(1, 2048 / d.K) : d.M(); }

// The GRN statistics of every image, kept for the backward.
struct GrnState {
    Tensor G, Nx, s;            // [N, K]
    std::vector<double> denom;  // [N]: mean G + eps
};

// h [M, K] in, y [M, K] = GRN(GELU(h)) out (y may be h); fills st. TH = TY = BFloat16 (float32
// only, Precision::BF16 training): h is read and y written in bfloat16 -- the float32 values never
// reach memory -- and GELU is applied in both passes instead of being stored in between.
template <class T, class TH = T, class TY = T>
void gelu_grn_forward(const TH* h, const T* gamma, const T* beta, double eps, const Dims& d, TY* y, GrnState& st) {
    constexpr bool kStoreGelu = std::is_same<TY, T>::value;
    const int64_t N = d.N, P = d.P, K = d.K;
    std::vector<double> q(N * K);
    column_sums<double>(N, P, K, q.data(), 1.0, [&](int64_t n, int64_t r0, int64_t r1, double* acc) {
        for (int64_t r = r0; r < r1; ++r) {
            const TH* hr = h + (n * P + r) * K;
            TY* yr = y + (n * P + r) * K;
#pragma omp simd
            for (int64_t k = 0; k < K; ++k) {
                const T a = gelu_math::gelu((T)widen(hr[k]));
                if constexpr (kStoreGelu) yr[k] = a;
                acc[k] += (double)a * (double)a;
            }
        }
    });
    T *G = st.G.data<T>(), *Nx = st.Nx.data<T>(), *s = st.s.data<T>();
    st.denom.resize(N);
    for (int64_t n = 0; n < N; ++n)
        st.denom[n] = grn_math::stats(q.data() + n * K, gamma, K, eps, G + n * K, Nx + n * K, s + n * K);
    parallel_range(d.M(), row_grain(d), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            TY* yr = y + i * K;
            const T* sn = s + (i / P) * K;
            if constexpr (kStoreGelu) {
#pragma omp simd
                for (int64_t k = 0; k < K; ++k) yr[k] = yr[k] * sn[k] + beta[k];
            } else {
                const TH* hr = h + i * K;
#pragma omp simd
                for (int64_t k = 0; k < K; ++k)
                    yr[k] = float_to_bf16(gelu_math::gelu((T)widen(hr[k])) * sn[k] + beta[k]);
            }
        }
    });
}

// GEMM 1, the GRN passes and GEMM 2. TH: how h and y are stored (T, or BFloat16 under
// Precision::BF16 training: GEMM 1 then writes h only in bfloat16, and GEMM 2 reads y as stored).
// y may be h when there is no backward.
template <class T, class TH>
void mlp_forward(const T* u, const T* w1, const T* b1, const T* gamma, const T* beta, const T* w2, const T* b2,
                 const T* residual, double eps, const Dims& d, TH* h, TH* y, T* out, GrnState& st) {
    const int64_t M = d.M(), C = d.C, K = d.K;
    GemmEpilogue<T> e1;
    e1.bias = b1;
    if constexpr (std::is_same<TH, BFloat16>::value) {
        e1.out_bf16 = h;
        e1.ld_out_bf16 = K;
        gemm_stored<T>(false, true, M, K, C, u, C, w1, C, (T*)nullptr, K, e1);
    } else {
        gemm_stored<T>(false, true, M, K, C, u, C, w1, C, h, K, e1);
    }
    gelu_grn_forward<T, TH, TH>(h, gamma, beta, eps, d, y, st);
    GemmEpilogue<T> e2;
    e2.bias = b2;
    e2.residual = residual;
    e2.ld_residual = C;
    gemm_stored<T>(false, true, M, C, K, (const TH*)y, K, w2, K, out, C, e2);
}

// dy [M, K] in, dh [M, K] out in its place; dgamma, dbeta [K] written when given. TH: how h was
// saved (T, or BFloat16 under Precision::BF16).
template <class T, class TH>
void gelu_grn_backward(T* dy, const TH* h, const T* gamma, const GrnState& st, const Dims& d, T* dgamma, T* dbeta) {
    const int64_t N = d.N, P = d.P, K = d.K;
    const T *G = st.G.data<T>(), *Nx = st.Nx.data<T>(), *s = st.s.data<T>();
    std::vector<T> r(N * K);
    grn_math::backward_stats(dy, h, [](TH v) { return gelu_math::gelu((T)widen(v)); }, gamma, G, Nx,
                             st.denom.data(), N, P, K, r.data(), dgamma, dbeta);
    parallel_range(d.M(), row_grain(d), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const TH* hr = h + i * K;
            const T* sn = s + (i / P) * K;
            const T* rn = r.data() + (i / P) * K;
            T* g = dy + i * K;
#pragma omp simd
            for (int64_t k = 0; k < K; ++k) {
                const T hk = (T)widen(hr[k]), a = gelu_math::gelu(hk);
                g[k] = (g[k] * sn[k] + a * rn[k]) * gelu_math::gelu_grad(hk);
            }
        }
    });
}

struct Grads {
    Tensor du, dw1, db1, dgamma, dbeta, dw2, db2;
};

// TU, TH: how u and h, y were saved (T, or BFloat16 under Precision::BF16).
template <class T, class TU, class TH>
void mlp_backward(const T* g, const TU* u, const TH* h, const TH* y, const T* w1, const T* w2, const T* gamma,
                  const GrnState& st, const Dims& d, Grads& r) {
    const int64_t M = d.M(), C = d.C, K = d.K;
    if (r.db2.defined()) sum_rows<T>(g, M, C, r.db2.data<T>());
    if (r.dw2.defined()) gemm_stored<T>(true, false, C, K, M, g, C, y, K, r.dw2.data<T>(), K);
    const bool below = r.du.defined() || r.dw1.defined() || r.db1.defined();
    if (!below && !r.dgamma.defined() && !r.dbeta.defined()) return;
    Tensor dy_t = Tensor::empty({M, K}, dtype_of<T>::value);
    T* dy = dy_t.data<T>();
    gemm<T>(false, false, M, K, C, T(1), g, C, w2, K, T(0), dy, K);
    gelu_grn_backward<T, TH>(dy, h, gamma, st, d, r.dgamma.defined() ? r.dgamma.data<T>() : nullptr,
                         r.dbeta.defined() ? r.dbeta.data<T>() : nullptr);
    if (r.db1.defined()) sum_rows<T>(dy, M, K, r.db1.data<T>());
    if (r.dw1.defined()) gemm_stored<T>(true, false, K, C, M, dy, K, u, C, r.dw1.data<T>(), C);
    if (r.du.defined()) gemm<T>(false, false, M, C, K, T(1), dy, K, w1, C, T(0), r.du.data<T>(), C);
}

void check_vec(const char* what, const Tensor& t, int64_t n, const Tensor& u, bool any_shape) {
    if (!t.defined()) return;
    CNX_CHECK(t.dtype() == u.dtype(), "convnextv2_mlp: ", what, " ", t.str(), " and input ", u.str(),
              " have different dtypes");
    if (any_shape)
        CNX_CHECK(t.numel() == n && t.size(-1) == n, "convnextv2_mlp: ", what, " ", t.str(), " should hold ", n,
                  " values ([", n, "] or [1, 1, 1, ", n, "])");
    else
        CNX_CHECK(t.dim() == 1 && t.size(0) == n, "convnextv2_mlp: ", what, " ", t.str(), " should be [", n, "]");
}

}  // namespace

Tensor convnextv2_mlp(const Tensor& u, const Tensor& w1, const Tensor& b1, const Tensor& gamma, const Tensor& beta,
                      const Tensor& w2, const Tensor& b2, const Tensor& residual, double eps) {
    CNX_CHECK(u.defined() && w1.defined() && w2.defined() && gamma.defined() && beta.defined(),
              "convnextv2_mlp: undefined input, weight or GRN parameter");
    CNX_CHECK(u.dim() == 4, "convnextv2_mlp: input must be NHWC [N, H, W, C], got ", u.str());
    const int64_t C = u.size(3);
    CNX_CHECK(w1.dim() == 2 && w1.size(1) == C, "convnextv2_mlp: w1 ", w1.str(), " should be [K, ", C,
              "] for input ", u.str());
    const int64_t K = w1.size(0);
    CNX_CHECK(w2.dim() == 2 && w2.size(0) == C && w2.size(1) == K, "convnextv2_mlp: w2 ", w2.str(), " should be [",
              C, ", ", K, "] (w1 ", w1.str(), ")");
    CNX_CHECK(w1.dtype() == u.dtype() && w2.dtype() == u.dtype(), "convnextv2_mlp: dtype mismatch, input ",
              u.str(), ", w1 ", w1.str(), ", w2 ", w2.str());
    check_vec("b1", b1, K, u, false);
    check_vec("b2", b2, C, u, false);
    check_vec("GRN gamma", gamma, K, u, true);
    check_vec("GRN beta", beta, K, u, true);
    CNX_CHECK(eps >= 0, "convnextv2_mlp: eps must not be negative, got ", eps);
    if (residual.defined())
        CNX_CHECK(residual.shape() == u.shape() && residual.dtype() == u.dtype(), "convnextv2_mlp: residual ",
                  residual.str(), " should match input ", u.str());
    const Dims d{u.size(0), u.size(1) * u.size(2), C, K};
    const int64_t M = d.M();
    count_macs("convnextv2_mlp", 2 * M * C * K);
    const bool grad = autograd::needs_grad({u, w1, b1, gamma, beta, w2, b2, residual});
    const DType dt = u.dtype();
    Tensor out = Tensor::empty(u.shape(), dt);
    auto st = std::make_shared<GrnState>();
    st->G = Tensor::empty({d.N, K}, dt);
    st->Nx = Tensor::empty({d.N, K}, dt);
    st->s = Tensor::empty({d.N, K}, dt);
    // Under Precision::BF16 training, h and the GRN output y are what the backward keeps, in
    // bfloat16: GEMM 1 writes h only in bfloat16, the GRN passes read it and write y in bfloat16,
    // and GEMM 2 reads that y -- so forward and backward see the same h and y, and no [M, K]
    // float32 temporary is made (as in convnext_mlp, ops/fused.cpp).
    const bool bf16_saved = grad && saves_bf16() && dt == DType::F32;
    // Without a backward the GRN output overwrites h (the passes are element-wise).
    Tensor h = Tensor::empty({M, K}, bf16_saved ? DType::BF16 : dt);
    Tensor y = grad ? Tensor::empty({M, K}, bf16_saved ? DType::BF16 : dt) : h;
    if (bf16_saved && !meta_mode()) {
        mlp_forward<float, BFloat16>(u.data<float>(), w1.data<float>(), data_or_null<float>(b1), gamma.data<float>(),
                                     beta.data<float>(), w2.data<float>(), data_or_null<float>(b2),
                                     data_or_null<float>(residual), eps, d, h.data<BFloat16>(), y.data<BFloat16>(),
                                     out.data<float>(), *st);
    } else {
        CNX_DISPATCH(dt, "convnextv2_mlp", {
            using T = scalar_t;
            mlp_forward<T, T>(u.data<T>(), w1.data<T>(), data_or_null<T>(b1), gamma.data<T>(), beta.data<T>(),
                              w2.data<T>(), data_or_null<T>(b2), data_or_null<T>(residual), eps, d, h.data<T>(),
                              y.data<T>(), out.data<T>(), *st);
        });
    }
    if (!grad) {
        autograd::profile_forward("convnextv2_mlp");
        return out;
    }
    auto need = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
    const bool nu = need(u), nw1 = need(w1), nb1 = need(b1), ng = need(gamma), nbeta = need(beta), nw2 = need(w2),
               nb2 = need(b2), nr = need(residual);
    // Under Precision::BF16, u, h and the GRN output y are kept in bfloat16 (ops/saved.h; h and y
    // were written so by the forward above); the GRN statistics stay float32.
    const SavedTensor su = save_for_backward(u);
    const SavedTensor sh = bf16_saved ? adopt_for_backward(h) : save_for_backward(h);
    const SavedTensor sy = bf16_saved ? adopt_for_backward(y) : save_for_backward(y);
    Tensor w1d = w1.detach(), w2d = w2.detach(), gd = gamma.detach();
    const Shape ushape = u.shape(), gshape = gamma.shape(), bshape = beta.shape();
    autograd::record("convnextv2_mlp", out, {u, w1, b1, gamma, beta, w2, b2, residual},
                     [=](const Tensor& g) -> std::vector<Tensor> {
                         const DType gt = g.dtype();
                         Grads r;
                         if (nu) r.du = Tensor::empty(ushape, gt);
                         if (nw1) r.dw1 = Tensor::empty({K, C}, gt);
                         if (nb1) r.db1 = Tensor::empty({K}, gt);
                         if (ng) r.dgamma = Tensor::empty(gshape, gt);
                         if (nbeta) r.dbeta = Tensor::empty(bshape, gt);
                         if (nw2) r.dw2 = Tensor::empty({C, K}, gt);
                         if (nb2) r.db2 = Tensor::empty({C}, gt);
                         if (sh.is_bf16()) {
                             const BFloat16 *hp = sh.stored().data<BFloat16>(), *yp = sy.stored().data<BFloat16>();
                             if (su.is_bf16())
                                 mlp_backward<float>(g.data<float>(), su.stored().data<BFloat16>(), hp, yp,
                                                     w1d.data<float>(), w2d.data<float>(), gd.data<float>(), *st, d, r);
                             else
                                 mlp_backward<float>(g.data<float>(), su.stored().data<float>(), hp, yp,
                                                     w1d.data<float>(), w2d.data<float>(), gd.data<float>(), *st, d, r);
                         } else {
                             CNX_DISPATCH(gt, "convnextv2_mlp backward", {
                                 mlp_backward<scalar_t>(g.data<scalar_t>(), su.stored().data<scalar_t>(),
                                                        sh.stored().data<scalar_t>(), sy.stored().data<scalar_t>(),
                                                        w1d.data<scalar_t>(), w2d.data<scalar_t>(), gd.data<scalar_t>(),
                                                        *st, d, r);
                             });
                         }
                         return {r.du, r.dw1, r.db1, r.dgamma, r.dbeta, r.dw2, r.db2, nr ? g : Tensor()};
                     });
    return out;
}

}  // namespace cnx
