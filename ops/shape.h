#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
// reshape is Tensor::reshape (a view). These copy into a contiguous result.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
// NHWC <-> NCHW helpers for import/export and comparisons with PyTorch.
inline Tensor nchw_to_nhwc(const Tensor& x) { return permute(x, {0, 2, 3, 1}); }
inline Tensor nhwc_to_nchw(const Tensor& x) { return permute(x, {0, 3, 1, 2}); }
}  // namespace cnx
