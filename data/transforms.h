#pragma once
// Image transforms producing float [H, W, C] tensors (one NHWC sample), with torchvision's size
// and rounding rules so a model trained here sees the same crops as one trained with timm or
// torchvision. Inputs are uint8 Images (scaled to [0, 1] on the fly, like ToTensor) or float
// [H, W, C] tensors.
//
// Resampling is bilinear with half-pixel centres, exactly torch.nn.functional.interpolate(
// mode='bilinear', align_corners=False, antialias=False) on float input. It is NOT antialiased:
// shrinking by more than 2x aliases, unlike PIL's resize (torchvision on PIL images) which
// filters. Crop + resize steps are fused into one pass, so no intermediate image is allocated.
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/image.h"

namespace cnx::data {

inline const std::vector<float> kImageNetMean{0.485f, 0.456f, 0.406f};
inline const std::vector<float> kImageNetStd{0.229f, 0.224f, 0.225f};
constexpr float kFashionMnistMean = 0.2860f;
constexpr float kFashionMnistStd = 0.3530f;

// A rectangle in pixels. Crops may extend past the image (CenterCrop of a small image); the
// part outside reads as zero.
struct Box {
    int64_t top = 0, left = 0, height = 0, width = 0;
};

// Python's round(): half to even.
int64_t round_half_even(double x);

// Resize(size) with an int: the shorter side becomes `size`, the longer int(size * long / short).
// Returns {height, width}.
std::pair<int64_t, int64_t> resize_shorter_size(int64_t height, int64_t width, int64_t size);
// CenterCrop offsets: top = int(round((height - crop_h) / 2)), same for left.
Box center_crop_box(int64_t height, int64_t width, int64_t crop_h, int64_t crop_w);
// RandomResizedCrop.get_params: 10 tries of area in `scale` and log-uniform aspect ratio in
// `ratio`, then the centre-crop fallback clamped to `ratio`. The box is always inside the image.
Box random_resized_crop_box(int64_t height, int64_t width, Generator& gen, double scale_lo = 0.08,
                            double scale_hi = 1.0, double ratio_lo = 3.0 / 4.0, double ratio_hi = 4.0 / 3.0);
// timm's eval resize: int(image_size / crop_pct) (224 / 0.875 = 256).
int64_t eval_resize_size(int64_t image_size, double crop_pct);

// Bilinear resampling (see the header comment).
Tensor resize(const Image& img, int64_t out_h, int64_t out_w);
Tensor resize(const Tensor& img, int64_t out_h, int64_t out_w);
Tensor resize_shorter(const Image& img, int64_t size);
Tensor resize_shorter(const Tensor& img, int64_t size);
// crop(box) then resize to out_h x out_w; the box must lie inside the image.
Tensor resized_crop(const Image& img, const Box& box, int64_t out_h, int64_t out_w);
Tensor resized_crop(const Tensor& img, const Box& box, int64_t out_h, int64_t out_w);
// center_crop(resize_shorter(img, resize), crop, crop) in one pass.
Tensor resize_center_crop(const Image& img, int64_t resize, int64_t crop);
Tensor resize_center_crop(const Tensor& img, int64_t resize, int64_t crop);

// Geometry and value transforms on float [H, W, C].
Tensor crop(const Tensor& img, const Box& box);  // zero outside the image
Tensor center_crop(const Tensor& img, int64_t crop_h, int64_t crop_w);
Tensor hflip(const Tensor& img);
void hflip_(Tensor& img);
// (x - mean[c]) / std[c]; one value broadcasts over every channel.
void normalize_(Tensor& img, const std::vector<float>& mean, const std::vector<float>& std);
Tensor pad(const Tensor& img, int64_t padding, float value = 0.0f);  // same padding on all four sides
// 1 -> 3 replicates; 3 -> 1 is torchvision's rgb_to_grayscale (0.2989 R + 0.587 G + 0.114 B).
Tensor to_channels(const Tensor& img, int64_t channels);

// Whole pipelines: decoded image + the sample's generator -> normalised float [S, S, C].
using Transform = std::function<Tensor(const Image&, Generator&)>;

struct TrainTransformOptions {
    int64_t image_size = 224;
    double scale_lo = 0.08, scale_hi = 1.0;
    double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
    double hflip_prob = 0.5;
    std::vector<float> mean = kImageNetMean, std = kImageNetStd;
};
// RandomResizedCrop(image_size) + RandomHorizontalFlip + Normalize.
Transform train_transform(const TrainTransformOptions& opts = {});
// Resize(int(image_size / crop_pct)) + CenterCrop(image_size) + Normalize.
Transform eval_transform(int64_t image_size = 224, double crop_pct = 0.875,
                         const std::vector<float>& mean = kImageNetMean, const std::vector<float>& std = kImageNetStd);

}  // namespace cnx::data
