#include "viz/canvas.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/transforms.h"
#include "io/png_writer.h"
#include "viz/font.h"

namespace cnx::viz {
namespace {

uint8_t unit_to_byte(float v) { return (uint8_t)std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f); }

// matplotlib's "Blues" at nine evenly spaced stops.
const Rgb kBluesStops[] = {{247, 251, 255}, {222, 235, 247}, {198, 219, 239}, {158, 202, 225}, {107, 174, 214},
                           {66, 146, 198},  {33, 113, 181},  {8, 81, 156},    {8, 48, 107}};

}  // namespace

Rgb jet(float t) {
    t = std::isfinite(t) ? std::clamp(t, 0.0f, 1.0f) : 0.0f;
    return {unit_to_byte(1.5f - std::fabs(4 * t - 3)), unit_to_byte(1.5f - std::fabs(4 * t - 2)),
            unit_to_byte(1.5f - std::fabs(4 * t - 1))};
}

Rgb blues(float t) {
    t = std::isfinite(t) ? std::clamp(t, 0.0f, 1.0f) : 0.0f;
    const float pos = t * 8;
    const int i = std::min(7, (int)pos);
    const float f = pos - i;
    Rgb out;
    for (int c = 0; c < 3; ++c)
        out[c] = (uint8_t)std::lround(kBluesStops[i][c] * (1 - f) + kBluesStops[i + 1][c] * f);
    return out;
}

Rgb text_color_on(Rgb bg) { return 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 ? kBlack : kWhite; }

Canvas::Canvas(int width, int height, Rgb background) : w_(width), h_(height) {
    CNX_CHECK(width > 0 && height > 0 && (int64_t)width * height <= (int64_t)1 << 28, "canvas: bad size ", width,
              "x", height);
    px_.resize((size_t)width * height * 3);
    for (size_t i = 0; i < px_.size(); i += 3) px_[i] = background[0], px_[i + 1] = background[1], px_[i + 2] = background[2];
}

Canvas::Canvas(int width, int height, std::vector<uint8_t> rgb) : w_(width), h_(height), px_(std::move(rgb)) {
    CNX_CHECK(width > 0 && height > 0 && px_.size() == (size_t)width * height * 3, "canvas: ", px_.size(),
              " bytes for a ", width, "x", height, " RGB picture");
}

Rgb Canvas::at(int x, int y) const {
    CNX_CHECK(x >= 0 && y >= 0 && x < w_ && y < h_, "canvas: pixel (", x, ", ", y, ") outside ", w_, "x", h_);
    const uint8_t* p = &px_[((size_t)y * w_ + x) * 3];
    return {p[0], p[1], p[2]};
}

void Canvas::fill_rect(int x, int y, int w, int h, Rgb c) {
    const int x0 = std::max(0, x), y0 = std::max(0, y), x1 = std::min(w_, x + w), y1 = std::min(h_, y + h);
    for (int yy = y0; yy < y1; ++yy)
        for (int xx = x0; xx < x1; ++xx) {
            uint8_t* p = &px_[((size_t)yy * w_ + xx) * 3];
            p[0] = c[0], p[1] = c[1], p[2] = c[2];
        }
}

void Canvas::outline_rect(int x, int y, int w, int h, Rgb c) {
    fill_rect(x, y, w, 1, c);
    fill_rect(x, y + h - 1, w, 1, c);
    fill_rect(x, y, 1, h, c);
    fill_rect(x + w - 1, y, 1, h, c);
}

void Canvas::paste(const Canvas& pic, int x, int y) {
    for (int yy = std::max(0, -y); yy < pic.h_ && y + yy < h_; ++yy)
        for (int xx = std::max(0, -x); xx < pic.w_ && x + xx < w_; ++xx) {
            const uint8_t* s = &pic.px_[((size_t)yy * pic.w_ + xx) * 3];
            uint8_t* d = &px_[((size_t)(y + yy) * w_ + x + xx) * 3];
            d[0] = s[0], d[1] = s[1], d[2] = s[2];
        }
}

void Canvas::blend(int x, int y, Rgb c, uint8_t alpha) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_ || alpha == 0) return;
    uint8_t* p = &px_[((size_t)y * w_ + x) * 3];
    for (int k = 0; k < 3; ++k) p[k] = (uint8_t)((p[k] * (255 - alpha) + c[k] * alpha + 127) / 255);
}

int Canvas::text(int x, int y, const std::string& s, float size, Rgb color, Align align) {
    TextMask m = Font::active().render(s, size);
    const int left = align == Align::Left ? x : align == Align::Center ? x - m.width / 2 : x - m.width;
    for (int yy = 0; yy < m.height; ++yy)
        for (int xx = 0; xx < m.width; ++xx) blend(left + xx, y + yy, color, m.alpha[(size_t)yy * m.width + xx]);
    return m.width;
}

int Canvas::text_up(int x, int y, const std::string& s, float size, Rgb color, Align align) {
    TextMask m = Font::active().render(s, size);
    const int bottom = align == Align::Left ? y : align == Align::Center ? y + m.width / 2 : y + m.width;
    // Mask column c lands on row bottom - c; mask row r on column x + r.
    for (int r = 0; r < m.height; ++r)
        for (int c = 0; c < m.width; ++c) blend(x + r, bottom - c, color, m.alpha[(size_t)r * m.width + c]);
    return m.width;
}

std::string Canvas::fit_text(const std::string& s, float size, int max_width) {
    const Font& f = Font::active();
    if (f.text_width(s, size) <= max_width) return s;
    std::string cut = s;
    while (!cut.empty()) {
        while (!cut.empty()) {  // one whole UTF-8 character: its continuation bytes, then its lead
            const unsigned char c = (unsigned char)cut.back();
            cut.pop_back();
            if ((c >> 6) != 2) break;
        }
        if (f.text_width(cut + "..", size) <= max_width) return cut + "..";
    }
    return "";
}

void Canvas::write_png(const std::string& path) const { io::write_png(path, px_.data(), w_, h_, 3); }

Tensor Canvas::to_tensor() const {
    Tensor t = Tensor::empty({h_, w_, 3});
    float* p = t.data<float>();
    for (size_t i = 0; i < px_.size(); ++i) p[i] = px_[i] / 255.0f;
    return t;
}

Canvas image_canvas(const Tensor& hwc, int width, int height) {
    CNX_CHECK(hwc.dim() == 3 && (hwc.size(2) == 1 || hwc.size(2) == 3), "image_canvas: expected an image [H, W, 1 or 3], got ",
              hwc.str());
    Tensor img = hwc.dtype() == DType::F32 ? hwc : hwc.to(DType::F32);
    if (width > 0 && height > 0 && (width != img.size(1) || height != img.size(0))) img = data::resize(img, height, width);
    const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
    const float* p = img.data<float>();
    std::vector<uint8_t> rgb((size_t)H * W * 3);
    for (int64_t i = 0; i < H * W; ++i)
        for (int k = 0; k < 3; ++k) rgb[i * 3 + k] = unit_to_byte(p[i * C + (C == 3 ? k : 0)]);
    return Canvas((int)W, (int)H, std::move(rgb));
}

}  // namespace cnx::viz
