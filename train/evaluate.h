#pragma once
// Evaluation of a classifier on a dataset: loss, top-1/top-5 accuracy, the confusion matrix and
// per-class accuracy, sharded across ranks under MPI; and a few single-sample predictions.
//
//   train::EvalOptions eo;
//   eo.num_classes = 10;
//   train::EvalResult r = train::evaluate(model, val_set, eo);
//   std::printf("top-1 %.4f\n", r.top1);
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <vector>

#include "data/dataset.h"
#include "nn/module.h"
#include "train/loss.h"

namespace cnx::train {

struct EvalResult {
    double loss = 0, top1 = 0, top5 = 0;
    int64_t count = 0;                            // samples evaluated (skipped bad images excluded)
    std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
    std::vector<double> per_class_acc;            // NaN for a class with no samples
};

struct EvalOptions {
    int64_t num_classes = 0;   // the model's output width; 0: from the first batch (not when sharded)
    int64_t batch_size = 32;
    int workers = 2;           // data loading threads
    bool skip_bad_images = false;
    std::ostream* warnings = nullptr;  // skipped-image warnings; nullptr: std::cerr
    // Under MPI each rank evaluates its own share (no sample twice) and the sums, counts and
    // confusion matrix are all-reduced, so every rank returns the whole dataset's result. Every
    // rank must then call evaluate (it is a collective). Ignored in a single process.
    bool sharded = false;
    LossFn loss;               // the reported loss; unset: cross-entropy without smoothing
    // Progress, called on rank 0 only: before the first batch, after each batch, after the last.
    std::function<void(int64_t batches)> on_begin;
    std::function<void(int64_t done)> on_batch_end;
    std::function<void()> on_end;
};

// Eval-mode forward over the whole dataset with no graph recorded; restores the module's mode.
// The model's output must be logits [B, num_classes].
EvalResult evaluate(nn::Module& model, std::shared_ptr<const data::Dataset> dataset, const EvalOptions& options = {});

struct Prediction {
    int64_t index = 0;        // in the dataset
    int64_t label = 0;        // the true class
    int64_t predicted = 0;    // the arg-max class
    double probability = 0;   // its softmax probability
};

// The first n samples of the dataset, each predicted on its own in eval mode (no graph); samples
// that cannot be read (BadImageError) are left out. Restores the module's mode.
std::vector<Prediction> predict_samples(nn::Module& model, const data::Dataset& dataset, int64_t n);

}  // namespace cnx::train
