// Elementwise arithmetic and maximum/minimum with NumPy broadcasting, scalar forms on either
// side, and the per-channel layer scale. Forward kernels walk a broadcast plan (output dims
// collapsed as far as the operands' strides allow), so "same shape" and "[..., C] op [C]" both end
// up as long contiguous inner loops without dedicated code. Backward reduces each gradient to its
// input's shape with sum_to_size().
#include "ops/elementwise.h"

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/column_sum.h"
#include "ops/parallel.h"
#include "ops/reduce.h"
#include "ops/saved.h"

namespace cnx {
namespace {

// Output dims after dropping size-1 dims and merging neighbours that are contiguous in both
// operands. Strides are in elements; 0 means the operand is broadcast along that dim.
struct BroadcastPlan {
    Shape out_shape;
    std::vector<int64_t> sizes, sa, sb;
};

bool broadcast_shape(const Shape& a, const Shape& b, Shape& out) {
    size_t r = std::max(a.size(), b.size());
    out.assign(r, 1);
    for (size_t i = 0; i < r; ++i) {
        int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
        int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
        if (da != db && da != 1 && db != 1) return false;
        out[i] = da == 1 ? db : da;
    }
    return true;
}

// Contiguous strides of `s` left-padded to rank r, zeroed where s is broadcast to `out`.
std::vector<int64_t> broadcast_strides(const Shape& s, const Shape& out) {
    size_t r = out.size(), pad = r - s.size();
    std::vector<int64_t> st(r, 0);
    int64_t acc = 1;
    for (size_t i = r; i-- > pad;) {
        int64_t d = s[i - pad];
        st[i] = (d == 1) ? 0 : acc;
        acc *= d;
    }
    return st;
}

BroadcastPlan make_plan(const char* op, const Tensor& a, const Tensor& b) {
    BroadcastPlan p;
    CNX_CHECK(broadcast_shape(a.shape(), b.shape(), p.out_shape), op, ": shapes ", shape_str(a.shape()), " and ",
              shape_str(b.shape()), " do not broadcast");
    auto sa = broadcast_strides(a.shape(), p.out_shape), sb = broadcast_strides(b.shape(), p.out_shape);
    for (size_t i = 0; i < p.out_shape.size(); ++i) {
        int64_t d = p.out_shape[i];
        if (d == 1) continue;
        if (!p.sizes.empty()) {
            int64_t& last = p.sizes.back();
            // Merge dim i into the previous one when stepping the previous dim by one equals
            // stepping dim i across its whole extent, for both operands.
            if (p.sa.back() == sa[i] * d && p.sb.back() == sb[i] * d) {
                last *= d;
                p.sa.back() = sa[i];
                p.sb.back() = sb[i];
                continue;
            }
        }
        p.sizes.push_back(d);
        p.sa.push_back(sa[i]);
        p.sb.push_back(sb[i]);
    }
    return p;
}

template <int IA, int IB, class T, class F>
inline void inner_loop(T* o, const T* a, const T* b, int64_t n, F f) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[IA ? i : 0], b[IB ? i : 0]);
}

template <class T, class F>
inline void inner_dispatch(T* o, const T* a, const T* b, int64_t n, int64_t ia, int64_t ib, F f) {
    if (ia && ib)
        inner_loop<1, 1>(o, a, b, n, f);
    else if (ia)
        inner_loop<1, 0>(o, a, b, n, f);
    else if (ib)
        inner_loop<0, 1>(o, a, b, n, f);
    else
        inner_loop<0, 0>(o, a, b, n, f);
}

// out[i] = f(a[.], b[.]) over the broadcast plan. The innermost merged dim has operand strides
// 0 or 1 (all later dims were size 1), so the inner loop is contiguous or a splat.
template <class T, class F>
void binary_kernel(T* out, const T* a, const T* b, const BroadcastPlan& p, F f) {
    const int r = (int)p.sizes.size();
    if (r == 0) {  // every dim is 1
        out[0] = f(a[0], b[0]);
        return;
    }
    const int64_t inner = p.sizes[r - 1], ia = p.sa[r - 1], ib = p.sb[r - 1];
    int64_t rows = 1;
    for (int k = 0; k < r - 1; ++k) rows *= p.sizes[k];
    if (rows == 1) {
        const int64_t block = 4096;
        const int64_t nblocks = (inner + block - 1) / block;
        parallel_range(nblocks, inner >= kParallelMin ? 1 : nblocks, [&](int64_t j0, int64_t j1) {
            for (int64_t j = j0; j < j1; ++j) {
                int64_t s = j * block, n = std::min(block, inner - s);
                inner_dispatch(out + s, a + s * ia, b + s * ib, n, ia, ib, f);
            }
        });
        return;
    }
    parallel_range(rows, rows * inner >= kParallelMin ? 1 : rows, [&](int64_t row0, int64_t row1) {
        for (int64_t row = row0; row < row1; ++row) {
            int64_t oa = 0, ob = 0, rem = row;
            for (int k = r - 2; k >= 0; --k) {
                int64_t idx = rem % p.sizes[k];
                rem /= p.sizes[k];
                oa += idx * p.sa[k];
                ob += idx * p.sb[k];
            }
            inner_dispatch(out + row * inner, a + oa, b + ob, inner, ia, ib, f);
        }
    });
}

enum class BinOp { Add, Sub, Mul, Div, Maximum, Minimum };

void check_dtypes(const char* op, const Tensor& a, const Tensor& b) {
    CNX_CHECK(a.defined() && b.defined(), op, ": undefined input");
    CNX_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", a.str(), " and ", b.str());
}

// out = f(a, b) over the broadcast plan of a and b, no autograd. f is generic over float/double.
template <class F>
Tensor broadcast_nograd(const char* name, const Tensor& a, const Tensor& b, F f) {
    check_dtypes(name, a, b);
    BroadcastPlan p = make_plan(name, a, b);
    Tensor out = Tensor::empty(p.out_shape, a.dtype());
    if (out.numel() == 0) return out;
    CNX_DISPATCH(a.dtype(), name,
                 { binary_kernel<scalar_t>(out.data<scalar_t>(), a.data<scalar_t>(), b.data<scalar_t>(), p, f); });
    return out;
}

// maximum/minimum propagate NaN from either side, as PyTorch does.
Tensor binary_nograd(const char* name, BinOp op, const Tensor& a, const Tensor& b) {
    switch (op) {
        case BinOp::Add: return broadcast_nograd(name, a, b, [](auto x, auto y) { return x + y; });
        case BinOp::Sub: return broadcast_nograd(name, a, b, [](auto x, auto y) { return x - y; });
        case BinOp::Mul: return broadcast_nograd(name, a, b, [](auto x, auto y) { return x * y; });
        case BinOp::Div: return broadcast_nograd(name, a, b, [](auto x, auto y) { return x / y; });
        case BinOp::Maximum:
            return broadcast_nograd(name, a, b, [](auto x, auto y) { return x > y || x != x ? x : y; });
        case BinOp::Minimum:
            return broadcast_nograd(name, a, b, [](auto x, auto y) { return x < y || x != x ? x : y; });
    }
    fail(name, ": unknown op");
}

// The share of maximum's (or minimum's) gradient that goes to a (to_a) or to b, at every output
// element: 1 to the winner, 0 to the loser, 1/2 each on ties (as PyTorch splits it); a NaN on
// either side sends the whole gradient to both, as in PyTorch.
Tensor extreme_share(const char* name, bool to_a, bool is_max, const Tensor& a, const Tensor& b) {
    auto share = [to_a, is_max](auto x, auto y) {
        using T = decltype(x);
        if (x == y) return T(0.5);
        const bool a_loses = is_max ? x < y : x > y, b_loses = is_max ? x > y : x < y;
        return (to_a ? a_loses : b_loses) ? T(0) : T(1);
    };
    return broadcast_nograd(name, a, b, share);
}

// out = x * alpha + beta, elementwise (scalar add, scalar mul, neg and their backward).
template <class T>
void affine_kernel(T* out, const T* x, T alpha, T beta, int64_t n) {
    parallel_range(n, n >= kParallelMin ? 4096 : n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) out[i] = x[i] * alpha + beta;
    });
}

Tensor affine_nograd(const Tensor& x, double alpha, double beta) {
    Tensor out = empty_like(x);
    CNX_DISPATCH(x.dtype(), "affine", {
        affine_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), (scalar_t)alpha, (scalar_t)beta, x.numel());
    });
    return out;
}

Tensor binary(const char* name, BinOp op, const Tensor& a, const Tensor& b) {
    Tensor out = binary_nograd(name, op, a, b);
    if (!autograd::records(name, {a, b})) return out;
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    Shape sa = a.shape(), sb = b.shape();
    BackwardFn fn;
    switch (op) {
        case BinOp::Add:
        case BinOp::Sub: {
            const double sign_b = op == BinOp::Sub ? -1.0 : 1.0;
            fn = [sa, sb, need_a, need_b, sign_b](const Tensor& g) -> std::vector<Tensor> {
                Tensor ga = need_a ? sum_to_size(g, sa) : Tensor(), gb;
                if (need_b) gb = sign_b == 1.0 ? sum_to_size(g, sb) : affine_nograd(sum_to_size(g, sb), sign_b, 0.0);
                return {ga, gb};
            };
            break;
        }
        case BinOp::Mul: {
            // Save only what each gradient needs.
            const SavedTensor ssa_b = need_a ? save_for_backward(b) : SavedTensor();
            const SavedTensor ssb_a = need_b ? save_for_backward(a) : SavedTensor();
            fn = [sa, sb, ssa_b, ssb_a](const Tensor& g) -> std::vector<Tensor> {
                const Tensor sa_b = ssa_b.get(), sb_a = ssb_a.get();
                Tensor ga, gb;
                if (sa_b.defined()) ga = sum_to_size(binary_nograd("mul backward", BinOp::Mul, g, sa_b), sa);
                if (sb_a.defined()) gb = sum_to_size(binary_nograd("mul backward", BinOp::Mul, g, sb_a), sb);
                return {ga, gb};
            };
            break;
        }
        case BinOp::Div: {
            // d(a/b)/da = 1/b, d(a/b)/db = -out/b.
            const SavedTensor sbd = save_for_backward(b), sod = need_b ? save_for_backward(out) : SavedTensor();
            fn = [sa, sb, sbd, sod, need_a](const Tensor& g) -> std::vector<Tensor> {
                const Tensor bd = sbd.get(), od = sod.get();
                Tensor ga, gb;
                if (need_a) ga = sum_to_size(binary_nograd("div backward", BinOp::Div, g, bd), sa);
                if (od.defined()) {
                    Tensor t = binary_nograd("div backward", BinOp::Mul, g, od);
                    t = binary_nograd("div backward", BinOp::Div, t, bd);
                    gb = affine_nograd(sum_to_size(t, sb), -1.0, 0.0);
                }
                return {ga, gb};
            };
            break;
        }
        case BinOp::Maximum:
        case BinOp::Minimum: {
            const bool is_max = op == BinOp::Maximum;
            // Kept exact, not through save_for_backward: the gradient goes where a == b or a > b,
            // which rounding both to bfloat16 would change.
            Tensor ad = a.detach(), bd = b.detach();
            fn = [sa, sb, ad, bd, need_a, need_b, is_max, name](const Tensor& g) -> std::vector<Tensor> {
                auto grad_of = [&](bool to_a, const Shape& shape) {
                    return sum_to_size(binary_nograd(name, BinOp::Mul, g, extreme_share(name, to_a, is_max, ad, bd)),
                                       shape);
                };
                return {need_a ? grad_of(true, sa) : Tensor(), need_b ? grad_of(false, sb) : Tensor()};
            };
            break;
        }
    }
    autograd::record(name, out, {a, b}, std::move(fn));
    return out;
}

// A rank-0 constant: the scalar side of a binary op, broadcast like any other operand.
Tensor scalar_operand(const char* op, double v, const Tensor& like) {
    CNX_CHECK(like.defined(), op, ": undefined input");
    return full({}, v, like.dtype());
}

Tensor affine(const char* name, const Tensor& x, double alpha, double beta) {
    CNX_CHECK(x.defined(), name, ": undefined input");
    Tensor out = affine_nograd(x, alpha, beta);
    if (autograd::records(name, {x}))
        autograd::record(name, out, {x}, [alpha](const Tensor& g) -> std::vector<Tensor> {
            return {alpha == 1.0 ? g : affine_nograd(g, alpha, 0.0)};
        });
    return out;
}

// ---- layer scale: out[r, c] = x[r, c] * s[c] ----
template <class T>
void channel_scale_forward(T* out, const T* x, const T* s, int64_t rows, int64_t C) {
    parallel_range(rows, rows * C >= kParallelMin ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* xr = x + r * C;
            T* orow = out + r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) orow[c] = xr[c] * s[c];
        }
    });
}

// dx = g * s (when dx != nullptr); ds[c] = sum_r g[r, c] * x[r, c], a deterministic column sum.
// TX: how x was saved (T, or BFloat16).
template <class T, class TX>
void channel_scale_backward(T* dx, T* ds, const T* g, const TX* x, const T* s, int64_t rows, int64_t C) {
    std::vector<T> sums(C);  // (width C even when ds is not wanted: the same chunks for dx)
    column_sums<T>(1, rows, C, sums.data(), 1.0, [&](int64_t, int64_t r0, int64_t r1, double* acc) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* gr = g + r * C;
            if (dx) {
                T* dr = dx + r * C;
#pragma omp simd
                for (int64_t c = 0; c < C; ++c) dr[c] = gr[c] * s[c];
            }
            if (ds) {
                const TX* xr = x + r * C;
#pragma omp simd
                for (int64_t c = 0; c < C; ++c) acc[c] += (double)gr[c] * (double)widen(xr[c]);
            }
        }
    });
    if (ds) std::copy(sums.begin(), sums.end(), ds);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", BinOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", BinOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", BinOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary("div", BinOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary("maximum", BinOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary("minimum", BinOp::Minimum, a, b); }

// x * alpha + beta is exact for alpha = +-1, so the scalar add/sub forms give x + s, x - s and
// s - x to the last bit.
Tensor add(const Tensor& a, double b) { return affine("add_scalar", a, 1.0, b); }
Tensor add(double a, const Tensor& b) { return affine("add_scalar", b, 1.0, a); }
Tensor sub(const Tensor& a, double b) { return affine("sub_scalar", a, 1.0, -b); }
Tensor sub(double a, const Tensor& b) { return affine("rsub_scalar", b, -1.0, a); }
Tensor mul(const Tensor& a, double b) { return affine("mul_scalar", a, b, 0.0); }
Tensor mul(double a, const Tensor& b) { return affine("mul_scalar", b, a, 0.0); }
// True division (x * (1/s) would round differently).
Tensor div(const Tensor& a, double b) { return div(a, scalar_operand("div", b, a)); }
Tensor div(double a, const Tensor& b) { return div(scalar_operand("div", a, b), b); }
Tensor maximum(const Tensor& a, double b) { return maximum(a, scalar_operand("maximum", b, a)); }
Tensor maximum(double a, const Tensor& b) { return maximum(scalar_operand("maximum", a, b), b); }
Tensor minimum(const Tensor& a, double b) { return minimum(a, scalar_operand("minimum", b, a)); }
Tensor minimum(double a, const Tensor& b) { return minimum(scalar_operand("minimum", a, b), b); }
Tensor neg(const Tensor& a) { return affine("neg", a, -1.0, 0.0); }

Shape broadcast_shapes(const Shape& a, const Shape& b) {
    Shape out;
    CNX_CHECK(broadcast_shape(a, b, out), "broadcast_shapes: shapes ", shape_str(a), " and ", shape_str(b),
              " do not broadcast");
    return out;
}

Tensor channel_scale(const Tensor& x, const Tensor& scale) {
    check_dtypes("channel_scale", x, scale);
    CNX_CHECK(x.dim() >= 1 && scale.dim() == 1 && scale.size(0) == x.size(-1), "channel_scale: input ",
              shape_str(x.shape()), " and scale ", shape_str(scale.shape()), " (expected [C] matching the last dim)");
    const int64_t C = scale.size(0), rows = C ? x.numel() / C : 0;
    Tensor out = empty_like(x);
    CNX_DISPATCH(x.dtype(), "channel_scale", {
        channel_scale_forward<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), scale.data<scalar_t>(), rows, C);
    });
    if (autograd::records("channel_scale", {x, scale})) {
        const SavedTensor xd = scale.requires_grad() ? save_for_backward(x) : SavedTensor();
        Tensor sd = scale.detach();
        const bool need_x = x.requires_grad();
        autograd::record("channel_scale", out, {x, scale},
                         [xd, sd, need_x, rows, C](const Tensor& g) -> std::vector<Tensor> {
                             Tensor dx = need_x ? empty_like(g) : Tensor();
                             Tensor ds = xd.defined() ? Tensor::empty({C}, g.dtype()) : Tensor();
                             if (xd.is_bf16() && !meta_mode()) {
                                 channel_scale_backward<float>(dx.defined() ? dx.data<float>() : nullptr,
                                                               ds.data<float>(), g.data<float>(),
                                                               xd.stored().data<BFloat16>(), sd.data<float>(), rows, C);
                                 return {dx, ds};
                             }
                             CNX_DISPATCH(g.dtype(), "channel_scale backward", {
                                 channel_scale_backward<scalar_t>(
                                     dx.defined() ? dx.data<scalar_t>() : nullptr,
                                     ds.defined() ? ds.data<scalar_t>() : nullptr, g.data<scalar_t>(),
                                     xd.defined() ? xd.stored().data<scalar_t>() : nullptr, sd.data<scalar_t>(), rows,
                                     C);
                             });
                             return {dx, ds};
                         });
    }
    return out;
}

}  // namespace cnx
