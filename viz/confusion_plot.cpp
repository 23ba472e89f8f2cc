#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "viz/font.h"
#include "viz/plots.h"

namespace cnx::viz {

ConfusionPlot confusion_plot(const std::vector<std::vector<int64_t>>& confusion,
                             const std::vector<double>& per_class_acc, const std::vector<std::string>& labels,
                             const std::string& title) {
    const int n = (int)confusion.size();
    CNX_CHECK(n > 0, "confusion_plot: empty confusion matrix");
    for (const auto& row : confusion)
        CNX_CHECK((int)row.size() == n, "confusion_plot: row of ", row.size(), " counts in a ", n, "x", n, " matrix");
    CNX_CHECK((int)per_class_acc.size() == n, "confusion_plot: ", per_class_acc.size(), " accuracies for ", n,
              " classes");
    auto name = [&](int i) { return i < (int)labels.size() ? labels[i] : std::to_string(i); };

    ConfusionLayout L;
    // About 560 px of matrix whatever the class count; names and counts only where they fit.
    L.cell = std::clamp(560 / n, 2, 56);
    L.labels = L.cell >= 9;
    L.counts = L.cell >= 24;
    const float label_size = std::clamp(L.cell * 0.5f, 9.0f, 14.0f), count_size = std::clamp(L.cell * 0.27f, 8.0f, 13.0f);
    const float title_size = 16, axis_size = 13;
    const int margin = 16, label_room = 160;
    std::vector<std::string> names(n);
    int name_w = 0;
    if (L.labels)
        for (int i = 0; i < n; ++i) {
            names[i] = Canvas::fit_text(name(i), label_size, label_room);
            name_w = std::max(name_w, Font::active().text_width(names[i], label_size));
        }
    const int M = n * L.cell;
    const int axis_h = (int)axis_size + 8;
    L.matrix_x = margin + axis_h + (L.labels ? name_w + 8 : 0);
    L.matrix_y = margin + (int)title_size + 14 + axis_h;
    L.bars_x = L.matrix_x + M + 36;
    L.bar_length = std::clamp(M / 2, 120, 300);
    L.bar_inset = L.cell >= 4 ? std::max(1, L.cell / 6) : 0;
    const int value_w = L.labels ? Font::active().text_width("100.0%", label_size) + 12 : 8;
    const int width = L.bars_x + L.bar_length + value_w + margin;
    const int below = (L.labels ? name_w + 8 : 4) + axis_h;
    const int height = L.matrix_y + M + std::max(below, 24) + margin;
    Canvas cv(width, height);

    cv.text(margin, margin, title, title_size, kBlack);
    cv.text(L.matrix_x + M / 2, L.matrix_y - axis_h, "confusion matrix (rows normalised)", axis_size, kBlack,
            Align::Center);
    cv.text(L.bars_x, L.matrix_y - axis_h, "per-class accuracy", axis_size, kBlack);
    cv.text_up(margin, L.matrix_y + M / 2, "true class", axis_size, kBlack, Align::Center);
    cv.text(L.matrix_x + M / 2, L.matrix_y + M + below - axis_h + 4, "predicted class", axis_size, kBlack,
            Align::Center);

    char buf[32];
    for (int t = 0; t < n; ++t) {
        int64_t total = 0;
        for (int64_t c : confusion[t]) total += c;
        const int y = L.matrix_y + t * L.cell;
        for (int p = 0; p < n; ++p) {
            const float frac = total > 0 ? (float)confusion[t][p] / (float)total : 0.0f;
            const Rgb bg = blues(frac);
            const int x = L.matrix_x + p * L.cell;
            cv.fill_rect(x, y, L.cell, L.cell, bg);
            if (L.counts) {
                std::string count = std::to_string(confusion[t][p]);
                if (Font::active().text_width(count, count_size) <= L.cell - 2)
                    cv.text(x + L.cell / 2, y + (L.cell - (int)count_size) / 2, count, count_size, text_color_on(bg),
                            Align::Center);
            }
        }
        if (L.labels) {
            cv.text(L.matrix_x - 6, y + (L.cell - (int)label_size) / 2, names[t], label_size, kBlack, Align::Right);
            cv.text_up(L.matrix_x + t * L.cell + (L.cell - (int)label_size) / 2, L.matrix_y + M + 6, names[t],
                       label_size, kBlack, Align::Right);
        }
        const int bar_y = y + L.bar_inset, bar_h = L.cell - 2 * L.bar_inset;
        cv.fill_rect(L.bars_x, bar_y, L.bar_length, bar_h, kBarTrack);
        const double acc = per_class_acc[t];
        if (std::isfinite(acc)) {
            cv.fill_rect(L.bars_x, bar_y, (int)std::lround(std::clamp(acc, 0.0, 1.0) * L.bar_length), bar_h, kBarColor);
            std::snprintf(buf, sizeof buf, "%.1f%%", 100 * acc);
        } else {
            std::snprintf(buf, sizeof buf, "-");  // no sample of this class
        }
        if (L.labels) cv.text(L.bars_x + L.bar_length + 6, y + (L.cell - (int)label_size) / 2, buf, label_size, kBlack);
    }
    cv.outline_rect(L.matrix_x - 1, L.matrix_y - 1, M + 2, M + 2, kGrey);
    // The bars' scale: 0, 50 and 100 % below them.
    for (int k = 0; k <= 2; ++k) {
        const int x = L.bars_x + k * L.bar_length / 2;
        cv.fill_rect(x, L.matrix_y + M + 1, 1, 4, kGrey);
        cv.text(x, L.matrix_y + M + 7, k == 0 ? "0" : k == 1 ? "50%" : "100%", 10, kBlack,
                k == 0 ? Align::Left : k == 1 ? Align::Center : Align::Right);
    }
    return {std::move(cv), L};
}

}  // namespace cnx::viz
