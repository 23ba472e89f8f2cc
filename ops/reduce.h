#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
// Over the given dims (negative counts from the end); all dims when empty. keepdim leaves each
// reduced dim in place with size 1.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Largest / smallest value over dims (torch.amax / amin). A NaN wins. Where several elements
// equal the extreme, the gradient is split evenly among them, as in PyTorch.
Tensor amax(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Variance over dims: sum((x - mean)^2) / (count - correction). correction 1 (the default, as
// torch.var) is the unbiased estimate, 0 the population variance.
Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false, double correction = 1);
// Sums x down to `shape`, which x's shape must broadcast from (leading dims summed away, dims of
// size 1 summed with keepdim): the backward of broadcasting (Tensor.sum_to_size).
Tensor sum_to_size(const Tensor& x, const Shape& shape);
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
