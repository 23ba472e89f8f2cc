#pragma once
// Training curves as a PNG with no plotting library: side-by-side panels (loss, accuracy,
// learning rate per epoch), each with axes, tick labels and a legend drawn in a 5x7 bitmap font.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::io {

struct CurveSeries {
    std::string label;
    std::vector<double> values;  // one per epoch; NaN entries are skipped
    std::array<uint8_t, 3> color;
};

struct CurvePanel {
    std::string title;
    std::vector<CurveSeries> series;
};

// Renders the panels left to right into an RGB image (width = 420 per panel, height 320).
std::vector<uint8_t> render_curves(const std::vector<CurvePanel>& panels, int& width, int& height);
void write_curves_png(const std::string& path, const std::vector<CurvePanel>& panels);

}  // namespace cnx::io
