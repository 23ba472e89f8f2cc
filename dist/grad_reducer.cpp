// dist::GradReducer: bucketed gradient all-reduce, started from the autograd engine's grad-ready
// hook so that communication overlaps the rest of backward (see dist/dist.h).
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "dist/dist.h"
#include "dist/mpi_detail.h"
#include "ops/ops.h"

namespace cnx::dist {

#ifdef CONVNEXT_HAVE_MPI

using detail::check;
using detail::mpi_type;

struct GradReducer::State {
    // A bucket is a run of element ranges of same-dtype parameters, packed into one buffer.
    struct Piece {
        size_t param;
        int64_t offset, count;  // in elements
    };
    struct Bucket {
        DType dtype = DType::F32;
        std::vector<Piece> pieces;
        int64_t count = 0;
        int params = 0;  // distinct parameters with a piece here
        std::vector<char> buffer;
        MPI_Request request = MPI_REQUEST_NULL;
        int params_left = 0;  // this step: parameters not yet reported ready
    };
    std::vector<Tensor> params;
    std::unordered_map<const TensorImpl*, size_t> index;
    std::vector<std::vector<size_t>> buckets_of;  // per parameter
    std::vector<Bucket> buckets;
    std::vector<char> ready;  // per parameter, this step
    size_t next_to_start = 0;
    bool step_open = false;
    ReduceStats stats;

    void open_step() {
        if (step_open) return;
        step_open = true;
        std::fill(ready.begin(), ready.end(), 0);
        for (Bucket& b : buckets) b.params_left = b.params;
        next_to_start = 0;
        stats = {};
    }

    // Packs bucket k (zeros for a parameter without a gradient here) and starts its all-reduce.
    void start(size_t k) {
        Bucket& b = buckets[k];
        const size_t esz = dtype_size(b.dtype);
        char* dst = b.buffer.data();
        for (const Piece& p : b.pieces) {
            const Tensor g = params[p.param].grad();
            if (g.defined())
                std::memcpy(dst, static_cast<const char*>(g.raw_data()) + p.offset * esz, p.count * esz);
            else
                std::memset(dst, 0, p.count * esz);
            dst += p.count * esz;
        }
        check(MPI_Iallreduce(MPI_IN_PLACE, b.buffer.data(), (int)b.count, mpi_type(b.dtype), MPI_SUM, MPI_COMM_WORLD,
                             &b.request),
              "MPI_Iallreduce");
        stats.bytes += b.count * (int64_t)esz;
        ++stats.buckets;
    }

    // Buckets start strictly in order (the same on every rank), each once it is full.
    void start_full_buckets() {
        while (next_to_start < buckets.size() && buckets[next_to_start].params_left == 0) {
            start(next_to_start++);
            ++stats.started_in_backward;
        }
    }

    // Open MPI advances non-blocking collectives only inside MPI calls: give it one.
    void progress() {
        for (size_t k = 0; k < next_to_start; ++k) {
            if (buckets[k].request == MPI_REQUEST_NULL) continue;
            int done = 0;
            check(MPI_Test(&buckets[k].request, &done, MPI_STATUS_IGNORE), "MPI_Test");
            if (!done) return;  // the oldest unfinished one: later ones wait behind it
        }
    }

    void on_ready(const std::shared_ptr<TensorImpl>& leaf) {
        auto it = index.find(leaf.get());
        if (it == index.end()) return;
        open_step();
        if (ready[it->second]) return;
        ready[it->second] = 1;
        for (size_t k : buckets_of[it->second]) buckets[k].params_left--;
        start_full_buckets();
        progress();
    }
};

GradReducer::GradReducer(std::vector<Tensor> params, int64_t bucket_bytes) : s_(std::make_unique<State>()) {
    CNX_CHECK(bucket_bytes > 0, "dist::GradReducer: bucket_bytes must be positive");
    State& s = *s_;
    s.params = std::move(params);
    s.buckets_of.resize(s.params.size());
    s.ready.resize(s.params.size());
    if (world_size() == 1) return;
    for (size_t i = 0; i < s.params.size(); ++i) s.index[s.params[i].impl()] = i;
    // Last parameter first: backward finishes the head before the stem.
    for (size_t r = s.params.size(); r-- > 0;) {
        const DType dt = s.params[r].dtype();
        mpi_type(dt);  // refuse integer parameters before any bucket is in flight
        const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(bucket_bytes / (int64_t)dtype_size(dt), INT_MAX));
        for (int64_t off = 0, n = s.params[r].numel(); off < n;) {
            if (s.buckets.empty() || s.buckets.back().dtype != dt || s.buckets.back().count >= cap) {
                State::Bucket fresh;
                fresh.dtype = dt;
                s.buckets.push_back(std::move(fresh));
            }
            State::Bucket& b = s.buckets.back();
            const int64_t take = std::min(n - off, cap - b.count);
            if (b.pieces.empty() || b.pieces.back().param != r) {
                b.params++;
                s.buckets_of[r].push_back(s.buckets.size() - 1);
            }
            b.pieces.push_back({r, off, take});
            b.count += take;
            off += take;
        }
    }
    for (State::Bucket& b : s.buckets) b.buffer.resize((size_t)b.count * dtype_size(b.dtype));
}

GradReducer::~GradReducer() = default;

autograd::GradReadyHook GradReducer::hook() {
    if (world_size() == 1) return nullptr;
    State* s = s_.get();
    return [s](const std::shared_ptr<TensorImpl>& leaf) { s->on_ready(leaf); };
}

ReduceStats GradReducer::finish() {
    if (world_size() == 1) return {};
    State& s = *s_;
    auto t0 = std::chrono::steady_clock::now();
    s.open_step();
    s.step_open = false;
    while (s.next_to_start < s.buckets.size()) s.start(s.next_to_start++);
    // Which parameters have a gradient on some rank: the others keep none, as in one process.
    // After the last bucket, so every rank issues its collectives in the same order.
    std::vector<int> has(s.params.size());
    for (size_t i = 0; i < s.params.size(); ++i) has[i] = s.params[i].grad().defined();
    check(MPI_Allreduce(MPI_IN_PLACE, has.data(), (int)has.size(), MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
    for (size_t i = 0; i < s.params.size(); ++i)
        if (has[i] && !s.params[i].grad().defined()) s.params[i].set_grad(zeros_like(s.params[i]));
    const double inv = 1.0 / world_size();
    for (State::Bucket& b : s.buckets) {
        check(MPI_Wait(&b.request, MPI_STATUS_IGNORE), "MPI_Wait");
        const char* src = b.buffer.data();
        for (const State::Piece& p : b.pieces) {
            if (has[p.param]) {
                if (b.dtype == DType::F32) {
                    float* dst = s.params[p.param].grad().data<float>() + p.offset;
                    const float* v = reinterpret_cast<const float*>(src);
                    const float f = (float)inv;
                    for (int64_t i = 0; i < p.count; ++i) dst[i] = v[i] * f;
                } else {
                    double* dst = s.params[p.param].grad().data<double>() + p.offset;
                    const double* v = reinterpret_cast<const double*>(src);
                    for (int64_t i = 0; i < p.count; ++i) dst[i] = v[i] * inv;
                }
            }
            src += p.count * dtype_size(b.dtype);
        }
    }
    s.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return s.stats;
}

#else  // built without MPI: one process, nothing to reduce

struct GradReducer::State {};
GradReducer::GradReducer(std::vector<Tensor>, int64_t) {}
GradReducer::~GradReducer() = default;
autograd::GradReadyHook GradReducer::hook() { return nullptr; }
ReduceStats GradReducer::finish() { return {}; }

#endif

ReduceStats allreduce_mean_grads(const std::vector<Tensor>& params, int64_t bucket_bytes) {
    GradReducer reducer(params, bucket_bytes);
    return reducer.finish();
}

}  // namespace cnx::dist
