#pragma once
// Where a training run stands, as a checkpoint's metadata records it: the position in the run,
// the epoch's running sums, the history and the generator states. Parsed here, apart from the
// tensors, so the checkpoint fuzz harness checks the very parser --resume uses.
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

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

// The metadata entries of a run state (save_training_checkpoint adds them to the optimiser's).
void write_run_state(const RunState& st, io::Metadata& meta);
// Reads them back; errors name `source` (the checkpoint's path) and the missing or bad entry.
RunState read_run_state(const io::Metadata& meta, const std::string& source);

}  // namespace cnx::train
