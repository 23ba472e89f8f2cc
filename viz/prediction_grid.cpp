#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "viz/font.h"
#include "viz/plots.h"

namespace cnx::viz {

PredictionGrid prediction_grid(const std::vector<GridItem>& items, int tile, int cols) {
    const int n = (int)items.size();
    CNX_CHECK(n > 0, "prediction_grid: no images");
    GridLayout L;
    int largest = 0;
    for (const auto& it : items) {
        CNX_CHECK(it.crop.dim() == 3, "prediction_grid: expected an image [H, W, C], got ", it.crop.str());
        largest = (int)std::max<int64_t>(largest, std::max(it.crop.size(0), it.crop.size(1)));
    }
    L.tile = tile > 0 ? tile : std::max(128, largest);
    L.cols = cols > 0 ? std::min(cols, n) : std::min(8, (int)std::ceil(std::sqrt((double)n)));
    L.rows = (n + L.cols - 1) / L.cols;
    L.margin = 10, L.pad = 6, L.caption_size = 13;
    bool any_truth = false;
    for (const auto& it : items) any_truth = any_truth || !it.truth.empty();
    const int line_h = L.caption_size + 4, lines = any_truth ? 2 : 1;
    L.cell_w = std::max(L.tile + 2 * L.pad, 110);
    L.cell_h = L.pad + L.tile + 4 + lines * line_h + L.pad;
    Canvas cv(2 * L.margin + L.cols * L.cell_w, 2 * L.margin + L.rows * L.cell_h);
    // Tiles are centred in cells wider than them.
    L.pad_x = (L.cell_w - L.tile) / 2;
    char prob[32];
    for (int i = 0; i < n; ++i) {
        const GridItem& it = items[i];
        const int x = L.tile_x(i), y = L.tile_y(i);
        cv.paste(image_canvas(it.crop, L.tile, L.tile), x, y);
        const Rgb color = it.truth.empty() ? kBlack : it.truth == it.predicted ? kGreen : kRed;
        std::snprintf(prob, sizeof prob, " %.1f%%", 100 * it.prob);
        const int room = L.cell_w - 4;
        const std::string head = Canvas::fit_text(it.predicted, (float)L.caption_size,
                                                  room - Font::active().text_width(prob, (float)L.caption_size));
        cv.text(x + L.tile / 2, L.caption_y(i), head + prob, (float)L.caption_size, color, Align::Center);
        if (!it.truth.empty())
            cv.text(x + L.tile / 2, L.caption_y(i) + line_h,
                    Canvas::fit_text("true: " + it.truth, (float)L.caption_size, room), (float)L.caption_size, color,
                    Align::Center);
    }
    return {std::move(cv), L};
}

}  // namespace cnx::viz
