// convnext_mlp: pwconv1 -> GELU -> pwconv2 -> layer scale -> residual in two GEMMs forward and four
// backward, with the element-wise steps in the GEMMs' epilogues and packing (see ops/gemm.h).
//
// Backward, with a = GELU(h), y = a·w2^T + b2, out = residual + gamma*y and g = dout [M, C]:
//   G      = g^T · a                    [C, H]  (one TN GEMM; GELU applied to h while packing)
//   dw2    = gamma[j] G[j,k]            db2 = gamma * colsum(g)
//   dgamma = sum_i g[i,j] y[i,j] = sum_k w2[j,k] G[j,k] + b2[j] colsum(g)[j]   (y never stored)
//   dh     = (g · diag(gamma) w2) * GELU'(h)      (GELU' in the GEMM's output pass)
//   dw1    = dh^T · u,  db1 = colsum(dh),  du = dh · w1,  dresidual = g
#include "ops/fused.h"

#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/column_sum.h"
#include "ops/gemm.h"
#include "ops/saved.h"

namespace cnx {
namespace {


struct MlpDims {
    int64_t M, C, H;
};

// h = u·w1^T + b1; out = residual + gamma * (GELU(h)·w2^T + b2), GELU applied as the second GEMM
// reads h (GELU(h) is never stored). TH = BFloat16 (float32 only, Precision::BF16): h is written
// only in bfloat16 and the second GEMM reads that, so forward and backward see the same h.
template <class T, class TH>
void mlp_forward(const T* u, const T* w1, const T* b1, const T* w2, const T* b2, const T* gamma, const T* residual,
                 TH* h, T* out, const MlpDims& d) {
    GemmEpilogue<T> e1;
    e1.bias = b1;
    if constexpr (std::is_same<TH, BFloat16>::value) {
        e1.out_bf16 = h;
        e1.ld_out_bf16 = d.H;
        gemm_stored<T>(false, true, d.M, d.H, d.C, u, d.C, w1, d.C, (T*)nullptr, d.H, e1);
    } else {
        gemm_stored<T>(false, true, d.M, d.H, d.C, u, d.C, w1, d.C, h, d.H, e1);
    }
    GemmEpilogue<T> e2;
    e2.bias = b2;
    e2.col_scale = gamma;
    e2.residual = residual;
    e2.ld_residual = d.C;
    gemm_stored<T>(false, true, d.M, d.C, d.H, (const TH*)h, d.H, w2, d.H, out, d.C, e2, /*gelu_a=*/true);
}

struct MlpGrads {
    Tensor du, dw1, db1, dw2, db2, dgamma;
};

// TU, TH: how u and h were saved (T, or BFloat16 under Precision::BF16).
template <class T, class TU, class TH>
void mlp_backward(const T* g, const TU* u, const TH* h, const T* w1, const T* w2, const T* b2, const T* gamma,
                  MlpGrads& r, const MlpDims& d) {
    const int64_t M = d.M, C = d.C, H = d.H;
    const DType dt = dtype_of<T>::value;
    T *dw2 = data_or_null<T>(r.dw2), *db2 = data_or_null<T>(r.db2), *dgamma = data_or_null<T>(r.dgamma);
    std::vector<T> cs;
    if (db2 || dgamma) {
        cs.resize(C);
        sum_rows<T>(g, M, C, cs.data());
    }
    if (dw2 || dgamma) {
        // G lands in dw2 itself when that is wanted (scaled by gamma in place below).
        Tensor Gt = dw2 ? r.dw2 : Tensor::empty({C, H}, dt);
        T* G = Gt.data<T>();
        gemm_stored<T>(true, false, C, H, M, g, C, h, H, G, H, GemmEpilogue<T>{}, false, /*gelu_b=*/true);
        for (int64_t j = 0; j < C; ++j) {
            const T* Gj = G + j * H;
            if (dgamma) {
                const T* wj = w2 + j * H;
                T s = 0;
#pragma omp simd reduction(+ : s)
                for (int64_t k = 0; k < H; ++k) s += wj[k] * Gj[k];
                dgamma[j] = s + (b2 ? b2[j] * cs[j] : T(0));
            }
            if (dw2 && gamma)
                for (int64_t k = 0; k < H; ++k) dw2[j * H + k] *= gamma[j];  // Gj is this row of dw2
        }
    }
    if (db2)
        for (int64_t j = 0; j < C; ++j) db2[j] = gamma ? gamma[j] * cs[j] : cs[j];
    if (!r.du.defined() && !r.dw1.defined() && !r.db1.defined()) return;

    const T* w2s = w2;  // diag(gamma) w2
    std::vector<T> w2g;
    if (gamma) {
        w2g.resize(C * H);
        for (int64_t j = 0; j < C; ++j)
            for (int64_t k = 0; k < H; ++k) w2g[j * H + k] = gamma[j] * w2[j * H + k];
        w2s = w2g.data();
    }
    GemmEpilogue<T> e;
    e.act = GemmAct::GeluGrad;
    e.ld_act_in = H;
    if constexpr (std::is_same<TH, BFloat16>::value)
        e.act_in_bf16 = h;
    else
        e.act_in = h;
    // dh [M, 4C] is the largest temporary of the backward. Where a 16-bit kernel runs (bf16 or
    // fp16), the two GEMMs that read it round it anyway, so it is written in bfloat16 directly
    // (half the bytes; db1 then sums the rounded values, as a bf16 autocast backward does); with
    // the float32 kernels it stays float32 and the result is that of float32 GEMMs.
    auto rest = [&](const auto* dh) {
        if (r.db1.defined())
            column_sums<T>(1, M, H, r.db1.data<T>(), 1.0, [dh, H](int64_t, int64_t r0, int64_t r1, double* acc) {
                add_rows(acc, dh + r0 * H, r1 - r0, H, H);
            });
        if (r.dw1.defined()) gemm_stored<T>(true, false, H, C, M, dh, H, u, C, r.dw1.data<T>(), C, GemmEpilogue<T>{});
        if (r.du.defined()) gemm_stored<T>(false, false, M, C, H, dh, H, w1, C, r.du.data<T>(), C, GemmEpilogue<T>{});
    };
    if constexpr (std::is_same<T, float>::value) {
        if (std::is_same<TH, BFloat16>::value && gemm_rounds_operands()) {
            Tensor dh_t = Tensor::empty({M, H}, DType::BF16);
            e.out_bf16 = dh_t.data<BFloat16>();
            e.ld_out_bf16 = H;
            gemm_stored<T>(false, false, M, H, C, g, C, w2s, H, (T*)nullptr, H, e);
            return rest((const BFloat16*)dh_t.data<BFloat16>());
        }
    }
    Tensor dh_t = Tensor::empty({M, H}, dt);
    T* dh = dh_t.data<T>();
    gemm_stored<T>(false, false, M, H, C, g, C, w2s, H, dh, H, e);
    rest((const T*)dh);
}

void check_vec(const char* what, const Tensor& t, int64_t n, const Tensor& u) {
    if (!t.defined()) return;
    CNX_CHECK(t.dtype() == u.dtype(), "convnext_mlp: ", what, " ", t.str(), " and input ", u.str(),
              " have different dtypes");
    CNX_CHECK(t.dim() == 1 && t.size(0) == n, "convnext_mlp: ", what, " ", t.str(), " should be [", n, "]");
}

}  // namespace

Tensor convnext_mlp(const Tensor& u, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                    const Tensor& gamma, const Tensor& residual) {
    CNX_CHECK(u.defined() && w1.defined() && w2.defined(), "convnext_mlp: undefined input or weight");
    CNX_CHECK(u.dim() >= 1, "convnext_mlp: input must be [..., C], got ", u.str());
    const int64_t C = u.size(-1);
    CNX_CHECK(w1.dim() == 2 && w1.size(1) == C, "convnext_mlp: w1 ", w1.str(), " should be [H, ", C, "] for input ",
              u.str());
    const int64_t H = w1.size(0);
    CNX_CHECK(w2.dim() == 2 && w2.size(0) == C && w2.size(1) == H, "convnext_mlp: w2 ", w2.str(), " should be [", C,
              ", ", H, "] (w1 ", w1.str(), ")");
    CNX_CHECK(w1.dtype() == u.dtype() && w2.dtype() == u.dtype(), "convnext_mlp: dtype mismatch, input ", u.str(),
              ", w1 ", w1.str(), ", w2 ", w2.str());
    check_vec("b1", b1, H, u);
    check_vec("b2", b2, C, u);
    check_vec("gamma", gamma, C, u);
    if (residual.defined())
        CNX_CHECK(residual.shape() == u.shape() && residual.dtype() == u.dtype(), "convnext_mlp: residual ",
                  residual.str(), " should match input ", u.str());
    const MlpDims d{C ? u.numel() / C : 0, C, H};
    count_macs("convnext_mlp", 2 * d.M * C * H);
    const bool grad = autograd::needs_grad({u, w1, b1, w2, b2, gamma, residual});
    // Under Precision::BF16 the hidden activation h (the pre-activation, saved for backward) exists
    // only in bfloat16 (see mlp_forward).
    const bool h_bf16 = saves_bf16() && u.dtype() == DType::F32;
    Tensor out = Tensor::empty(u.shape(), u.dtype());
    Tensor h = Tensor::empty({d.M, H}, h_bf16 ? DType::BF16 : u.dtype());
    if (h_bf16 && !meta_mode()) {
        mlp_forward<float, BFloat16>(u.data<float>(), w1.data<float>(), data_or_null<float>(b1), w2.data<float>(),
                                     data_or_null<float>(b2), data_or_null<float>(gamma),
                                     data_or_null<float>(residual), h.data<BFloat16>(), out.data<float>(), d);
    } else {
        CNX_DISPATCH(u.dtype(), "convnext_mlp", {
            mlp_forward<scalar_t, scalar_t>(u.data<scalar_t>(), w1.data<scalar_t>(), data_or_null<scalar_t>(b1),
                                            w2.data<scalar_t>(), data_or_null<scalar_t>(b2),
                                            data_or_null<scalar_t>(gamma), data_or_null<scalar_t>(residual),
                                            h.data<scalar_t>(), out.data<scalar_t>(), d);
        });
    }
    if (!grad) {
        autograd::profile_forward("convnext_mlp");
        return out;
    }
    auto need = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
    const bool nu = need(u), nw1 = need(w1), nb1 = need(b1), nw2 = need(w2), nb2 = need(b2), ng = need(gamma),
               nr = need(residual);
    const SavedTensor su = save_for_backward(u), sh = adopt_for_backward(h);
    Tensor w1d = w1.detach(), w2d = w2.detach();
    Tensor b2d = b2.defined() ? b2.detach() : Tensor(), gd = gamma.defined() ? gamma.detach() : Tensor();
    const Shape ushape = u.shape();
    autograd::record("convnext_mlp", out, {u, w1, b1, w2, b2, gamma, residual},
                     [=](const Tensor& g) -> std::vector<Tensor> {
                         const DType dt = g.dtype();
                         MlpGrads r;
                         if (nu) r.du = Tensor::empty(ushape, dt);
                         if (nw1) r.dw1 = Tensor::empty({H, C}, dt);
                         if (nb1) r.db1 = Tensor::empty({H}, dt);
                         if (nw2) r.dw2 = Tensor::empty({C, H}, dt);
                         if (nb2) r.db2 = Tensor::empty({C}, dt);
                         if (ng) r.dgamma = Tensor::empty({C}, dt);
                         if (meta_mode()) return {r.du, r.dw1, r.db1, r.dw2, r.db2, r.dgamma, nr ? g : Tensor()};
                         if (sh.is_bf16()) {
                             const float* gp = g.data<float>();
                             const BFloat16* hp = sh.stored().data<BFloat16>();
                             if (su.is_bf16())
                                 mlp_backward<float>(gp, su.stored().data<BFloat16>(), hp, w1d.data<float>(),
                                                     w2d.data<float>(), data_or_null<float>(b2d),
                                                     data_or_null<float>(gd), r, d);
                             else
                                 mlp_backward<float>(gp, su.stored().data<float>(), hp, w1d.data<float>(),
                                                     w2d.data<float>(), data_or_null<float>(b2d),
                                                     data_or_null<float>(gd), r, d);
                         } else {
                             CNX_DISPATCH(dt, "convnext_mlp backward", {
                                 mlp_backward<scalar_t>(g.data<scalar_t>(), su.stored().data<scalar_t>(),
                                                        sh.stored().data<scalar_t>(), w1d.data<scalar_t>(),
                                                        w2d.data<scalar_t>(), data_or_null<scalar_t>(b2d),
                                                        data_or_null<scalar_t>(gd), r, d);
                             });
                         }
                         return {r.du, r.dw1, r.db1, r.dw2, r.db2, r.dgamma, nr ? g : Tensor()};
                     });
    return out;
}

}  // namespace cnx
