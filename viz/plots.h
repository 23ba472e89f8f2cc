#pragma once
// The pictures of `convnext eval --plot` and `convnext predict --grid`. Each returns the canvas
// and where it put things (tests and callers can find a cell, a bar or a caption).
//
//   auto plot = viz::confusion_plot(r.confusion, r.per_class_acc, class_names, "top-1 0.912");
//   plot.canvas.write_png("confusion.png");
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "viz/canvas.h"

namespace cnx::viz {

// The confusion matrix, rows (true class) normalised to fractions and coloured white to dark
// blue, the counts written in the cells, class names on both axes (predicted ones turned
// upright below the matrix), and beside it a bar per row: that class's accuracy.
struct ConfusionLayout {
    int cell = 0;                   // side of one matrix cell
    int matrix_x = 0, matrix_y = 0;  // top-left corner of cell (0, 0); cell (t, p) is row t, column p
    int bars_x = 0, bar_length = 0;  // where the bars start, and the length of 100%
    int bar_inset = 0;              // a bar spans its row's height minus this at top and bottom
    bool counts = false, labels = false;  // whether cells carry counts, axes carry names (size permitting)
};
struct ConfusionPlot {
    Canvas canvas;
    ConfusionLayout layout;
};
constexpr Rgb kBarColor{31, 119, 180}, kBarTrack{232, 232, 232};
// confusion[true][predicted] (n x n); per_class_acc has n entries (NaN: no samples, no bar);
// labels: n names (fewer: indices for the rest).
ConfusionPlot confusion_plot(const std::vector<std::vector<int64_t>>& confusion,
                             const std::vector<double>& per_class_acc, const std::vector<std::string>& labels,
                             const std::string& title);

// Images in a grid, each above a caption: its top-1 label and probability, and the true label
// when known. Green when the true label matches, red when it does not, black when unknown.
struct GridItem {
    Tensor crop;            // float [H, W, 1 or 3] in [0, 1]: what the model saw, before normalisation
    std::string predicted;  // top-1 label
    double prob = 0;
    std::string truth;      // "" when unknown
};
struct GridLayout {
    int tile = 0;            // images are scaled to tile x tile
    int cols = 0, rows = 0;
    int cell_w = 0, cell_h = 0;  // one image with its caption
    int margin = 0, pad = 0;  // around the tile: pad above, pad_x left (tiles centred in their cell)
    int pad_x = 0;
    int caption_size = 0;    // text px
    int tile_x(int i) const { return margin + (i % cols) * cell_w + pad_x; }
    int tile_y(int i) const { return margin + (i / cols) * cell_h + pad; }
    int caption_y(int i) const { return tile_y(i) + tile + 4; }
};
struct PredictionGrid {
    Canvas canvas;
    GridLayout layout;
};
// tile 0: the crops' size, at least 128 px; cols 0: about a square grid, at most 8 wide.
PredictionGrid prediction_grid(const std::vector<GridItem>& items, int tile = 0, int cols = 0);

}  // namespace cnx::viz
