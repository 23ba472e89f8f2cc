#pragma once
// An 8-bit RGB picture to draw plots on: filled rectangles, text (viz/font.h), pasted images,
// colour maps; written through io/png_writer.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cnx::viz {

using Rgb = std::array<uint8_t, 3>;

constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGrey{128, 128, 128};
constexpr Rgb kGreen{0, 140, 0}, kRed{200, 0, 0};

// Matplotlib-like colour maps over t in [0, 1] (clamped): jet (dark blue, cyan, yellow, red, dark
// red; OpenCV's COLORMAP_JET, which pytorch-grad-cam uses) and a white-to-dark-blue ramp
// (a "Blues" for confusion matrices).
Rgb jet(float t);
Rgb blues(float t);
// Black or white, whichever reads better on `background`.
Rgb text_color_on(Rgb background);

enum class Align { Left, Center, Right };

class Canvas {
public:
    Canvas(int width, int height, Rgb background = kWhite);
    // Wraps existing pixels (row-major RGB, width x height x 3).
    Canvas(int width, int height, std::vector<uint8_t> rgb);

    int width() const { return w_; }
    int height() const { return h_; }
    const std::vector<uint8_t>& pixels() const { return px_; }
    Rgb at(int x, int y) const;  // throws outside

    // Drawing clips to the canvas.
    void fill_rect(int x, int y, int w, int h, Rgb color);
    void outline_rect(int x, int y, int w, int h, Rgb color);
    void paste(const Canvas& picture, int x, int y);
    // One line of text at `size` px (ascent + descent). `x` is its left edge, centre or right
    // edge by `align`; `y` the top of the line. Returns the width drawn.
    int text(int x, int y, const std::string& utf8, float size, Rgb color, Align align = Align::Left);
    // The same, turned 90 degrees counter-clockwise (read bottom to top): `x` is the left edge of
    // the turned line, `y` its bottom end (Align::Left), middle or top end.
    int text_up(int x, int y, const std::string& utf8, float size, Rgb color, Align align = Align::Left);
    // Text cut to `max_width` px with a trailing ".." when longer.
    static std::string fit_text(const std::string& utf8, float size, int max_width);

    void write_png(const std::string& path) const;
    // The picture as a float image [height, width, 3] in [0, 1] (image_canvas's inverse).
    Tensor to_tensor() const;

private:
    int w_, h_;
    std::vector<uint8_t> px_;
    void blend(int x, int y, Rgb color, uint8_t alpha);
};

// A float image [H, W, 1 or 3] with values in [0, 1] (clamped), scaled bilinearly to
// width x height first when those are given (> 0). Grey becomes grey RGB.
Canvas image_canvas(const Tensor& hwc, int width = 0, int height = 0);

}  // namespace cnx::viz
