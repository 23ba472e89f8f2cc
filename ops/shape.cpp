// permute / transpose into a fresh contiguous tensor. Backward is the inverse permutation.
#include "ops/shape.h"

#include <algorithm>
#include <string>

#include "core/autograd.h"
#include "ops/parallel.h"

namespace cnx {
namespace {

std::string dims_str(const std::vector<int64_t>& d) { return shape_str(Shape(d.begin(), d.end())); }

// out is x with its dims reordered; sizes/strides describe, per output dim (size-1 dims dropped,
// neighbours contiguous in x merged), how far to step in x.
template <class T>
void permute_kernel(T* out, const T* x, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
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

Tensor permute_nograd(const Tensor& x, const std::vector<int64_t>& perm) {
    const Shape& xs = x.shape();
    const int64_t r = (int64_t)xs.size();
    std::vector<int64_t> xstride(r, 1);
    for (int64_t i = r - 2; i >= 0; --i) xstride[i] = xstride[i + 1] * xs[i + 1];
    Shape out_shape(r);
    std::vector<int64_t> sizes, strides;
    for (int64_t k = 0; k < r; ++k) {
        int64_t d = xs[perm[k]], st = xstride[perm[k]];
        out_shape[k] = d;
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
    CNX_DISPATCH(x.dtype(), "permute",
                 { permute_kernel<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), sizes, strides); });
    return out;
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
    if (autograd::needs_grad({x})) {
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

}  // namespace cnx
