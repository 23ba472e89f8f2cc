#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
// Over the given dims (negative counts from the end); all dims when empty.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// NHWC [N, H, W, C] -> [N, C], the mean over H and W.
Tensor global_avg_pool(const Tensor& x);

// Index of the largest of row[0], ..., row[n-1] (n >= 1): the first one on ties, as
// torch.argmax; a NaN never wins (it compares false). Top-1 predictions and accuracy.
template <class T>
int64_t argmax(const T* row, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
        if (row[i] > row[best]) best = i;
    return best;
}
}  // namespace cnx
