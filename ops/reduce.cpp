// Sum and mean over dims, global average pooling. Every reduction is a sequence of passes of one
// kernel over x viewed as [A, R, B] (sum out the middle), so a column sum ([R, C] -> [C]), a row
// sum and NHWC pooling ([N, H*W, C] -> [N, C]) share one code path. Sums accumulate in double
// through column_sums: results do not change with the thread count.
#include "ops/reduce.h"

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "ops/column_sum.h"
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

// Sums out the reduced groups, innermost first, one [A, R, B] pass each.
Tensor sum_groups(const Tensor& x, std::vector<Group> gs, double scale, const Shape& out_shape) {
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
        // Scale once, on the last pass.
        bool last = true;
        for (int i = 0; i < j; ++i) last = last && !gs[i].reduced;
        CNX_DISPATCH(x.dtype(), "sum", {
            sum_mid_kernel<scalar_t>(next.data<scalar_t>(), cur.data<scalar_t>(), A, gs[j].size, B,
                                     last ? scale : 1.0);
        });
        cur = next;
        first = false;
        gs.erase(gs.begin() + j);
        if (j > 0 && j < (int)gs.size() && !gs[j - 1].reduced && !gs[j].reduced) {
            gs[j - 1].size *= gs[j].size;
            gs.erase(gs.begin() + j);
        }
    }
    if (first) {  // nothing to reduce (dims of size 1): a copy, scaled
        Tensor out = Tensor::empty({x.numel()}, x.dtype());
        CNX_DISPATCH(x.dtype(), "sum", {
            expand_mid_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), 1, 1, x.numel(), scale);
        });
        cur = out;
    }
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
    if (!scaled) {  // only size-1 dims were reduced
        Tensor out = Tensor::empty({g.numel()}, g.dtype());
        CNX_DISPATCH(g.dtype(), "sum backward", {
            expand_mid_kernel<scalar_t>(out.data<scalar_t>(), g.data<scalar_t>(), 1, 1, g.numel(), scale);
        });
        cur = out;
    }
    Tensor out = cur.detach();
    out.impl()->shape = x_shape;
    return out;
}

Tensor reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
    CNX_CHECK(x.defined(), op, ": undefined input");
    std::vector<bool> flags = reduced_flags(op, x.shape(), dims);
    int64_t count = 1;
    for (size_t i = 0; i < flags.size(); ++i)
        if (flags[i]) count *= x.shape()[i];
    const double scale = is_mean ? 1.0 / (double)count : 1.0;  // mean of nothing is NaN, as in PyTorch
    std::vector<Group> gs = make_groups(x.shape(), flags);
    Shape out_shape = reduced_shape(x.shape(), flags, keepdim);
    Tensor out = sum_groups(x, gs, scale, out_shape);
    if (autograd::needs_grad({x})) {
        Shape xs = x.shape();
        autograd::record(op, out, {x}, [xs, gs, scale](const Tensor& g) -> std::vector<Tensor> {
            return {expand_groups(g, xs, gs, scale)};
        });
    }
    return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce("sum", x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return reduce("mean", x, dims, keepdim, true);
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
    if (autograd::needs_grad({x})) {
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
