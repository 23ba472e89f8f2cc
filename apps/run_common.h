#pragma once
// What `train` and `eval` share besides the training library (train/): the model the command
// line names, a progress display, and small helpers.
#include <chrono>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "models/convnext.h"
#include "nn/module.h"

namespace cnx::app {

// A named variant, or with --depths/--dims given (both, four values each) a custom model of the
// named variant's family.
struct ModelSpec {
    std::string name = "convnext_tiny";
    std::vector<int64_t> depths, dims;
    void add_options(CLI::App* cmd);
};
std::shared_ptr<models::ConvNeXt> make_model(const ModelSpec& spec, models::ConvNeXtOptions options);
// The options make_model builds from (the variant's, or the custom depths and dims checked).
models::ConvNeXtOptions spec_options(const ModelSpec& spec, models::ConvNeXtOptions options);

// Number of classes and input channels recorded in a weights file (head.weight rows, stem
// input channels); -1 when absent.
struct WeightsShape {
    int64_t num_classes = -1, in_chans = -1;
};
WeightsShape peek_weights_shape(const std::string& path);

// Live progress: a bar redrawn in place on a terminal, a plain line every few seconds otherwise.
class Progress {
public:
    Progress(std::string title, int64_t total, bool tty);
    void update(int64_t done, const std::string& stats, bool force = false);
    void finish(const std::string& stats);

private:
    std::string title_;
    int64_t total_;
    bool tty_;
    std::chrono::steady_clock::time_point start_, last_;
};

std::string format_duration(double seconds);
std::string now_stamp();  // 2026-11-28_23-41-05

}  // namespace cnx::app
