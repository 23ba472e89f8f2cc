#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
// Over the given dims (negative counts from the end); all dims when empty.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// NHWC [N, H, W, C] -> [N, C], the mean over H and W.
Tensor global_avg_pool(const Tensor& x);
}  // namespace cnx
