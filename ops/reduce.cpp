// Sum, mean, amax, amin and var over dims, sum_to_size, global average pooling. Every reduction is
// a sequence of passes of one kernel over x viewed as [A, R, B] (reduce the middle), so a column
// sum ([R, C] -> [C]), a row sum and NHWC pooling ([N, H*W, C] -> [N, C]) share one code path.
// Sums accumulate in double through column_sums: results do not change with the thread count.
#include "ops/reduce.h"

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "ops/column_sum.h"
#include "ops/elementwise.h"
#include "ops/parallel.h"

namespace cnx {
namespace {

// out[a, b] = scale * sum_r x[a, r, b]
template <class T>
void sum_mid_kernel(T* out, const T* x, int64_t A, int64_t R, int64_t B, double scale) {
    column_sums<T>(A, R, B, out, scale, [x, R, B](int64_t a, int64_t r0, int64_t r1, double* acc) {
        if (B > 1) return add_rows(acc, x + (a * R + r0) * B, r1 - r0, B, B);
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t r = r0; r < r1; ++r) s += (double)x[a * R + r];
        acc[0] = s;
    });
}

// The inverse pattern: out[a, r, b] = scale * g[a, b].
template <class T>
void expand_mid_kernel(T* out, const T* g, int64_t A, int64_t R, int64_t B, double scale) {
    const T sc = (T)scale;
    parallel_range(A * R, A * R * B >= kParallelMin ? 1 : A * R, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t a = u / R;
            T* o = out + u * B;
            const T* ga = g + a * B;
#pragma omp simd
            for (int64_t b = 0; b < B; ++b) o[b] = ga[b] * sc;
        }
    });
}

// out[a, b] = max (or min) over r of x[a, r, b], R >= 1. A NaN wins, as in PyTorch.
template <class T>
void extreme_mid_kernel(T* out, const T* x, int64_t A, int64_t R, int64_t B, bool is_max) {
    parallel_range(A, A * R * B >= kParallelMin ? 1 : A, [&](int64_t a0, int64_t a1) {
        for (int64_t a = a0; a < a1; ++a) {
            T* o = out + a * B;
            std::copy(x + a * R * B, x + a * R * B + B, o);
            for (int64_t r = 1; r < R; ++r) {
                const T* xr = x + (a * R + r) * B;
                for (int64_t b = 0; b < B; ++b) {
                    const T v = xr[b];
                    if ((is_max ? v > o[b] : v < o[b]) || v != v) o[b] = v;
                }
            }
        }
    });
}

// out = x * scale as a flat copy: a "reduction" over size-1 dims only.
Tensor scaled_copy(const Tensor& x, double scale) {
    Tensor out = Tensor::empty({x.numel()}, x.dtype());
    CNX_DISPATCH(x.dtype(), "reduce", {
        expand_mid_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), 1, 1, x.numel(), scale);
    });
    return out;
}

// x's shape as alternating groups of kept / reduced dims (size-1 dims dropped, neighbours with
// the same flag merged).
struct Group {
    int64_t size;
    bool reduced;
};

std::vector<Group> make_groups(const Shape& shape, const std::vector<bool>& reduced) {
    std::vector<Group> gs;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == 1) continue;
        if (!gs.empty() && gs.back().reduced == reduced[i])
            gs.back().size *= shape[i];
        else
            gs.push_back({shape[i], (bool)reduced[i]});
    }
    return gs;
}

std::vector<bool> reduced_flags(const char* op, const Shape& shape, const std::vector<int64_t>& dims) {
    const int64_t r = (int64_t)shape.size();
    std::vector<bool> flags(r, dims.empty());
    for (int64_t d : dims) {
        int64_t i = d < 0 ? d + r : d;
        CNX_CHECK(i >= 0 && i < r, op, ": dim ", d, " out of range for shape ", shape_str(shape));
        CNX_CHECK(!flags[i], op, ": dim ", d, " appears more than once in the dims list");
        flags[i] = true;
    }
    return flags;
}

Shape reduced_shape(const Shape& shape, const std::vector<bool>& flags, bool keepdim) {
    Shape out;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (!flags[i])
            out.push_back(shape[i]);
        else if (keepdim)
            out.push_back(1);
    }
    return out;
}

enum class Kind { Sum, Max, Min };

// Reduces the reduced groups, innermost first, one [A, R, B] pass each; sums are scaled once, on
// the last pass.
Tensor reduce_groups(const Tensor& x, std::vector<Group> gs, Kind kind, double scale, const Shape& out_shape) {
    Tensor cur = x;
    bool first = true;
    while (true) {
        int j = -1;
        for (int i = (int)gs.size() - 1; i >= 0; --i)
            if (gs[i].reduced) {
                j = i;
                break;
            }
        if (j < 0) break;
        int64_t A = 1, B = 1;
        for (int i = 0; i < j; ++i) A *= gs[i].size;
        for (size_t i = j + 1; i < gs.size(); ++i) B *= gs[i].size;
        Tensor next = Tensor::empty({A * B}, x.dtype());
        bool last = true;
        for (int i = 0; i < j; ++i) last = last && !gs[i].reduced;
        CNX_DISPATCH(x.dtype(), "reduce", {
            if (kind == Kind::Sum)
                sum_mid_kernel<scalar_t>(next.data<scalar_t>(), cur.data<scalar_t>(), A, gs[j].size, B,
                                         last ? scale : 1.0);
            else
                extreme_mid_kernel<scalar_t>(next.data<scalar_t>(), cur.data<scalar_t>(), A, gs[j].size, B,
                                             kind == Kind::Max);
        });
        cur = next;
        first = false;
        gs.erase(gs.begin() + j);
        if (j > 0 && j < (int)gs.size() && !gs[j - 1].reduced && !gs[j].reduced) {
            gs[j - 1].size *= gs[j].size;
            gs.erase(gs.begin() + j);
        }
    }
    if (first) cur = scaled_copy(x, kind == Kind::Sum ? scale : 1.0);  // only size-1 dims reduced
    Tensor out = cur.detach();
    out.impl()->shape = out_shape;
    return out;
}

// Broadcasts g (x's shape with the reduced dims removed) back to x's shape, times scale.
// Reduced groups are inserted left to right: before inserting group j, cur holds every group
// left of j and only the kept groups right of it, i.e. [A, B] -> [A, R_j, B].
Tensor expand_groups(const Tensor& g, const Shape& x_shape, const std::vector<Group>& gs, double scale) {
    Tensor cur = g;
    bool scaled = false;
    for (size_t j = 0; j < gs.size(); ++j) {
        if (!gs[j].reduced) continue;
        int64_t A = 1, B = 1;
        for (size_t i = 0; i < j; ++i) A *= gs[i].size;
        for (size_t i = j + 1; i < gs.size(); ++i)
            if (!gs[i].reduced) B *= gs[i].size;
        Tensor next = Tensor::empty({A * gs[j].size * B}, g.dtype());
        CNX_DISPATCH(g.dtype(), "sum backward", {
            expand_mid_kernel<scalar_t>(next.data<scalar_t>(), cur.data<scalar_t>(), A, gs[j].size, B,
                                        scaled ? 1.0 : scale);
        });
        scaled = true;
        cur = next;
    }
    if (!scaled) cur = scaled_copy(g, scale);  // only size-1 dims were reduced
    Tensor out = cur.detach();
    out.impl()->shape = x_shape;
    return out;
}

// What a reduction over `dims` of x needs: the dims' groups, the element count per output, the
// output shape.
struct ReducePlan {
    std::vector<Group> groups;
    int64_t count = 1;
    Shape out_shape, keepdim_shape;
};

ReducePlan plan_reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    CNX_CHECK(x.defined(), op, ": undefined input");
    std::vector<bool> flags = reduced_flags(op, x.shape(), dims);
    ReducePlan p;
    for (size_t i = 0; i < flags.size(); ++i)
        if (flags[i]) p.count *= x.shape()[i];
    p.groups = make_groups(x.shape(), flags);
    p.out_shape = reduced_shape(x.shape(), flags, keepdim);
    p.keepdim_shape = reduced_shape(x.shape(), flags, true);
    return p;
}

Tensor reduce_sum(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
    ReducePlan p = plan_reduce(op, x, dims, keepdim);
    const double scale = is_mean ? 1.0 / (double)p.count : 1.0;  // mean of nothing is NaN, as in PyTorch
    Tensor out = reduce_groups(x, p.groups, Kind::Sum, scale, p.out_shape);
    if (autograd::records(op, {x})) {
        Shape xs = x.shape();
        autograd::record(op, out, {x}, [xs, gs = p.groups, scale](const Tensor& g) -> std::vector<Tensor> {
            return {expand_groups(g, xs, gs, scale)};
        });
    }
    return out;
}

// dx[i] = mask[i] ? g[i] / count[i] : 0, mask[i] = (x[i] == y[i]): the gradient of amax/amin split
// evenly among the elements that equal the extreme (all tensors expanded to x's shape).
template <class T>
void extreme_backward(T* dx, const T* x, const T* y, const T* g, const T* count, int64_t n) {
    parallel_range(n, n >= kParallelMin ? 4096 : n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) dx[i] = x[i] == y[i] ? g[i] / count[i] : T(0);
    });
}

template <class T>
void equal_mask(T* mask, const T* x, const T* y, int64_t n) {
    parallel_range(n, n >= kParallelMin ? 4096 : n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) mask[i] = x[i] == y[i] ? T(1) : T(0);
    });
}

Tensor reduce_extreme(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_max) {
    ReducePlan p = plan_reduce(op, x, dims, keepdim);
    CNX_CHECK(p.count > 0, op, ": cannot reduce over an empty dim of ", x.str());
    Tensor out = reduce_groups(x, p.groups, is_max ? Kind::Max : Kind::Min, 1.0, p.out_shape);
    if (autograd::records(op, {x})) {
        Tensor xd = x.detach(), yd = out.detach();
        autograd::record(op, out, {x}, [xd, yd, gs = p.groups, op](const Tensor& g) -> std::vector<Tensor> {
            const Shape& xs = xd.shape();
            Tensor y = expand_groups(yd, xs, gs, 1.0), mask = empty_like(xd);
            CNX_DISPATCH(xd.dtype(), op, {
                equal_mask<scalar_t>(mask.data<scalar_t>(), xd.data<scalar_t>(), y.data<scalar_t>(), xd.numel());
            });
            Tensor count = expand_groups(reduce_groups(mask, gs, Kind::Sum, 1.0, yd.shape()), xs, gs, 1.0);
            Tensor gx = expand_groups(g, xs, gs, 1.0), dx = empty_like(xd);
            CNX_DISPATCH(xd.dtype(), op, {
                extreme_backward<scalar_t>(dx.data<scalar_t>(), xd.data<scalar_t>(), y.data<scalar_t>(),
                                           gx.data<scalar_t>(), count.data<scalar_t>(), xd.numel());
            });
            return {dx};
        });
    }
    return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce_sum("sum", x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce_sum("mean", x, dims, keepdim, true);
}

Tensor amax(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce_extreme("amax", x, dims, keepdim, true);
}

Tensor amin(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce_extreme("amin", x, dims, keepdim, false);
}

// Two passes (the mean, then squared deviations from it): no E[x^2] - E[x]^2 cancellation.
// Backward: dx = g * 2 (x - mean) / (count - correction).
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, double correction) {
    ReducePlan p = plan_reduce("var", x, dims, keepdim);
    // As PyTorch: the divisor never goes below 0, so too few elements give inf or NaN.
    const double divisor = std::max(0.0, (double)p.count - correction);
    Tensor centered, sq;
    {
        NoGradGuard no_grad;
        centered = sub(x, reduce_groups(x, p.groups, Kind::Sum, 1.0 / (double)p.count, p.keepdim_shape));
        sq = mul(centered, centered);
    }
    Tensor out = reduce_groups(sq, p.groups, Kind::Sum, 1.0 / divisor, p.out_shape);
    if (autograd::records("var", {x}))
        autograd::record("var", out, {x}, [centered, gs = p.groups, divisor](const Tensor& g) -> std::vector<Tensor> {
            return {mul(expand_groups(g, centered.shape(), gs, 2.0 / divisor), centered)};
        });
    return out;
}

Tensor sum_to_size(const Tensor& x, const Shape& shape) {
    CNX_CHECK(x.defined(), "sum_to_size: undefined input");
    const size_t r = x.dim();
    bool ok = shape.size() <= r;
    std::vector<int64_t> dims;
    for (size_t i = 0; ok && i < r; ++i) {
        const size_t pad = r - shape.size();
        if (i < pad) {
            dims.push_back((int64_t)i);
            continue;
        }
        const int64_t want = shape[i - pad], have = x.shape()[i];
        if (want == 1 && have != 1)
            dims.push_back((int64_t)i);
        else
            ok = want == have;
    }
    CNX_CHECK(ok, "sum_to_size: ", x.str(), " cannot be summed to ", shape_str(shape));
    if (x.shape() == shape) return x;
    return sum(x, dims, true).reshape(shape);
}

Tensor global_avg_pool(const Tensor& x) {
    CNX_CHECK(x.defined() && x.dim() == 4, "global_avg_pool: expected NHWC [N,H,W,C], got ",
              x.defined() ? x.str() : "undefined");
    const int64_t N = x.size(0), HW = x.size(1) * x.size(2), C = x.size(3);
    CNX_CHECK(HW > 0, "global_avg_pool: empty spatial extent in ", x.str());
    const double scale = 1.0 / (double)HW;
    Tensor out = Tensor::empty({N, C}, x.dtype());
    CNX_DISPATCH(x.dtype(), "global_avg_pool",
                 { sum_mid_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), N, HW, C, scale); });
    if (autograd::records("global_avg_pool", {x})) {
        Shape xs = x.shape();
        autograd::record("global_avg_pool", out, {x}, [xs, N, HW, C, scale](const Tensor& g) -> std::vector<Tensor> {
            Tensor dx = Tensor::empty(xs, g.dtype());
            CNX_DISPATCH(g.dtype(), "global_avg_pool backward", {
                expand_mid_kernel<scalar_t>(dx.data<scalar_t>(), g.data<scalar_t>(), N, HW, C, scale);
            });
            return {dx};
        });
    }
    return out;
}

}  // namespace cnx
