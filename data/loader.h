#pragma once
// DataLoader: batches of NHWC images built by worker threads ahead of the training step.
//
// Determinism: the epoch's order is a permutation drawn from the seed and the epoch, and each
// sample's augmentation uses a Generator seeded from (seed, epoch, index). A batch therefore
// depends only on (seed, epoch, batch number), never on which worker built it or when: runs
// with 0, 1 or 8 workers produce identical batches, and resuming at (epoch, batch k) reproduces
// the rest of the epoch exactly.
//
// Data parallelism (num_replicas K > 1): PyTorch's DistributedSampler. Every rank draws the same
// epoch permutation; with pad_shards it is padded to a multiple of K by repeating its first
// entries, and rank r takes positions r, r+K, r+2K, ... So every rank has ceil(N/K) samples and
// the same number of batches (no collective ever waits for a rank that ran out), and with
// shuffle off the union of batch j over the ranks is exactly the single process's batch j at K
// times the batch size. Without pad_shards (evaluation) rank r takes only the real positions,
// so no sample is counted twice.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <thread>
#include <vector>

#include "data/dataset.h"

namespace cnx::data {

struct Batch {
    Tensor images;                 // float [B, H, W, C]
    std::vector<int64_t> labels;   // [B]
    std::vector<int64_t> indices;  // dataset index of each sample
    int64_t epoch = 0, batch = 0;  // where in the loader's sequence this batch sits
    int64_t size() const { return (int64_t)labels.size(); }
};

struct LoaderOptions {
    int64_t batch_size = 32;
    bool shuffle = true;
    bool drop_last = false;        // drop the final partial batch (training)
    int num_workers = 2;           // 0: build batches on the calling thread
    int prefetch = 0;              // batches built ahead of the consumer; 0: 2 per worker
    uint64_t seed = 0;
    bool skip_bad_images = false;  // BadImageError: warn and drop the sample instead of throwing
    std::ostream* log = nullptr;   // warnings; nullptr: std::cerr
    int num_replicas = 1;          // data-parallel ranks sharing the epoch
    int rank = 0;                  // this rank, in [0, num_replicas)
    bool pad_shards = true;        // repeat samples so every rank has ceil(N/K) (training)
    bool keep_empty_batches = false;  // hand out batches whose samples were all skipped (empty)
                                      // instead of moving on: ranks stay in step under MPI
};

// The positions of an epoch's order that rank `rank` of `num_replicas` visits, in order.
std::vector<int64_t> shard_positions(int64_t n, int num_replicas, int rank, bool pad);

// Seeds derived from the run seed (a splitmix64 hash of the parts).
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0);
// The order in which epoch `epoch` visits an n-sample dataset.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

class DataLoader {
public:
    DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions opts);
    ~DataLoader();
    DataLoader(const DataLoader&) = delete;
    DataLoader& operator=(const DataLoader&) = delete;

    int64_t batches_per_epoch() const;
    int64_t samples_per_epoch() const;  // this rank's share (padding included)
    const Dataset& dataset() const { return *dataset_; }
    const LoaderOptions& options() const { return opts_; }

    // Starts (or restarts) epoch `epoch` at batch `start_batch`, e.g. when resuming from a
    // checkpoint; workers begin building immediately.
    void start_epoch(int64_t epoch, int64_t start_batch = 0);
    // The next batch of the current epoch (starting epoch 0 if none was started); false once
    // the epoch is exhausted. Rethrows an error raised while building the batch.
    bool next(Batch& out);

    // Resume state: the current epoch and how many of its batches have been handed out.
    int64_t epoch() const { return epoch_; }
    int64_t position() const { return position_; }
    int64_t skipped() const;  // samples dropped by skip_bad_images so far

private:
    struct Result {
        Batch batch;
        std::exception_ptr error;
    };
    Result build(int64_t b);
    void worker_loop();
    void stop_workers();

    std::shared_ptr<const Dataset> dataset_;
    LoaderOptions opts_;
    int64_t epoch_ = 0, position_ = 0;
    bool started_ = false;
    std::vector<int64_t> order_;

    mutable std::mutex mu_;
    std::condition_variable work_cv_, ready_cv_;
    std::map<int64_t, Result> ready_;
    int64_t next_claim_ = 0;
    bool stop_ = false;
    std::vector<std::thread> workers_;
    std::set<int64_t> warned_;
    int64_t skipped_ = 0;
};

}  // namespace cnx::data
