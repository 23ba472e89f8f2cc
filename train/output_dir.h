#pragma once
// The output folder of a training run: created and probed before anything expensive starts, a
// run already there guarded, and the free space checked against the files the run will keep.
#include <cstdint>
#include <string>

namespace cnx::train {

// Creates `dir`; errors when it cannot be created or written.
void ensure_writable_dir(const std::string& dir);

// ensure_writable_dir, then: with `resume` the folder must hold checkpoint.safetensors; without
// it, it must not (unless `overwrite`), so a finished run is never clobbered by accident.
void prepare_output_dir(const std::string& dir, bool resume, bool overwrite);

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

}  // namespace cnx::train
