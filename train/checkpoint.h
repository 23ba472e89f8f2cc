#pragma once
// What a training run writes besides weights: the checkpoint that --resume continues from
// (bit-identically: weights, optimiser moments, schedule position, EMA, generators, the loader's
// place in the epoch and the epoch's running sums), the per-epoch history, metrics.jsonl and the
// curves.
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/run_state.h"
#include "io/safetensors.h"
#include "nn/module.h"
#include "optim/optim.h"

namespace cnx::train {

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
