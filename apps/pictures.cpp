#include "apps/pictures.h"

#include <cstdio>
#include <iostream>

namespace cnx::app {

PredictionGridBuilder::PredictionGridBuilder(std::string path, const InferenceModel& model)
    : path_(std::move(path)), model_(model) {
    if (!path_.empty()) note_font_fallback();  // a bad CONVNEXT_FONT fails before predicting
}

void PredictionGridBuilder::add(const std::string& image, const Tensor& crop, int64_t predicted, double prob) {
    if (path_.empty() || seen_++ >= kMaxImages) return;
    viz::GridItem item;
    item.crop = crop;
    item.predicted = model_.labels[predicted];
    item.prob = prob;
    if (int64_t truth = model_.folder_class(image); truth >= 0) item.truth = model_.labels[truth];
    items_.push_back(std::move(item));
}

void PredictionGridBuilder::write() {
    if (path_.empty() || items_.empty()) return;
    viz::prediction_grid(items_).canvas.write_png(path_);
    std::cerr << "grid of " << items_.size() << " images written to " << path_;
    if (seen_ > items_.size()) std::cerr << " (the first " << items_.size() << " of " << seen_ << ")";
    std::cerr << "\n";
}

void write_confusion_plot(const std::string& path, const train::EvalResult& r, const std::vector<std::string>& names) {
    char title[160];
    std::snprintf(title, sizeof title, "%lld images: top-1 %.2f%%, top-5 %.2f%%", (long long)r.count, 100 * r.top1,
                  100 * r.top5);
    viz::confusion_plot(r.confusion, r.per_class_acc, names, title).canvas.write_png(path);
}

}  // namespace cnx::app
