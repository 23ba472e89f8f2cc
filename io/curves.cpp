#include "io/curves.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "io/png_writer.h"

namespace cnx::io {
namespace {

// 5x7 glyphs, one byte per column, bit 0 = top row. Upper case is drawn as lower case.
struct Glyph {
    char c;
    uint8_t col[5];
};
const Glyph kFont[] = {
    {'0', {0x3E, 0x51, 0x49, 0x45, 0x3E}}, {'1', {0x00, 0x42, 0x7F, 0x40, 0x00}}, {'2', {0x42, 0x61, 0x51, 0x49, 0x46}},
    {'3', {0x21, 0x41, 0x45, 0x4B, 0x31}}, {'4', {0x18, 0x14, 0x12, 0x7F, 0x10}}, {'5', {0x27, 0x45, 0x45, 0x45, 0x39}},
    {'6', {0x3C, 0x4A, 0x49, 0x49, 0x30}}, {'7', {0x01, 0x71, 0x09, 0x05, 0x03}}, {'8', {0x36, 0x49, 0x49, 0x49, 0x36}},
    {'9', {0x06, 0x49, 0x49, 0x29, 0x1E}}, {'a', {0x20, 0x54, 0x54, 0x54, 0x78}}, {'b', {0x7F, 0x48, 0x44, 0x44, 0x38}},
    {'c', {0x38, 0x44, 0x44, 0x44, 0x20}}, {'d', {0x38, 0x44, 0x44, 0x48, 0x7F}}, {'e', {0x38, 0x54, 0x54, 0x54, 0x18}},
    {'f', {0x08, 0x7E, 0x09, 0x01, 0x02}}, {'g', {0x0C, 0x52, 0x52, 0x52, 0x3E}}, {'h', {0x7F, 0x08, 0x04, 0x04, 0x78}},
    {'i', {0x00, 0x44, 0x7D, 0x40, 0x00}}, {'j', {0x20, 0x40, 0x44, 0x3D, 0x00}}, {'k', {0x7F, 0x10, 0x28, 0x44, 0x00}},
    {'l', {0x00, 0x41, 0x7F, 0x40, 0x00}}, {'m', {0x7C, 0x04, 0x18, 0x04, 0x78}}, {'n', {0x7C, 0x08, 0x04, 0x04, 0x78}},
    {'o', {0x38, 0x44, 0x44, 0x44, 0x38}}, {'p', {0x7C, 0x14, 0x14, 0x14, 0x08}}, {'q', {0x08, 0x14, 0x14, 0x18, 0x7C}},
    {'r', {0x7C, 0x08, 0x04, 0x04, 0x08}}, {'s', {0x48, 0x54, 0x54, 0x54, 0x20}}, {'t', {0x04, 0x3F, 0x44, 0x40, 0x20}},
    {'u', {0x3C, 0x40, 0x40, 0x20, 0x7C}}, {'v', {0x1C, 0x20, 0x40, 0x20, 0x1C}}, {'w', {0x3C, 0x40, 0x30, 0x40, 0x3C}},
    {'x', {0x44, 0x28, 0x10, 0x28, 0x44}}, {'y', {0x0C, 0x50, 0x50, 0x50, 0x3C}}, {'z', {0x44, 0x64, 0x54, 0x4C, 0x44}},
    {'.', {0x00, 0x60, 0x60, 0x00, 0x00}}, {'-', {0x08, 0x08, 0x08, 0x08, 0x08}}, {'+', {0x08, 0x08, 0x3E, 0x08, 0x08}},
    {':', {0x00, 0x36, 0x36, 0x00, 0x00}}, {'%', {0x23, 0x13, 0x08, 0x64, 0x62}}, {'(', {0x00, 0x1C, 0x22, 0x41, 0x00}},
    {')', {0x00, 0x41, 0x22, 0x1C, 0x00}}, {'/', {0x20, 0x10, 0x08, 0x04, 0x02}}, {'_', {0x40, 0x40, 0x40, 0x40, 0x40}},
    {'=', {0x14, 0x14, 0x14, 0x14, 0x14}}, {',', {0x00, 0x50, 0x30, 0x00, 0x00}},
};

struct Canvas {
    int w, h;
    std::vector<uint8_t> px;
    Canvas(int w_, int h_) : w(w_), h(h_), px((size_t)w_ * h_ * 3, 255) {}
    void set(int x, int y, std::array<uint8_t, 3> c) {
        if (x < 0 || y < 0 || x >= w || y >= h) return;
        uint8_t* p = &px[((size_t)y * w + x) * 3];
        p[0] = c[0], p[1] = c[1], p[2] = c[2];
    }
    void line(double x0, double y0, double x1, double y1, std::array<uint8_t, 3> c, int thick = 1) {
        int steps = (int)std::max(std::fabs(x1 - x0), std::fabs(y1 - y0)) + 1;
        for (int i = 0; i <= steps; ++i) {
            double t = (double)i / steps;
            int x = (int)std::lround(x0 + t * (x1 - x0)), y = (int)std::lround(y0 + t * (y1 - y0));
            for (int dy = 0; dy < thick; ++dy)
                for (int dx = 0; dx < thick; ++dx) set(x + dx, y + dy, c);
        }
    }
    void text(int x, int y, const std::string& s, std::array<uint8_t, 3> c) {
        for (char ch : s) {
            char lc = (char)std::tolower((unsigned char)ch);
            for (const Glyph& g : kFont)
                if (g.c == lc)
                    for (int col = 0; col < 5; ++col)
                        for (int row = 0; row < 7; ++row)
                            if (g.col[col] >> row & 1) set(x + col, y + row, c);
            x += 6;
        }
    }
};

std::string tick_label(double v, double span) {
    char buf[32];
    if (v != 0 && (std::fabs(v) < 1e-2 || std::fabs(v) >= 1e4))
        std::snprintf(buf, sizeof buf, "%.1e", v);
    else if (span < 0.05)
        std::snprintf(buf, sizeof buf, "%.4f", v);
    else
        std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
}

void draw_panel(Canvas& cv, int ox, const CurvePanel& panel) {
    const int left = ox + 62, right = ox + 405, top = 28, bottom = 280;
    const std::array<uint8_t, 3> black{0, 0, 0}, grey{215, 215, 215};
    cv.text(ox + 210 - (int)panel.title.size() * 3, 10, panel.title, black);
    double lo = INFINITY, hi = -INFINITY;
    size_t n = 0;
    for (auto& s : panel.series) {
        n = std::max(n, s.values.size());
        for (double v : s.values)
            if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) lo -= 0.5 * std::max(std::fabs(lo), 1e-3), hi += 0.5 * std::max(std::fabs(hi), 1e-3);
    double pad = (hi - lo) * 0.05;
    bool nonneg = lo >= 0;
    lo -= pad, hi += pad;
    if (nonneg && lo < 0) lo = 0;  // losses, accuracies and rates never go below zero
    auto ymap = [&](double v) { return bottom - (v - lo) / (hi - lo) * (bottom - top); };
    double xs = n > 1 ? (double)(right - left) / (n - 1) : 0;
    auto xmap = [&](size_t i) { return n > 1 ? left + i * xs : (left + right) / 2.0; };
    for (int k = 0; k <= 4; ++k) {
        double v = lo + (hi - lo) * k / 4;
        double y = ymap(v);
        cv.line(left, y, right, y, grey);
        std::string lab = tick_label(v, hi - lo);
        cv.text(left - 6 - (int)lab.size() * 6, (int)y - 3, lab, black);
    }
    size_t every = std::max<size_t>(1, (n + 9) / 10);
    for (size_t i = 0; i < n; i += every) {
        double x = xmap(i);
        cv.line(x, bottom, x, bottom + 3, black);
        std::string lab = std::to_string(i + 1);
        cv.text((int)x - (int)lab.size() * 3, bottom + 6, lab, black);
    }
    cv.text((left + right) / 2 - 15, bottom + 18, "epoch", black);
    cv.line(left, top, left, bottom, black);
    cv.line(left, bottom, right, bottom, black);
    int ly = top + 4;
    for (auto& s : panel.series) {
        bool have_prev = false;
        double px = 0, py = 0;
        for (size_t i = 0; i < s.values.size(); ++i) {
            if (!std::isfinite(s.values[i])) {
                have_prev = false;
                continue;
            }
            double x = xmap(i), y = ymap(s.values[i]);
            if (have_prev) cv.line(px, py, x, y, s.color, 2);
            for (int d = -2; d <= 2; ++d) cv.line(x - 2, y + d, x + 2, y + d, s.color);
            px = x, py = y, have_prev = true;
        }
        cv.line(right - 95, ly + 3, right - 80, ly + 3, s.color, 2);
        cv.text(right - 75, ly, s.label, black);
        ly += 11;
    }
}

}  // namespace

std::vector<uint8_t> render_curves(const std::vector<CurvePanel>& panels, int& width, int& height) {
    width = 420 * (int)std::max<size_t>(1, panels.size());
    height = 310;
    Canvas cv(width, height);
    for (size_t i = 0; i < panels.size(); ++i) draw_panel(cv, 420 * (int)i, panels[i]);
    return cv.px;
}

void write_curves_png(const std::string& path, const std::vector<CurvePanel>& panels) {
    int w, h;
    auto px = render_curves(panels, w, h);
    write_png(path, px.data(), w, h, 3);
}

}  // namespace cnx::io
