#pragma once
// train::fit: the classic fine-tuning loop for any classifier nn::Module and any loss.
//
// AdamW (no weight decay on biases and 1-D parameters, optional layer-wise lr decay), a linear
// warmup then cosine schedule stepped per optimiser step, gradient accumulation, gradient
// clipping, EMA of the weights, mixup/cutmix, validation after every epoch with the best weights
// kept by validation accuracy (training accuracy without a validation set). In `out` it writes
// metrics.jsonl (a line per optimiser step and per epoch), curves.png, best.safetensors,
// ema.safetensors (with ema) and checkpoint.safetensors, from which `resume` continues
// bit-identically however the previous run ended (checkpoints are replaced atomically).
// A non-finite loss or gradient norm stops the run with an error; the last checkpoint is intact.
//
// Under mpirun (dist/) it trains data-parallel: rank 0's weights are broadcast, each rank takes
// its DistributedSampler share of every epoch with batch_size images per step, gradients are
// averaged across ranks before clipping and the step, validation is sharded. Every rank calls
// fit; rank 0 alone writes files and runs the callbacks.
//
// The library prints nothing itself: what a caller wants to show comes through the callbacks,
// `log` and `warnings`. Error messages name the CLI's options (--resume, --lr, ...), which are the
// TrainerOptions fields of the same names.
//
//   train::TrainerOptions to;
//   to.out = "runs/mlp";
//   to.num_classes = 4;
//   to.epochs = 20;
//   train::FitResult r = train::fit(net, train::cross_entropy_loss(), train_set, val_set, to);
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "dist/dist.h"
#include "io/safetensors.h"
#include "nn/module.h"
#include "ops/precision.h"
#include "ops/saved.h"
#include "optim/optimizer.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/loss.h"

namespace cnx::train {

// What fit knows once it is set up (and resumed), before the first step.
struct RunInfo {
    int64_t total_params = 0, trainable_params = 0;
    int64_t batches_per_epoch = 0;   // this rank's
    int64_t steps_per_epoch = 0;     // optimiser steps (batches / accum_steps, rounded up)
    int world_size = 1;
    bool resumed = false;
    int64_t start_epoch = 0, start_batch = 0, global_step = 0;
};

struct EpochBegin {
    int64_t epoch = 0;        // 0-based
    int64_t epochs = 0;       // the schedule's total
    int64_t batches = 0;      // per epoch
    int64_t start_batch = 0;  // > 0 when resuming mid-epoch
};

// After each batch: the epoch's running means over the global batch so far.
struct BatchEnd {
    int64_t epoch = 0, batch = 0, batches = 0;  // batch: batches of the epoch done (1-based)
    int64_t global_step = 0;                     // optimiser steps taken in the run
    double loss = 0, acc = 0;
    double lr = 0;              // of the last optimiser step (NaN before the epoch's first)
    double images_per_second = 0;
};

struct TrainEpochEnd {
    int64_t epoch = 0;
    double loss = 0, acc = 0, lr = 0;  // the epoch's means, the lr of its last step
    double seconds = 0;                // training time of this epoch spent in this process
    // Under MPI: the epoch's gradient all-reduces summed over its comm_steps optimiser steps.
    dist::ReduceStats comm;
    int64_t comm_steps = 0;
};

struct ValidationEnd {
    int64_t epoch = 0;
    EvalResult val;
    std::optional<EvalResult> ema;  // the EMA weights' result, with ema on
};

struct EpochEnd {
    int64_t epoch = 0;
    EpochRecord record;     // as written to metrics.jsonl
    bool improved = false;  // best.safetensors was written
};

// Called on rank 0 only, in this order: on_start; per epoch on_epoch_begin, on_batch_end per
// batch, on_train_epoch_end, on_validation_end (with a validation set), on_epoch_end (after the
// epoch's checkpoint and files).
struct Callbacks {
    std::function<void(const RunInfo&)> on_start;
    std::function<void(const EpochBegin&)> on_epoch_begin;
    std::function<void(const BatchEnd&)> on_batch_end;
    std::function<void(const TrainEpochEnd&)> on_train_epoch_end;
    std::function<void(const ValidationEnd&)> on_validation_end;
    std::function<void(const EpochEnd&)> on_epoch_end;
};

// The defaults are the classic fine-tuning script's.
struct TrainerOptions {
    std::string out;              // output folder (created); required
    int64_t num_classes = 0;      // width of the model's output [B, num_classes]; required
    int64_t epochs = 10;          // the schedule's length
    int64_t batch_size = 8;       // per rank under MPI; the last partial batch is dropped
    int64_t accum_steps = 1;      // micro-batches per optimiser step
    double lr = 5e-4;             // peak learning rate
    double weight_decay = 0.05;   // AdamW's, not on biases and 1-D parameters
    double layer_decay = 1.0;     // layer-wise lr decay (1: off)
    int64_t warmup_epochs = 1;    // linear warmup (<= 0: none); >= epochs: it spans the run
    double clip_grad = 0;         // max global gradient norm (0: off)
    double label_smoothing = 0;   // for the default loss and the mixup/cutmix targets
    double mixup = 0, cutmix = 0; // Beta alphas (0: off)
    bool ema = false;
    double ema_decay = 0.9999;
    uint64_t seed = 0;            // shuffle, augmentation, mixup; drop path of ranks > 0
    bool shuffle = true;
    int workers = 2;              // data loading threads
    bool skip_bad_images = false; // warn about undecodable images and leave them out
    bool resume = false;          // continue from out/checkpoint.safetensors
    bool overwrite = false;       // start afresh in an out folder that holds a run
    int64_t stop_after_epochs = 0;  // end this call after N epochs (0: run to `epochs`)
    int64_t checkpoint_every = 0;   // also checkpoint every N optimiser steps (0: at epoch ends)
    std::string model_name;         // recorded in the checkpoint; resuming refuses another
    io::Metadata weights_metadata;  // added to best/ema.safetensors' metadata (with "epoch")
    std::ostream* log = nullptr;       // informational lines ("resumed from ..."); nullptr: none
    std::ostream* warnings = nullptr;  // skipped-image warnings; nullptr: std::cerr
    // A fresh module of the model's architecture to evaluate the EMA weights in. Unset: the EMA
    // weights are swapped into the model for the evaluation and back.
    std::function<std::shared_ptr<nn::Module>()> make_eval_model;
    // The optimiser's parameter groups. Unset: optim::get_params_groups(named_parameters,
    // weight_decay, layer_decay) over the trainable parameters.
    std::function<std::vector<optim::ParamGroup>(const nn::Module&)> param_groups;
    Callbacks callbacks;
    LossFn val_loss;  // the validation loss reported; unset: cross-entropy without smoothing
    // Precision::BF16: bf16 GEMMs where they pay and bf16 saved activations (ops/precision.h) for
    // training and validation; weights, gradients and optimiser state stay float32.
    Precision precision = Precision::FP32;
    // Whether layer-norm and depthwise-conv outputs are recomputed in backward instead of kept
    // (ops/saved.h); Auto: under Precision::BF16 only.
    Recompute recompute = Recompute::Auto;
};

struct FitResult {
    double best_acc = -1;         // best validation accuracy (training accuracy without validation)
    int64_t epochs_done = 0;      // epochs completed, this call and those resumed from
    int64_t global_step = 0;
    std::vector<EpochRecord> history;
};

// Trains `model` in place. `loss` unset: cross_entropy_loss(options.label_smoothing). val_set
// may be null (no validation). Throws cnx::Error on bad options, unreadable data, a failed write
// or divergence.
FitResult fit(nn::Module& model, LossFn loss, std::shared_ptr<const data::Dataset> train_set,
              std::shared_ptr<const data::Dataset> val_set, const TrainerOptions& options);

}  // namespace cnx::train
