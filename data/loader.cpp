#include "data/loader.h"

#include <cstring>
#include <iostream>

namespace cnx::data {
namespace {
uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) { return mix64(mix64(mix64(seed) ^ a) ^ b); }

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
    if (!shuffle) {
        std::vector<int64_t> order(n);
        for (int64_t i = 0; i < n; ++i) order[i] = i;
        return order;
    }
    // The salt keeps the shuffle stream apart from the per-sample augmentation streams.
    Generator gen(derive_seed(seed ^ 0x53485546464C45ull, (uint64_t)epoch));
    return gen.permutation(n);
}

std::vector<int64_t> shard_positions(int64_t n, int num_replicas, int rank, bool pad) {
    CNX_CHECK(num_replicas >= 1 && rank >= 0 && rank < num_replicas, "DataLoader: rank ", rank, " of ", num_replicas,
              " replicas");
    std::vector<int64_t> pos;
    if (n <= 0) return pos;
    const int64_t k = num_replicas;
    const int64_t end = pad ? (n + k - 1) / k * k : n;
    pos.reserve((size_t)((end - rank + k - 1) / k));
    // Positions past the end wrap to the start: the padding repeats the order's first entries.
    for (int64_t p = rank; p < end; p += k) pos.push_back(p % n);
    return pos;
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions opts)
    : dataset_(std::move(dataset)), opts_(opts) {
    CNX_CHECK(dataset_ != nullptr, "DataLoader: no dataset");
    CNX_CHECK(opts_.batch_size > 0, "DataLoader: batch_size must be positive, got ", opts_.batch_size);
    CNX_CHECK(opts_.num_workers >= 0, "DataLoader: num_workers must be >= 0, got ", opts_.num_workers);
    CNX_CHECK(dataset_->size() > 0, "DataLoader: the dataset is empty");
    CNX_CHECK(opts_.num_replicas >= 1 && opts_.rank >= 0 && opts_.rank < opts_.num_replicas, "DataLoader: rank ",
              opts_.rank, " is not one of ", opts_.num_replicas, " replicas");
    if (opts_.prefetch <= 0) opts_.prefetch = 2 * std::max(1, opts_.num_workers);
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::samples_per_epoch() const {
    const int64_t n = dataset_->size(), k = opts_.num_replicas, r = opts_.rank;
    if (opts_.pad_shards) return (n + k - 1) / k;
    return n > r ? (n - r + k - 1) / k : 0;
}

int64_t DataLoader::batches_per_epoch() const {
    const int64_t n = samples_per_epoch(), bs = opts_.batch_size;
    return opts_.drop_last ? n / bs : (n + bs - 1) / bs;
}

int64_t DataLoader::skipped() const {
    std::lock_guard<std::mutex> g(mu_);
    return skipped_;
}

void DataLoader::stop_workers() {
    {
        std::lock_guard<std::mutex> g(mu_);
        stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    std::lock_guard<std::mutex> g(mu_);
    stop_ = false;
    ready_.clear();
}

void DataLoader::start_epoch(int64_t epoch, int64_t start_batch) {
    CNX_CHECK(epoch >= 0, "DataLoader: negative epoch ", epoch);
    CNX_CHECK(start_batch >= 0 && start_batch <= batches_per_epoch(), "DataLoader: start batch ", start_batch,
              " outside the epoch's ", batches_per_epoch(), " batches");
    stop_workers();
    epoch_ = epoch;
    position_ = start_batch;
    next_claim_ = start_batch;
    started_ = true;
    order_ = epoch_order(dataset_->size(), opts_.seed, epoch, opts_.shuffle);
    if (opts_.num_replicas > 1) {
        std::vector<int64_t> shard;
        for (int64_t p : shard_positions(dataset_->size(), opts_.num_replicas, opts_.rank, opts_.pad_shards))
            shard.push_back(order_[p]);
        order_ = std::move(shard);
    }
    for (int i = 0; i < opts_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::Result DataLoader::build(int64_t b) {
    Result r;
    try {
        const int64_t n = (int64_t)order_.size(), bs = opts_.batch_size;
        const int64_t lo = b * bs, hi = std::min(n, lo + bs);
        std::vector<Sample> samples;
        samples.reserve(hi - lo);
        for (int64_t k = lo; k < hi; ++k) {
            const int64_t idx = order_[k];
            Generator gen(derive_seed(opts_.seed, (uint64_t)epoch_, (uint64_t)idx));
            try {
                samples.push_back(dataset_->get(idx, gen));
            } catch (const BadImageError& e) {
                if (!opts_.skip_bad_images) throw;
                std::lock_guard<std::mutex> g(mu_);
                ++skipped_;
                if (warned_.insert(idx).second)
                    (opts_.log ? *opts_.log : std::cerr) << "warning: skipping " << dataset_->describe(idx) << ": "
                                                         << e.what() << "\n";
                continue;
            }
            Batch& out = r.batch;
            const Tensor& img = samples.back().image;
            CNX_CHECK(img.defined() && img.dim() == 3 && img.dtype() == DType::F32, "DataLoader: ",
                      dataset_->describe(idx), " gave ", img.defined() ? img.str() : std::string("no image"),
                      ", expected float32 [H, W, C]");
            CNX_CHECK(img.shape() == samples.front().image.shape(), "DataLoader: ", dataset_->describe(idx),
                      " has shape ", shape_str(img.shape()), " but the batch's first sample has ",
                      shape_str(samples.front().image.shape()), " (use a transform with a fixed output size)");
            out.indices.push_back(idx);
            out.labels.push_back(samples.back().label);
        }
        Batch& out = r.batch;
        out.epoch = epoch_;
        out.batch = b;
        if (!samples.empty()) {
            Shape shape = samples.front().image.shape();
            shape.insert(shape.begin(), (int64_t)samples.size());
            out.images = Tensor::empty(shape);
            float* dst = out.images.data<float>();
            const int64_t per = samples.front().image.numel();
            for (size_t i = 0; i < samples.size(); ++i)
                std::memcpy(dst + i * per, samples[i].image.data<float>(), per * sizeof(float));
        }
    } catch (...) {
        r.error = std::current_exception();
    }
    return r;
}

void DataLoader::worker_loop() {
    const int64_t nb = batches_per_epoch();
    for (;;) {
        int64_t b;
        {
            std::unique_lock<std::mutex> lk(mu_);
            work_cv_.wait(lk, [&] { return stop_ || next_claim_ >= nb || next_claim_ < position_ + opts_.prefetch; });
            if (stop_ || next_claim_ >= nb) return;
            b = next_claim_++;
        }
        Result r = build(b);
        {
            std::lock_guard<std::mutex> g(mu_);
            ready_[b] = std::move(r);
        }
        ready_cv_.notify_all();
    }
}

bool DataLoader::next(Batch& out) {
    if (!started_) start_epoch(0);
    const int64_t nb = batches_per_epoch();
    while (position_ < nb) {
        Result r;
        if (workers_.empty()) {
            r = build(position_);
        } else {
            std::unique_lock<std::mutex> lk(mu_);
            ready_cv_.wait(lk, [&] { return ready_.count(position_) > 0; });
            auto it = ready_.find(position_);
            r = std::move(it->second);
            ready_.erase(it);
        }
        {
            std::lock_guard<std::mutex> g(mu_);
            ++position_;
        }
        work_cv_.notify_all();
        if (r.error) std::rethrow_exception(r.error);
        if (r.batch.size() == 0 && !opts_.keep_empty_batches) continue;  // every sample of it was skipped
        out = std::move(r.batch);
        return true;
    }
    return false;
}

}  // namespace cnx::data
