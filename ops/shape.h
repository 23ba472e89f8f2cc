#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
// Views over the same storage (one dim of reshape may be -1), with autograd: x.reshape as a
// function, a new size-1 dim at `dim` (-1 appends), the size-1 dim at `dim` removed (no change when
// it is not 1, as in PyTorch).
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
// These copy into a contiguous result.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
// Broadcast x to `shape` (new dims on the left; a size-1 dim repeats; -1 keeps a dim). Backward
// sums over the broadcast dims.
Tensor expand(const Tensor& x, const Shape& shape);
// Elements [start, start + length) of dim `dim`.
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// Joins tensors that agree in every dim but `dim`, in order.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
// Pieces of split_size along dim (the last one shorter when it does not divide), or pieces of the
// given sizes, which must add up to the dim. Each piece is a narrow with its own backward.
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// NHWC <-> NCHW helpers for import/export and comparisons with PyTorch.
inline Tensor nchw_to_nhwc(const Tensor& x) { return permute(x, {0, 2, 3, 1}); }
inline Tensor nhwc_to_nchw(const Tensor& x) { return permute(x, {0, 3, 1, 2}); }
}  // namespace cnx
