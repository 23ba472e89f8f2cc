#pragma once
#include <vector>

#include "core/tensor.h"

namespace cnx {
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// logits [N, C], class indices -> mean loss (scalar, shape []). label_smoothing as PyTorch:
// target distribution (1 - s) * onehot + s / C.
Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, double label_smoothing = 0.0);
// Soft targets [N, C] (rows sum to 1, e.g. mixup) -> mean of -sum(target * log_softmax).
Tensor cross_entropy(const Tensor& logits, const Tensor& soft_targets);
}  // namespace cnx
