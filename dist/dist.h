#pragma once
// Data parallelism over MPI: one process per rank, each holding the whole model. What a training
// loop needs and nothing more: who am I, broadcast named tensors from rank 0, average gradients
// across ranks (bucketed all-reduce), sum counters, gather small strings, barrier, abort.
//
// A plain launch never touches MPI: init() only calls MPI_Init when an MPI launcher's
// environment variables are present (mpirun/mpiexec, srun with PMI/PMIx). Singleton MPI_Init
// under Open MPI starts its runtime, probes network interfaces and may print warnings or fail in
// containers; a single process has nothing to gain from it. Built without MPI
// (CONVNEXT_HAVE_MPI unset), every function is the single-process no-op and init() refuses a
// multi-rank launch with a clear error instead of silently training K independent copies.
//
//   dist::init(&argc, &argv);
//   dist::broadcast(model->state_dict());          // every rank starts from rank 0's weights
//   dist::GradReducer reducer(params);
//   { autograd::GradReadyScope overlap(reducer.hook()); loss.backward(); }
//   reducer.finish();                               // each rank now holds the global-batch gradient
//   opt.step();
//   dist::finalize();
#include <cstdint>
#include <string>
#include <vector>

#include <memory>

#include "core/autograd.h"
#include "core/tensor.h"

namespace cnx::dist {

// True when the library was built with MPI.
bool compiled_with_mpi();
// True when the environment says an MPI launcher started this process (whatever world size).
bool launched_by_mpi();
// The world size the launcher announces (1 when not launched by one); readable before init().
int launcher_world_size();
// Processes of this job on this machine (OMPI_COMM_WORLD_LOCAL_SIZE and friends); 1 if unknown.
int local_size();

// MPI_Init_thread(MPI_THREAD_FUNNELED) when launched by mpirun; a no-op otherwise. Only the
// thread that called init() may call the collective functions below (loader workers and OpenMP
// threads never do). Throws when the launcher asks for several ranks and MPI is unavailable.
void init(int* argc, char*** argv);
// MPI_Finalize if init() started MPI; safe to call more than once.
void finalize();
// Ends every rank of the job with `code` (MPI_Abort), so an error on one rank never leaves the
// others waiting in a collective. Plain exit when MPI is not running.
[[noreturn]] void abort(int code);

bool initialized();  // init() started MPI
int rank();          // 0 without MPI
int world_size();    // 1 without MPI
inline bool is_root() { return rank() == 0; }
inline bool distributed() { return world_size() > 1; }

void barrier();

// Copies rank 0's values into every rank's tensors, in place. All ranks must pass the same
// names, shapes and dtypes in the same order (checked: a mismatch is an error naming the first
// differing entry).
void broadcast(const NamedTensors& tensors, int root = 0);
// Rank `root`'s bytes on every rank.
std::string broadcast_bytes(const std::string& bytes, int root = 0);

// Element-wise sums across ranks, in place, the result on every rank.
void allreduce_sum(double* values, int64_t n);
void allreduce_sum(int64_t* values, int64_t n);

// Every rank's string, in rank order, on every rank.
std::vector<std::string> allgather_strings(const std::string& s);

// Averages the gradients of `params` across ranks, in place: afterwards every rank holds
// (1/K) * sum over ranks of its gradient, which for equal per-rank batches is the gradient of the
// mean loss over the global batch. A parameter that has no gradient on some rank counts as zero
// there; one with no gradient on any rank keeps none (the optimiser then skips it, as a single
// process would).
constexpr int64_t kDefaultBucketBytes = 25 << 20;  // PyTorch DDP's default bucket_cap_mb
struct ReduceStats {
    int64_t buckets = 0, bytes = 0;  // what crossed the wire this call (per rank, one direction)
    int64_t started_in_backward = 0;  // buckets the grad-ready hook started before finish()
    double seconds = 0;              // wall time spent in finish() (what the overlap did not hide)
};

// The same, overlapped with backward. Gradients are packed into flat buckets of about
// `bucket_bytes` (one dtype each), laid out from the last parameter to the first because backward
// finishes the last layers first. Each bucket's non-blocking all-reduce starts as soon as all its
// parameters' gradients are final, reported by the autograd engine's grad-ready hook; buckets
// always start in the same order on every rank, as MPI requires. Every hook call also lets MPI
// progress the transfers in flight. finish() starts whatever did not start (all of it on a rank
// whose batch was empty, or without the hook), waits and writes the means into the gradients.
//
//   dist::GradReducer reducer(params);               // once; the buffers are reused every step
//   { autograd::GradReadyScope scope(reducer.hook()); loss.backward(); }
//   reducer.finish();                                // every rank now holds the global-batch gradient
//
// Memory: one buffer per bucket, i.e. one extra copy of the gradients, kept for the reducer's
// life. Without MPI or with one rank, everything is a no-op.
class GradReducer {
public:
    explicit GradReducer(std::vector<Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);
    ~GradReducer();
    GradReducer(const GradReducer&) = delete;
    GradReducer& operator=(const GradReducer&) = delete;

    // For autograd::GradReadyScope. Starts buckets as they fill; ignores tensors it does not know.
    autograd::GradReadyHook hook();
    // Completes this step's reduction (see above); the next backward starts a new step.
    ReduceStats finish();

private:
    struct State;
    std::unique_ptr<State> s_;
};

// One GradReducer step without overlap (tests, and loops that do not install the hook).
ReduceStats allreduce_mean_grads(const std::vector<Tensor>& params, int64_t bucket_bytes = kDefaultBucketBytes);

}  // namespace cnx::dist
