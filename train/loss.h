#pragma once
// The loss the training library minimises: any function of the model's output and the batch's
// targets that returns a scalar tensor with a graph to backpropagate through.
//
//   train::LossFn focal = [](const Tensor& logits, const train::Targets& t) { ... return loss; };
//
// With mixup or cutmix on, the images of a training batch are mixed and `soft` holds the mixed
// (label-smoothed) targets; a loss that ignores them trains on the unmixed labels of mixed images.
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace cnx::train {

struct Targets {
    const std::vector<int64_t>& labels;  // [B] class indices
    Tensor soft;                         // [B, num_classes] when the batch was mixed; else undefined
};

using LossFn = std::function<Tensor(const Tensor& output, const Targets& targets)>;

// The classic script's criterion: cross-entropy with label smoothing on the labels, or
// cross-entropy against the soft targets of a mixed batch (whose smoothing they already hold).
LossFn cross_entropy_loss(double label_smoothing = 0.0);

}  // namespace cnx::train
