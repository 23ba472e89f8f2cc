#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace cnx::data {
namespace {

// A read-only HWC image: the uint8 pixels of an Image or the floats of a tensor.
struct Src {
    const uint8_t* u8 = nullptr;
    const float* f32 = nullptr;
    int64_t h = 0, w = 0, c = 0;
};

Src src_of(const Image& img) {
    CNX_CHECK(img.height > 0 && img.width > 0 && img.channels > 0 &&
                  (int64_t)img.pixels.size() == img.height * img.width * img.channels,
              "transform: malformed image ", img.height, "x", img.width, "x", img.channels);
    return {img.pixels.data(), nullptr, img.height, img.width, img.channels};
}

Src src_of(const Tensor& t) {
    CNX_CHECK(t.defined() && t.dim() == 3 && t.dtype() == DType::F32,
              "transform: expected a float32 [H, W, C] image, got ", t.defined() ? t.str() : std::string("undefined"));
    CNX_CHECK(t.numel() > 0, "transform: empty image ", t.str());
    return {nullptr, t.data<float>(), t.size(0), t.size(1), t.size(2)};
}

inline float load(const uint8_t* p) { return *p / 255.0f; }
inline float load(const float* p) { return *p; }

// Source taps for each output position along one axis. `region` is the part of the source
// being resized to `resized` samples; only resized positions [window, window + n) are produced
// (positions outside [0, resized) are padding). Index arithmetic is PyTorch's, in float.
struct Axis {
    std::vector<int64_t> i0, i1;
    std::vector<float> w0, w1;
    std::vector<char> valid;
};

Axis axis_taps(int64_t region_start, int64_t region_len, int64_t resized, int64_t window, int64_t n) {
    Axis a;
    a.i0.resize(n); a.i1.resize(n); a.w0.resize(n); a.w1.resize(n); a.valid.resize(n);
    const float scale = (float)region_len / (float)resized;
    for (int64_t d = 0; d < n; ++d) {
        int64_t r = window + d;
        a.valid[d] = r >= 0 && r < resized;
        if (!a.valid[d]) continue;
        float s = scale * ((float)r + 0.5f) - 0.5f;
        if (s < 0) s = 0;
        int64_t i = std::min<int64_t>((int64_t)s, region_len - 1);
        float l1 = std::min(std::max(s - (float)i, 0.0f), 1.0f);
        a.i0[d] = region_start + i;
        a.i1[d] = region_start + i + (i < region_len - 1 ? 1 : 0);
        a.w1[d] = l1;
        a.w0[d] = 1.0f - l1;
    }
    return a;
}

template <class S>
void resample_kernel(const S* src, int64_t W, int64_t C, const Axis& ay, const Axis& ax, float* out) {
    const int64_t oh = (int64_t)ay.valid.size(), ow = (int64_t)ax.valid.size();
    for (int64_t y = 0; y < oh; ++y) {
        float* orow = out + y * ow * C;
        if (!ay.valid[y]) {
            std::fill(orow, orow + ow * C, 0.0f);
            continue;
        }
        const S* r0 = src + ay.i0[y] * W * C;
        const S* r1 = src + ay.i1[y] * W * C;
        const float wy0 = ay.w0[y], wy1 = ay.w1[y];
        for (int64_t x = 0; x < ow; ++x) {
            float* o = orow + x * C;
            if (!ax.valid[x]) {
                std::fill(o, o + C, 0.0f);
                continue;
            }
            const int64_t x0 = ax.i0[x] * C, x1 = ax.i1[x] * C;
            const float wx0 = ax.w0[x], wx1 = ax.w1[x];
            for (int64_t c = 0; c < C; ++c) {
                // Same association as PyTorch's separable kernel: along W first, then H.
                float top = load(r0 + x0 + c) * wx0 + load(r0 + x1 + c) * wx1;
                float bot = load(r1 + x0 + c) * wx0 + load(r1 + x1 + c) * wx1;
                o[c] = top * wy0 + bot * wy1;
            }
        }
    }
}

// Resizes `region` of the source to resized_h x resized_w and returns the window `win` of it.
Tensor resample(const Src& s, const Box& region, int64_t resized_h, int64_t resized_w, const Box& win) {
    CNX_CHECK(region.height > 0 && region.width > 0 && region.top >= 0 && region.left >= 0 &&
                  region.top + region.height <= s.h && region.left + region.width <= s.w,
              "resize: crop box (top ", region.top, ", left ", region.left, ", ", region.height, "x", region.width,
              ") outside the ", s.h, "x", s.w, " image");
    CNX_CHECK(resized_h > 0 && resized_w > 0 && win.height > 0 && win.width > 0, "resize: invalid output size ",
              resized_h, "x", resized_w, " (window ", win.height, "x", win.width, ")");
    Axis ay = axis_taps(region.top, region.height, resized_h, win.top, win.height);
    Axis ax = axis_taps(region.left, region.width, resized_w, win.left, win.width);
    Tensor out = Tensor::empty({win.height, win.width, s.c});
    if (s.u8) resample_kernel(s.u8, s.w, s.c, ay, ax, out.data<float>());
    else resample_kernel(s.f32, s.w, s.c, ay, ax, out.data<float>());
    return out;
}

Tensor resize_impl(const Src& s, int64_t oh, int64_t ow) {
    return resample(s, {0, 0, s.h, s.w}, oh, ow, {0, 0, oh, ow});
}
Tensor resize_shorter_impl(const Src& s, int64_t size) {
    auto [oh, ow] = resize_shorter_size(s.h, s.w, size);
    return resize_impl(s, oh, ow);
}
Tensor resize_center_crop_impl(const Src& s, int64_t resize, int64_t crop) {
    CNX_CHECK(crop > 0, "center_crop: crop size must be positive, got ", crop);
    auto [rh, rw] = resize_shorter_size(s.h, s.w, resize);
    return resample(s, {0, 0, s.h, s.w}, rh, rw, center_crop_box(rh, rw, crop, crop));
}

}  // namespace

int64_t round_half_even(double x) { return (int64_t)std::nearbyint(x); }

std::pair<int64_t, int64_t> resize_shorter_size(int64_t height, int64_t width, int64_t size) {
    CNX_CHECK(size > 0 && height > 0 && width > 0, "resize: invalid size ", size, " for a ", height, "x", width,
              " image");
    int64_t shorter = std::min(height, width), longer = std::max(height, width);
    int64_t new_long = (int64_t)((double)(size * longer) / (double)shorter);
    new_long = std::max<int64_t>(new_long, 1);
    return width <= height ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

Box center_crop_box(int64_t height, int64_t width, int64_t crop_h, int64_t crop_w) {
    return {round_half_even((height - crop_h) / 2.0), round_half_even((width - crop_w) / 2.0), crop_h, crop_w};
}

Box random_resized_crop_box(int64_t height, int64_t width, Generator& gen, double scale_lo, double scale_hi,
                            double ratio_lo, double ratio_hi) {
    CNX_CHECK(height > 0 && width > 0, "random_resized_crop: empty image ", height, "x", width);
    CNX_CHECK(scale_lo > 0 && scale_lo <= scale_hi && ratio_lo > 0 && ratio_lo <= ratio_hi,
              "random_resized_crop: invalid scale (", scale_lo, ", ", scale_hi, ") or ratio (", ratio_lo, ", ",
              ratio_hi, ")");
    const double area = (double)height * (double)width;
    const double log_lo = std::log(ratio_lo), log_hi = std::log(ratio_hi);
    for (int attempt = 0; attempt < 10; ++attempt) {
        double target_area = area * gen.uniform(scale_lo, scale_hi);
        double aspect = std::exp(gen.uniform(log_lo, log_hi));
        int64_t w = round_half_even(std::sqrt(target_area * aspect));
        int64_t h = round_half_even(std::sqrt(target_area / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            int64_t top = (int64_t)gen.randint(height - h + 1);
            int64_t left = (int64_t)gen.randint(width - w + 1);
            return {top, left, h, w};
        }
    }
    double in_ratio = (double)width / (double)height;
    int64_t w = width, h = height;
    if (in_ratio < ratio_lo) {
        h = std::clamp<int64_t>(round_half_even(w / ratio_lo), 1, height);
    } else if (in_ratio > ratio_hi) {
        w = std::clamp<int64_t>(round_half_even(h * ratio_hi), 1, width);
    }
    return {(height - h) / 2, (width - w) / 2, h, w};
}

int64_t eval_resize_size(int64_t image_size, double crop_pct) {
    CNX_CHECK(image_size > 0 && crop_pct > 0 && crop_pct <= 1, "eval transform: invalid image_size ", image_size,
              " or crop_pct ", crop_pct);
    return (int64_t)std::floor(image_size / crop_pct);
}

Tensor resize(const Image& img, int64_t oh, int64_t ow) { return resize_impl(src_of(img), oh, ow); }
Tensor resize(const Tensor& img, int64_t oh, int64_t ow) { return resize_impl(src_of(img), oh, ow); }
Tensor resize_shorter(const Image& img, int64_t size) { return resize_shorter_impl(src_of(img), size); }
Tensor resize_shorter(const Tensor& img, int64_t size) { return resize_shorter_impl(src_of(img), size); }
Tensor resized_crop(const Image& img, const Box& box, int64_t oh, int64_t ow) {
    return resample(src_of(img), box, oh, ow, {0, 0, oh, ow});
}
Tensor resized_crop(const Tensor& img, const Box& box, int64_t oh, int64_t ow) {
    return resample(src_of(img), box, oh, ow, {0, 0, oh, ow});
}
Tensor resize_center_crop(const Image& img, int64_t resize, int64_t crop) {
    return resize_center_crop_impl(src_of(img), resize, crop);
}
Tensor resize_center_crop(const Tensor& img, int64_t resize, int64_t crop) {
    return resize_center_crop_impl(src_of(img), resize, crop);
}

Tensor crop(const Tensor& img, const Box& box) {
    Src s = src_of(img);
    CNX_CHECK(box.height > 0 && box.width > 0, "crop: empty box ", box.height, "x", box.width);
    Tensor out = zeros({box.height, box.width, s.c});
    float* o = out.data<float>();
    int64_t y_lo = std::max<int64_t>(0, -box.top), y_hi = std::min(box.height, s.h - box.top);
    int64_t x_lo = std::max<int64_t>(0, -box.left), x_hi = std::min(box.width, s.w - box.left);
    for (int64_t y = y_lo; y < y_hi; ++y)
        if (x_hi > x_lo)
            std::memcpy(o + (y * box.width + x_lo) * s.c, s.f32 + ((box.top + y) * s.w + box.left + x_lo) * s.c,
                        (x_hi - x_lo) * s.c * sizeof(float));
    return out;
}

Tensor center_crop(const Tensor& img, int64_t crop_h, int64_t crop_w) {
    Src s = src_of(img);
    return crop(img, center_crop_box(s.h, s.w, crop_h, crop_w));
}

void hflip_(Tensor& img) {
    Src s = src_of(img);
    float* p = img.data<float>();
    for (int64_t y = 0; y < s.h; ++y) {
        float* row = p + y * s.w * s.c;
        for (int64_t a = 0, b = s.w - 1; a < b; ++a, --b)
            for (int64_t c = 0; c < s.c; ++c) std::swap(row[a * s.c + c], row[b * s.c + c]);
    }
}

Tensor hflip(const Tensor& img) {
    Tensor out = img.clone();
    hflip_(out);
    return out;
}

void normalize_(Tensor& img, const std::vector<float>& mean, const std::vector<float>& std) {
    Src s = src_of(img);
    auto fits = [&](const std::vector<float>& v) { return v.size() == 1 || (int64_t)v.size() == s.c; };
    CNX_CHECK(fits(mean) && fits(std), "normalize: ", mean.size(), " means and ", std.size(), " stds for an image with ",
              s.c, " channels");
    for (float v : std) CNX_CHECK(v != 0.0f, "normalize: std must be non-zero");
    std::vector<float> m(s.c), sd(s.c);
    for (int64_t c = 0; c < s.c; ++c) {
        m[c] = mean.size() == 1 ? mean[0] : mean[c];
        sd[c] = std.size() == 1 ? std[0] : std[c];
    }
    float* p = img.data<float>();
    const int64_t n = s.h * s.w;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < s.c; ++c) p[i * s.c + c] = (p[i * s.c + c] - m[c]) / sd[c];
}

Tensor pad(const Tensor& img, int64_t padding, float value) {
    Src s = src_of(img);
    CNX_CHECK(padding >= 0, "pad: negative padding ", padding);
    const int64_t H = s.h + 2 * padding, W = s.w + 2 * padding;
    Tensor out = full({H, W, s.c}, value);
    float* o = out.data<float>();
    for (int64_t y = 0; y < s.h; ++y)
        std::memcpy(o + ((y + padding) * W + padding) * s.c, s.f32 + y * s.w * s.c, s.w * s.c * sizeof(float));
    return out;
}

Tensor to_channels(const Tensor& img, int64_t channels) {
    Src s = src_of(img);
    if (s.c == channels) return img;
    const int64_t n = s.h * s.w;
    if (s.c == 1 && channels == 3) {
        Tensor out = Tensor::empty({s.h, s.w, 3});
        float* o = out.data<float>();
        for (int64_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = s.f32[i];
        return out;
    }
    if (s.c == 3 && channels == 1) {
        Tensor out = Tensor::empty({s.h, s.w, 1});
        float* o = out.data<float>();
        for (int64_t i = 0; i < n; ++i)
            o[i] = 0.2989f * s.f32[3 * i] + 0.587f * s.f32[3 * i + 1] + 0.114f * s.f32[3 * i + 2];
        return out;
    }
    fail("to_channels: cannot convert ", s.c, " channels to ", channels);
}

Transform train_transform(const TrainTransformOptions& o) {
    CNX_CHECK(o.image_size > 0, "train transform: image_size must be positive, got ", o.image_size);
    return [o](const Image& img, Generator& gen) {
        Box box = random_resized_crop_box(img.height, img.width, gen, o.scale_lo, o.scale_hi, o.ratio_lo, o.ratio_hi);
        Tensor t = resized_crop(img, box, o.image_size, o.image_size);
        if (o.hflip_prob > 0 && gen.uniform() < o.hflip_prob) hflip_(t);
        normalize_(t, o.mean, o.std);
        return t;
    };
}

Transform eval_transform(int64_t image_size, double crop_pct, const std::vector<float>& mean,
                         const std::vector<float>& std) {
    const int64_t resize_to = eval_resize_size(image_size, crop_pct);
    return [=](const Image& img, Generator&) {
        Tensor t = resize_center_crop(img, resize_to, image_size);
        normalize_(t, mean, std);
        return t;
    };
}

}  // namespace cnx::data
