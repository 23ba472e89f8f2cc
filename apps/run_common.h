#pragma once
// What `train`, `eval` and `bench` share: building datasets from the command line's data options,
// loading weights into a model with a report, a progress display, and small file helpers.
#include <chrono>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "data/dataset.h"
#include "models/convnext.h"
#include "nn/module.h"

namespace cnx::app {

struct DataConfig {
    std::string data_dir;   // ImageFolder root (or the Fashion-MNIST folder with --dataset)
    std::string dataset;    // "" or "fashion-mnist"
    int64_t image_size = 224;
    double crop_pct = 0.875;
    double val_rate = 0.2;
    uint64_t seed = 0;
    bool augment = true;            // false: the eval transform for training too (--no-augment)
    bool eval_all = false;          // eval: the whole folder (no split) / the Fashion-MNIST test split
    std::string class_indices_out;  // where to write class_indices.json ("" = nowhere)
    int64_t train_limit = 0, val_limit = 0;  // first N samples only (quick runs, tests); 0 = all
};

struct DataSets {
    std::shared_ptr<data::Dataset> train, val;  // val may be null (no validation split)
    std::vector<std::string> classes;
    int64_t in_chans = 3;
    int64_t image_size = 224;
    std::vector<float> mean, std;   // the normalisation the inputs got (saved with the weights)
};

DataSets make_datasets(const DataConfig& cfg, std::ostream& log);

// The first n samples of a dataset.
class SubsetDataset : public data::Dataset {
public:
    SubsetDataset(std::shared_ptr<data::Dataset> base, int64_t n) : base_(std::move(base)), n_(n) {}
    int64_t size() const override { return n_; }
    data::Sample get(int64_t i, Generator& g) const override { return base_->get(i, g); }
    std::string describe(int64_t i) const override { return base_->describe(i); }

private:
    std::shared_ptr<data::Dataset> base_;
    int64_t n_;
};

// Loads .pth or .safetensors weights (official or timm names) into the model, non-strict.
// With drop_mismatched_head, head.* entries whose shapes differ from the model's are dropped
// first (fine-tuning to a new class count). Prints what loaded. Errors when nothing matched.
void load_pretrained(nn::Module& model, const std::string& path, bool drop_mismatched_head, std::ostream& log);

// A named variant, or with --depths/--dims given (both, four values each) a custom model of the
// named variant's family.
struct ModelSpec {
    std::string name = "convnext_tiny";
    std::vector<int64_t> depths, dims;
    void add_options(CLI::App* cmd);
};
std::shared_ptr<models::ConvNeXt> make_model(const ModelSpec& spec, models::ConvNeXtOptions options);

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
void ensure_writable_dir(const std::string& dir);  // creates it; errors when it cannot be written

// The files a training run keeps in its output folder, by size, for the free-space check.
struct RunFiles {
    uint64_t checkpoint = 0;  // weights, optimiser moments, EMA, run state
    uint64_t weights = 0;     // best.safetensors (and ema.safetensors when there is one)
    uint64_t ema_weights = 0;
};
// Errors before training when `dir`'s filesystem cannot hold the run's files: the checkpoint
// twice (a new one is written beside the previous one, then renamed over it), the weights files,
// plus 1 MB for metrics and curves; files of those names already in `dir` count as space.
void ensure_free_space(const std::string& dir, const RunFiles& files);

}  // namespace cnx::app

namespace cnx::app {

struct EvalResult {
    double loss = 0, top1 = 0, top5 = 0;
    int64_t count = 0;
    std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
    std::vector<double> per_class_acc;            // NaN for a class with no samples
};

// Eval-mode forward over the whole dataset (no graph recorded); restores the module's mode.
// sharded: under MPI each rank evaluates its own share (no sample twice) and the sums, counts and
// confusion matrix are all-reduced, so every rank returns the whole dataset's result; only rank 0
// shows progress. Every rank must then call it (it is a collective).
EvalResult evaluate(nn::Module& model, std::shared_ptr<const data::Dataset> dataset, int64_t num_classes,
                    int64_t batch_size, int workers, bool skip_bad_images, const std::string& progress_title = "",
                    bool sharded = false);

}  // namespace cnx::app
