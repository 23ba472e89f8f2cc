#pragma once
// The pictures predict and eval draw besides their text output (viz/plots.h does the drawing).
#include <cstdint>
#include <string>
#include <vector>

#include "apps/inference.h"
#include "train/evaluate.h"
#include "viz/plots.h"

namespace cnx::app {

// predict --grid: collects the first kMaxImages predictions, then writes the grid. A caption is
// green or red when the image's folder names a class (InferenceModel::folder_class), black when
// it names none. Does nothing when `path` is empty.
class PredictionGridBuilder {
public:
    static constexpr size_t kMaxImages = 64;
    PredictionGridBuilder(std::string path, const InferenceModel& model);
    void add(const std::string& image, const Tensor& crop, int64_t predicted, double prob);
    void write();  // prints where it wrote, on stderr (stdout may be --json)

private:
    std::string path_;
    const InferenceModel& model_;
    std::vector<viz::GridItem> items_;
    size_t seen_ = 0;
};

// eval --plot: the confusion matrix beside the per-class accuracy bars.
void write_confusion_plot(const std::string& path, const train::EvalResult& result,
                          const std::vector<std::string>& class_names);

}  // namespace cnx::app
