#include "train/mixup.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace cnx::train {
namespace {

// Marsaglia and Tsang's method; for a < 1 boost with U^(1/a).
double sample_gamma(double a, Generator& g) {
    if (a < 1) return sample_gamma(a + 1, g) * std::pow(std::max(g.uniform(), 1e-300), 1.0 / a);
    double d = a - 1.0 / 3, c = 1.0 / std::sqrt(9 * d);
    for (;;) {
        double x = g.normal(), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = g.uniform();
        if (u < 1 - 0.0331 * x * x * x * x || std::log(std::max(u, 1e-300)) < 0.5 * x * x + d * (1 - v + std::log(v)))
            return d * v;
    }
}

}  // namespace

double sample_beta(double alpha, Generator& gen) {
    double x = sample_gamma(alpha, gen), y = sample_gamma(alpha, gen);
    return x / (x + y);
}

Tensor mix_batch(Tensor& images, const std::vector<int64_t>& labels, int64_t num_classes, const MixupOptions& o,
                 Generator& gen) {
    const int64_t B = images.size(0), H = images.size(1), W = images.size(2), C = images.size(3);
    bool use_cutmix = o.cutmix_alpha > 0 && (o.mixup_alpha <= 0 || gen.uniform() < 0.5);
    double lam = sample_beta(use_cutmix ? o.cutmix_alpha : o.mixup_alpha, gen);
    float* x = images.data<float>();
    const int64_t per = H * W * C;
    Tensor orig = images.clone();
    const float* src = orig.data<float>();
    if (use_cutmix) {
        double cut = std::sqrt(1 - lam);
        int64_t ch = (int64_t)(H * cut), cw = (int64_t)(W * cut);
        int64_t cy = (int64_t)gen.randint(H), cx = (int64_t)gen.randint(W);
        int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, H), y1 = std::clamp<int64_t>(cy + ch / 2, 0, H);
        int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, W), x1 = std::clamp<int64_t>(cx + cw / 2, 0, W);
        for (int64_t b = 0; b < B; ++b) {
            const float* other = src + (B - 1 - b) * per;
            for (int64_t y = y0; y < y1; ++y)
                std::memcpy(x + b * per + (y * W + x0) * C, other + (y * W + x0) * C, (x1 - x0) * C * sizeof(float));
        }
        lam = 1.0 - (double)((y1 - y0) * (x1 - x0)) / (H * W);
    } else {
        const float l = (float)lam;
        for (int64_t b = 0; b < B; ++b) {
            const float* a = src + b * per;
            const float* other = src + (B - 1 - b) * per;
            float* out = x + b * per;
            for (int64_t i = 0; i < per; ++i) out[i] = a[i] * l + other[i] * (1 - l);
        }
    }
    const double off = o.label_smoothing / num_classes, on = 1.0 - o.label_smoothing + off;
    Tensor soft = zeros({B, num_classes});
    float* t = soft.data<float>();
    for (int64_t b = 0; b < B; ++b) {
        float* row = t + b * num_classes;
        for (int64_t c = 0; c < num_classes; ++c) row[c] = (float)off;
        row[labels[b]] += (float)(lam * (on - off));
        row[labels[B - 1 - b]] += (float)((1 - lam) * (on - off));
    }
    return soft;
}

}  // namespace cnx::train
