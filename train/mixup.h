#pragma once
// Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) in batch mode, as timm's Mixup:
// the batch is mixed with itself reversed, lambda ~ Beta(alpha, alpha), the targets become the
// same mixture of (label-smoothed) one-hot vectors. With both enabled each batch picks one with
// probability 1/2.
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace cnx::train {

struct MixupOptions {
    double mixup_alpha = 0, cutmix_alpha = 0, label_smoothing = 0;
    bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// Mixes images [B,H,W,C] in place; returns soft targets [B, num_classes].
Tensor mix_batch(Tensor& images, const std::vector<int64_t>& labels, int64_t num_classes, const MixupOptions& opts,
                 Generator& gen);

double sample_beta(double alpha, Generator& gen);

}  // namespace cnx::train
