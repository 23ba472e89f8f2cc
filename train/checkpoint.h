#pragma once
// What a training run writes besides weights: the checkpoint that --resume continues from
// (bit-identically: weights, optimiser moments, schedule position, EMA, generators, the loader's
// place in the epoch and the epoch's running sums), the per-epoch history, metrics.jsonl and the
// curves.
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "nn/module.h"
#include "optim/optim.h"

namespace cnx::train {

struct EpochRecord {
    double train_loss = NAN, train_acc = NAN, val_loss = NAN, val_acc = NAN, lr = NAN, seconds = 0;
    nlohmann::json to_json(int64_t epoch) const;
    static EpochRecord from_json(const nlohmann::json& j);
};

// Where the run stands. At an epoch boundary batch_in_epoch is 0 and the sums are zero.
struct RunState {
    std::string model;
    int64_t epoch = 0;            // the epoch in progress (or the next one, at a boundary)
    int64_t batch_in_epoch = 0;   // batches of `epoch` already consumed
    int64_t step_in_epoch = 0;    // optimiser steps of `epoch` already taken
    int64_t global_step = 0;      // optimiser steps taken in the whole run
    double loss_sum = 0;          // running sums of the epoch so far
    int64_t seen = 0, correct = 0;
    double epoch_seconds = 0;
    double best_acc = -1;
    std::vector<EpochRecord> history;
    std::string rng, mix_rng;     // generator states
};

// Writes checkpoint.safetensors atomically: "model.*" weights, "optim.*" moments, "ema.*" shadow,
// and the run state, schedule position and option values in the metadata.
void save_training_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                              const optim::LambdaLR& sched, const optim::ModelEMA* ema, const RunState& st);
// Restores everything save_training_checkpoint wrote; errors name the file and the missing piece.
RunState load_training_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                                  optim::LambdaLR& sched, optim::ModelEMA* ema);

// On resume: keeps only the metrics.jsonl records written before the checkpoint (a killed run may
// have logged steps after it that will now be run again).
void trim_metrics(const std::string& path, const RunState& st);

void write_curves(const std::string& path, const std::vector<EpochRecord>& history);

}  // namespace cnx::train
