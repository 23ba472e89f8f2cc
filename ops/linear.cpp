// matmul and linear: one GEMM forward, two backward (dA/dx and dB/dW), leading dims of the
// activation flattened into the GEMM's M so a [N,H,W,C] activation is one [N·H·W, C] matrix.
// GEMMs go through ops/gemm.h (AVX-512 kernels for float where the CPU has them, else OpenBLAS).
#include "ops/linear.h"

#include <type_traits>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/gemm.h"
#include "ops/saved.h"

namespace cnx {
namespace {

void check_same_dtype(const char* op, const Tensor& x, const Tensor& w, const char* wname) {
    CNX_CHECK(x.dtype() == w.dtype(), op, ": dtype mismatch, input ", x.str(), " and ", wname, " ", w.str());
}

// Product of every dimension but the last: the GEMM's M.
int64_t leading_rows(const Shape& s) {
    int64_t m = 1;
    for (size_t d = 0; d + 1 < s.size(); ++d) m *= s[d];
    return m;
}

Shape with_last(const Shape& s, int64_t last) {
    Shape out = s;
    out.back() = last;
    return out;
}

// ---- kernels ------------------------------------------------------------------------------

// y[M,N] = a[M,K] · b[K,N]
template <class T>
void matmul_forward(T* y, const T* a, const T* b, int64_t M, int64_t K, int64_t N) {
    gemm<T>(false, false, M, N, K, T(1), a, K, b, N, T(0), y, N);
}

// da[M,K] = g[M,N] · b[K,N]^T ; db[K,N] = a[M,K]^T · g[M,N]   (either may be null)
template <class T>
void matmul_backward(T* da, T* db, const T* g, const T* a, const T* b, int64_t M, int64_t K, int64_t N) {
    if (da) gemm<T>(false, true, M, K, N, T(1), g, N, b, N, T(0), da, K);
    if (db) gemm<T>(true, false, K, N, M, T(1), a, K, g, N, T(0), db, N);
}

// y[M,out] = x[M,in] · w[out,in]^T + bias[out]   (bias added in the GEMM's output pass)
template <class T>
void linear_forward(T* y, const T* x, const T* w, const T* bias, int64_t M, int64_t in, int64_t out) {
    GemmEpilogue<T> ep;
    ep.bias = bias;
    gemm_ex<T>(false, true, M, out, in, T(1), x, in, w, in, T(0), y, out, ep);
}

// dx[M,in] = g[M,out] · w[out,in] ; dw[out,in] = g^T · x ; dbias[out] = column sums of g.
// TX: how x was saved (T, or BFloat16, which the GEMM reads as it is).
template <class T, class TX>
void linear_backward(T* dx, T* dw, T* dbias, const T* g, const TX* x, const T* w, int64_t M, int64_t in,
                     int64_t out) {
    if (dx) gemm<T>(false, false, M, in, out, T(1), g, out, w, in, T(0), dx, in);
    if (dw) {
        if constexpr (std::is_same<TX, T>::value)
            gemm<T>(true, false, out, in, M, T(1), g, out, x, in, T(0), dw, in);
        else
            gemm_mixed<T, TX>(true, false, out, in, M, 1.0f, g, out, x, in, 0.0f, dw, in, GemmEpilogue<float>{});
    }
    if (dbias) sum_rows<T>(g, M, out, dbias);
}

}  // namespace

// ---- matmul -------------------------------------------------------------------------------

Tensor matmul(const Tensor& a, const Tensor& b) {
    CNX_CHECK(a.defined() && b.defined(), "matmul: undefined input");
    CNX_CHECK(a.dim() >= 1, "matmul: a must have at least one dimension, got ", a.str());
    CNX_CHECK(b.dim() == 2, "matmul: b must be a matrix [K, N], got ", b.str());
    check_same_dtype("matmul", a, b, "b");
    const int64_t K = a.size(-1), N = b.size(1);
    CNX_CHECK(b.size(0) == K, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
              " cannot be multiplied (", K, " != ", b.size(0), ")");
    const int64_t M = leading_rows(a.shape());
    count_macs("matmul", M * K * N);
    Tensor y = Tensor::empty(with_last(a.shape(), N), a.dtype());
    CNX_DISPATCH(a.dtype(), "matmul",
                 { matmul_forward<scalar_t>(y.data<scalar_t>(), a.data<scalar_t>(), b.data<scalar_t>(), M, K, N); });
    if (autograd::records("matmul", {a, b})) {
        const bool need_a = a.requires_grad(), need_b = b.requires_grad();
        // a is only needed for db, b only for da
        const SavedTensor ssa = need_b ? save_for_backward(a) : SavedTensor();
        const SavedTensor ssb = need_a ? save_for_backward(b) : SavedTensor();
        autograd::record("matmul", y, {a, b},
                         [ssa, ssb, need_a, need_b, M, K, N](const Tensor& g) -> std::vector<Tensor> {
                             const Tensor sa = ssa.get(), sb = ssb.get();
                             Tensor da, db;
                             if (need_a) da = Tensor::empty(with_last(g.shape(), K), g.dtype());
                             if (need_b) db = Tensor::empty({K, N}, g.dtype());
                             CNX_DISPATCH(g.dtype(), "matmul backward", {
                                 matmul_backward<scalar_t>(need_a ? da.data<scalar_t>() : nullptr,
                                                           need_b ? db.data<scalar_t>() : nullptr, g.data<scalar_t>(),
                                                           need_b ? sa.data<scalar_t>() : nullptr,
                                                           need_a ? sb.data<scalar_t>() : nullptr, M, K, N);
                             });
                             return {da, db};
                         });
    }
    return y;
}

// ---- linear -------------------------------------------------------------------------------

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    CNX_CHECK(x.defined() && weight.defined(), "linear: undefined input or weight");
    CNX_CHECK(x.dim() >= 1, "linear: input must have at least one dimension [..., in], got ", x.str());
    CNX_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", weight.str());
    check_same_dtype("linear", x, weight, "weight");
    const int64_t in = x.size(-1), out = weight.size(0);
    CNX_CHECK(weight.size(1) == in, "linear: input ", shape_str(x.shape()), " has ", in, " features but weight ",
              shape_str(weight.shape()), " expects ", weight.size(1));
    if (bias.defined()) {
        check_same_dtype("linear", x, bias, "bias");
        CNX_CHECK(bias.dim() == 1 && bias.size(0) == out, "linear: bias ", shape_str(bias.shape()),
                  " does not match weight ", shape_str(weight.shape()), " (expected [", out, "])");
    }
    const int64_t M = leading_rows(x.shape());
    count_macs("linear", M * in * out);
    Tensor y = Tensor::empty(with_last(x.shape(), out), x.dtype());
    CNX_DISPATCH(x.dtype(), "linear", {
        linear_forward<scalar_t>(y.data<scalar_t>(), x.data<scalar_t>(), weight.data<scalar_t>(),
                                 bias.defined() ? bias.data<scalar_t>() : nullptr, M, in, out);
    });
    if (autograd::records("linear", {x, weight, bias})) {
        const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
        const bool need_b = bias.defined() && bias.requires_grad();
        const SavedTensor sx = need_w ? save_for_backward(x) : SavedTensor();  // x only for dW
        Tensor sw = need_x ? weight.detach() : Tensor();  // W only for dx
        Shape xshape = x.shape();
        autograd::record("linear", y, {x, weight, bias},
                         [sx, sw, need_x, need_w, need_b, xshape, M, in, out](const Tensor& g) -> std::vector<Tensor> {
                             Tensor dx, dw, db;
                             if (need_x) dx = Tensor::empty(xshape, g.dtype());
                             if (need_w) dw = Tensor::empty({out, in}, g.dtype());
                             if (need_b) db = Tensor::empty({out}, g.dtype());
                             if (sx.is_bf16() && !meta_mode()) {
                                 linear_backward<float>(need_x ? dx.data<float>() : nullptr, dw.data<float>(),
                                                        need_b ? db.data<float>() : nullptr, g.data<float>(),
                                                        sx.stored().data<BFloat16>(),
                                                        need_x ? sw.data<float>() : nullptr, M, in, out);
                                 return {dx, dw, db};
                             }
                             CNX_DISPATCH(g.dtype(), "linear backward", {
                                 linear_backward<scalar_t>(need_x ? dx.data<scalar_t>() : nullptr,
                                                           need_w ? dw.data<scalar_t>() : nullptr,
                                                           need_b ? db.data<scalar_t>() : nullptr, g.data<scalar_t>(),
                                                           need_w ? sx.stored().data<scalar_t>() : nullptr,
                                                           need_x ? sw.data<scalar_t>() : nullptr, M, in, out);
                             });
                             return {dx, dw, db};
                         });
    }
    return y;
}

}  // namespace cnx
