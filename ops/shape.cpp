// Shape ops. reshape / unsqueeze / squeeze are views (Tensor::reshape); permute, transpose and
// expand copy through one strided gather; narrow, cat and split copy column blocks of x viewed as
// [outer, size * inner]. Backward: the inverse permutation, a sum over the expanded dims, or the
// block copied back.
#include "ops/shape.h"

#include <algorithm>
#include <string>

#include "core/autograd.h"
#include "ops/parallel.h"
#include "ops/reduce.h"

namespace cnx {
namespace {

std::string dims_str(const std::vector<int64_t>& d) { return shape_str(Shape(d.begin(), d.end())); }

// out[i] in row-major order over `sizes`, read from x stepping strides[k] along dim k.
template <class T>
void gather_kernel(T* out, const T* x, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
    const int r = (int)sizes.size();
    if (r == 0) {
        out[0] = x[0];
        return;
    }
    const int64_t inner = sizes[r - 1], is = strides[r - 1];
    int64_t rows = 1;
    for (int k = 0; k < r - 1; ++k) rows *= sizes[k];
    parallel_range(rows, rows * inner >= kParallelMin ? 1 : rows, [&](int64_t row0, int64_t row1) {
        for (int64_t row = row0; row < row1; ++row) {
            int64_t off = 0, rem = row;
            for (int k = r - 2; k >= 0; --k) {
                off += (rem % sizes[k]) * strides[k];
                rem /= sizes[k];
            }
            T* o = out + row * inner;
            const T* xi = x + off;
            if (is == 1)
                std::copy(xi, xi + inner, o);
            else
                for (int64_t i = 0; i < inner; ++i) o[i] = xi[i * is];
        }
    });
}

// Copies x into a new tensor of out_shape whose dim k steps x by in_strides[k] elements (0 where
// x is broadcast). Size-1 dims are dropped and neighbours contiguous in x merged first.
Tensor strided_copy(const Tensor& x, const Shape& out_shape, const std::vector<int64_t>& in_strides) {
    std::vector<int64_t> sizes, strides;
    for (size_t k = 0; k < out_shape.size(); ++k) {
        const int64_t d = out_shape[k], st = in_strides[k];
        if (d == 1) continue;
        if (!sizes.empty() && strides.back() == st * d) {
            sizes.back() *= d;
            strides.back() = st;
        } else {
            sizes.push_back(d);
            strides.push_back(st);
        }
    }
    Tensor out = Tensor::empty(out_shape, x.dtype());
    if (out.numel() == 0) return out;
    CNX_DISPATCH(x.dtype(), "strided_copy",
                 { gather_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), sizes, strides); });
    return out;
}

std::vector<int64_t> contiguous_strides(const Shape& s) {
    std::vector<int64_t> st(s.size(), 1);
    for (int64_t i = (int64_t)s.size() - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
    return st;
}

Tensor permute_nograd(const Tensor& x, const std::vector<int64_t>& perm) {
    const std::vector<int64_t> xstride = contiguous_strides(x.shape());
    Shape out_shape(perm.size());
    std::vector<int64_t> strides(perm.size());
    for (size_t k = 0; k < perm.size(); ++k) {
        out_shape[k] = x.shape()[perm[k]];
        strides[k] = xstride[perm[k]];
    }
    return strided_copy(x, out_shape, strides);
}

// dst[o, dst_col + j] = src[o, src_col + j] for o < outer, j < width; rows of dst_width and
// src_width elements.
template <class T>
void copy_block(T* dst, int64_t dst_width, int64_t dst_col, const T* src, int64_t src_width, int64_t src_col,
                int64_t width, int64_t outer) {
    parallel_range(outer, outer * width >= kParallelMin ? 1 : outer, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
            const T* from = src + o * src_width + src_col;
            std::copy(from, from + width, dst + o * dst_width + dst_col);
        }
    });
}

void copy_block(Tensor& dst, int64_t dst_width, int64_t dst_col, const Tensor& src, int64_t src_width,
                int64_t src_col, int64_t width, int64_t outer) {
    if (width == 0 || outer == 0) return;
    CNX_DISPATCH(dst.dtype(), "copy_block", {
        copy_block<scalar_t>(dst.data<scalar_t>(), dst_width, dst_col, src.data<scalar_t>(), src_width, src_col,
                             width, outer);
    });
}

int64_t wrap_dim(const char* op, int64_t dim, int64_t rank, const Tensor& x) {
    const int64_t d = dim < 0 ? dim + rank : dim;
    CNX_CHECK(d >= 0 && d < rank, op, ": dim ", dim, " out of range for ", x.str());
    return d;
}

// x viewed as [outer, size(dim) * inner].
void outer_inner(const Shape& s, int64_t dim, int64_t& outer, int64_t& inner) {
    outer = inner = 1;
    for (int64_t i = 0; i < dim; ++i) outer *= s[i];
    for (size_t i = dim + 1; i < s.size(); ++i) inner *= s[i];
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
    CNX_CHECK(x.defined(), "permute: undefined input");
    const int64_t r = x.dim();
    CNX_CHECK((int64_t)dims.size() == r, "permute: dims ", dims_str(dims), " do not match the rank of ", x.str());
    std::vector<int64_t> perm(r);
    std::vector<bool> seen(r, false);
    for (int64_t k = 0; k < r; ++k) {
        int64_t d = dims[k] < 0 ? dims[k] + r : dims[k];
        CNX_CHECK(d >= 0 && d < r, "permute: dim ", dims[k], " out of range for ", x.str());
        CNX_CHECK(!seen[d], "permute: dims ", dims_str(dims), " repeat dim ", d);
        seen[d] = true;
        perm[k] = d;
    }
    Tensor out = permute_nograd(x, perm);
    if (autograd::records("permute", {x})) {
        std::vector<int64_t> inv(r);
        for (int64_t k = 0; k < r; ++k) inv[perm[k]] = k;
        autograd::record("permute", out, {x},
                         [inv](const Tensor& g) -> std::vector<Tensor> { return {permute_nograd(g, inv)}; });
    }
    return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
    CNX_CHECK(x.defined(), "transpose: undefined input");
    const int64_t r = x.dim();
    int64_t a = dim0 < 0 ? dim0 + r : dim0, b = dim1 < 0 ? dim1 + r : dim1;
    CNX_CHECK(a >= 0 && a < r && b >= 0 && b < r, "transpose: dims ", dim0, " and ", dim1, " out of range for ",
              x.str());
    std::vector<int64_t> dims(r);
    for (int64_t i = 0; i < r; ++i) dims[i] = i;
    std::swap(dims[a], dims[b]);
    return permute(x, dims);
}

Tensor reshape(const Tensor& x, const Shape& shape) {
    CNX_CHECK(x.defined(), "reshape: undefined input");
    return x.reshape(shape);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
    CNX_CHECK(x.defined(), "unsqueeze: undefined input");
    const int64_t d = wrap_dim("unsqueeze", dim, x.dim() + 1, x);
    Shape s = x.shape();
    s.insert(s.begin() + d, 1);
    return x.reshape(s);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
    CNX_CHECK(x.defined(), "squeeze: undefined input");
    const int64_t d = wrap_dim("squeeze", dim, std::max<int64_t>(x.dim(), 1), x);
    if (x.dim() == 0 || x.size(d) != 1) return x.reshape(x.shape());  // as PyTorch: not size 1, no change
    Shape s = x.shape();
    s.erase(s.begin() + d);
    return x.reshape(s);
}

Tensor expand(const Tensor& x, const Shape& shape) {
    CNX_CHECK(x.defined(), "expand: undefined input");
    const Shape& xs = x.shape();
    CNX_CHECK(shape.size() >= xs.size(), "expand: cannot expand ", x.str(), " to ", shape_str(shape),
              " (fewer dims)");
    const size_t pad = shape.size() - xs.size();
    const std::vector<int64_t> xstride = contiguous_strides(xs);
    Shape out_shape(shape.size());
    std::vector<int64_t> strides(shape.size(), 0);
    for (size_t k = 0; k < shape.size(); ++k) {
        const int64_t have = k < pad ? 1 : xs[k - pad];
        CNX_CHECK(shape[k] >= 0 || (shape[k] == -1 && k >= pad), "expand: size ", shape[k], " in ", shape_str(shape),
                  " is not allowed (-1 keeps an existing dim only)");
        const int64_t want = shape[k] == -1 ? have : shape[k];
        CNX_CHECK(have == want || have == 1, "expand: cannot expand ", x.str(), " to ", shape_str(shape), " (dim ", k,
                  ": ", have, " is neither ", want, " nor 1)");
        out_shape[k] = want;
        if (k >= pad && have != 1) strides[k] = xstride[k - pad];
    }
    Tensor out = strided_copy(x, out_shape, strides);
    if (autograd::records("expand", {x}))
        autograd::record("expand", out, {x}, [xs](const Tensor& g) -> std::vector<Tensor> {
            return {sum_to_size(g, xs)};
        });
    return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
    CNX_CHECK(x.defined(), "narrow: undefined input");
    const int64_t d = wrap_dim("narrow", dim, x.dim(), x), size = x.size(d);
    CNX_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: [", start, ", ", start + length,
              ") is outside dim ", dim, " of ", x.str());
    int64_t outer, inner;
    outer_inner(x.shape(), d, outer, inner);
    Shape out_shape = x.shape();
    out_shape[d] = length;
    Tensor out = Tensor::empty(out_shape, x.dtype());
    copy_block(out, length * inner, 0, x, size * inner, start * inner, length * inner, outer);
    if (autograd::records("narrow", {x})) {
        Shape xs = x.shape();
        autograd::record("narrow", out, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
            Tensor dx = zeros(xs, g.dtype());
            copy_block(dx, size * inner, start * inner, g, length * inner, 0, length * inner, outer);
            return {dx};
        });
    }
    return out;
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
    CNX_CHECK(!xs.empty(), "cat: no tensors to concatenate");
    for (const Tensor& t : xs) CNX_CHECK(t.defined(), "cat: undefined input");
    const Tensor& first = xs[0];
    const int64_t d = wrap_dim("cat", dim, first.dim(), first);
    Shape out_shape = first.shape();
    out_shape[d] = 0;
    for (const Tensor& t : xs) {
        CNX_CHECK(t.dtype() == first.dtype(), "cat: dtypes differ: ", first.str(), " and ", t.str());
        bool same = t.dim() == first.dim();
        for (int64_t i = 0; same && i < t.dim(); ++i) same = i == d || t.size(i) == first.size(i);
        CNX_CHECK(same, "cat: shapes ", shape_str(first.shape()), " and ", shape_str(t.shape()),
                  " differ outside dim ", dim);
        out_shape[d] += t.size(d);
    }
    int64_t outer, inner;
    outer_inner(out_shape, d, outer, inner);
    const int64_t out_width = out_shape[d] * inner;
    Tensor out = Tensor::empty(out_shape, first.dtype());
    std::vector<int64_t> cols;  // where each input's block starts in an output row
    int64_t col = 0;
    for (const Tensor& t : xs) {
        cols.push_back(col);
        copy_block(out, out_width, col, t, t.size(d) * inner, 0, t.size(d) * inner, outer);
        col += t.size(d) * inner;
    }
    if (autograd::records("cat", xs)) {
        std::vector<Shape> shapes;
        std::vector<bool> need;
        for (const Tensor& t : xs) {
            shapes.push_back(t.shape());
            need.push_back(t.requires_grad());
        }
        autograd::record("cat", out, xs, [=](const Tensor& g) -> std::vector<Tensor> {
            std::vector<Tensor> grads(shapes.size());
            for (size_t i = 0; i < shapes.size(); ++i) {
                if (!need[i]) continue;
                const int64_t width = shapes[i][d] * inner;
                grads[i] = Tensor::empty(shapes[i], g.dtype());
                copy_block(grads[i], width, 0, g, out_width, cols[i], width, outer);
            }
            return grads;
        });
    }
    return out;
}

std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
    CNX_CHECK(x.defined(), "split: undefined input");
    const int64_t d = wrap_dim("split", dim, x.dim(), x);
    int64_t total = 0;
    for (int64_t s : sizes) {
        CNX_CHECK(s >= 0, "split: negative size ", s, " in ", dims_str(sizes));
        total += s;
    }
    CNX_CHECK(total == x.size(d), "split: sizes ", dims_str(sizes), " add up to ", total, ", not to dim ", dim,
              " of ", x.str());
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (int64_t s : sizes) {
        parts.push_back(narrow(x, d, start, s));
        start += s;
    }
    return parts;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
    CNX_CHECK(x.defined(), "split: undefined input");
    const int64_t d = wrap_dim("split", dim, x.dim(), x), size = x.size(d);
    CNX_CHECK(split_size > 0 || (split_size == 0 && size == 0), "split: split_size ", split_size,
              " must be positive (dim ", dim, " of ", x.str(), ")");
    std::vector<int64_t> sizes;
    for (int64_t start = 0; start < size; start += split_size) sizes.push_back(std::min(split_size, size - start));
    if (sizes.empty()) sizes.push_back(0);  // an empty dim gives one empty piece, as in PyTorch
    return split_with_sizes(x, sizes, d);
}

}  // namespace cnx
