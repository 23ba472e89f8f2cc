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

#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/gemm.h"

namespace cnx {
namespace {

template <class T>
const T* ptr(const Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* mut(Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}

struct MlpDims {
    int64_t M, C, H;
};

// h = u·w1^T + b1; out = residual + gamma * (GELU(h)·w2^T + b2), GELU applied as the second GEMM
// reads h (GELU(h) is never stored).
template <class T>
void mlp_forward(const T* u, const T* w1, const T* b1, const T* w2, const T* b2, const T* gamma, const T* residual,
                 T* h, T* out, const MlpDims& d) {
    GemmEpilogue<T> e1;
    e1.bias = b1;
    gemm_ex<T>(false, true, d.M, d.H, d.C, T(1), u, d.C, w1, d.C, T(0), h, d.H, e1);
    GemmEpilogue<T> e2;
    e2.bias = b2;
    e2.col_scale = gamma;
    e2.residual = residual;
    e2.ld_residual = d.C;
    gemm_ex<T>(false, true, d.M, d.C, d.H, T(1), h, d.H, w2, d.H, T(0), out, d.C, e2, /*gelu_a=*/true);
}

struct MlpGrads {
    Tensor du, dw1, db1, dw2, db2, dgamma;
};

template <class T>
void mlp_backward(const T* g, const T* u, const T* h, const T* w1, const T* w2, const T* b2, const T* gamma,
                  MlpGrads& r, const MlpDims& d) {
    const int64_t M = d.M, C = d.C, H = d.H;
    const DType dt = dtype_of<T>::value;
    T *dw2 = mut<T>(r.dw2), *db2 = mut<T>(r.db2), *dgamma = mut<T>(r.dgamma);
    std::vector<T> cs;
    if (db2 || dgamma) {
        cs.resize(C);
        sum_rows<T>(g, M, C, cs.data());
    }
    if (dw2 || dgamma) {
        Tensor Gt = gamma || !dw2 ? Tensor::empty({C, H}, dt) : r.dw2;
        T* G = Gt.data<T>();
        gemm_ex<T>(true, false, C, H, M, T(1), g, C, h, H, T(0), G, H, GemmEpilogue<T>{}, false, /*gelu_b=*/true);
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
                for (int64_t k = 0; k < H; ++k) dw2[j * H + k] = gamma[j] * Gj[k];
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
    Tensor dh_t = Tensor::empty({M, H}, dt);
    T* dh = dh_t.data<T>();
    GemmEpilogue<T> e;
    e.act = GemmAct::GeluGrad;
    e.act_in = h;
    e.ld_act_in = H;
    gemm_ex<T>(false, false, M, H, C, T(1), g, C, w2s, H, T(0), dh, H, e);
    if (r.db1.defined()) sum_rows<T>(dh, M, H, r.db1.data<T>());
    if (r.dw1.defined()) gemm<T>(true, false, H, C, M, T(1), dh, H, u, C, T(0), r.dw1.data<T>(), C);
    if (r.du.defined()) gemm<T>(false, false, M, C, H, T(1), dh, H, w1, C, T(0), r.du.data<T>(), C);
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
    Tensor out = Tensor::empty(u.shape(), u.dtype());
    Tensor h = Tensor::empty({d.M, H}, u.dtype());  // the pre-activation: saved for backward
    CNX_DISPATCH(u.dtype(), "convnext_mlp", {
        mlp_forward<scalar_t>(ptr<scalar_t>(u), ptr<scalar_t>(w1), ptr<scalar_t>(b1), ptr<scalar_t>(w2),
                              ptr<scalar_t>(b2), ptr<scalar_t>(gamma), ptr<scalar_t>(residual), h.data<scalar_t>(),
                              out.data<scalar_t>(), d);
    });
    if (!grad) return out;
    auto need = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
    const bool nu = need(u), nw1 = need(w1), nb1 = need(b1), nw2 = need(w2), nb2 = need(b2), ng = need(gamma),
               nr = need(residual);
    Tensor ud = u.detach(), w1d = w1.detach(), w2d = w2.detach();
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
                         CNX_DISPATCH(dt, "convnext_mlp backward", {
                             mlp_backward<scalar_t>(g.data<scalar_t>(), ptr<scalar_t>(ud), ptr<scalar_t>(h),
                                                    ptr<scalar_t>(w1d), ptr<scalar_t>(w2d), ptr<scalar_t>(b2d),
                                                    ptr<scalar_t>(gd), r, d);
                         });
                         return {r.du, r.dw1, r.db1, r.dw2, r.db2, r.dgamma, nr ? g : Tensor()};
                     });
    return out;
}

}  // namespace cnx
