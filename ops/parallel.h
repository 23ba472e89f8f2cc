#pragma once
// parallel_for for the heavy kernels (GEMM, depthwise conv, patchify gathers, column sums).
//
// Why not `#pragma omp parallel for`: an OpenMP region ends at a barrier, so the calling thread
// waits until every team thread has run, even one the OS has not scheduled yet. On a machine
// whose cores are busy with other work that wait is a scheduler time slice (milliseconds) per
// region, and a training step runs hundreds of regions: measured here, 2 threads ran 3x slower
// than 1. This pool hands out work in chunks from a shared counter; the caller takes chunks too,
// and returns as soon as every chunk is finished, so a helper that never got a core simply takes
// no chunk. On an idle machine it behaves like the OpenMP loop (helpers spin briefly between
// calls, then sleep).
//
// The pool has get_num_threads() - 1 helper threads (the count set by set_num_threads, i.e.
// OpenMP's). Calls from inside a parallel_for chunk, an OpenMP region, or a second thread while
// the pool is busy run serially on the calling thread.
#include <cstdint>
#include <functional>

namespace cnx {

// Element counts below which a loop stays on the calling thread: waking helpers costs more than
// the work. A loop that does a load, an add and a store per element needs more elements to pay
// for it than one that spends tens of cycles per element on exp or erf (GELU, softmax, the unary
// math), which splits earlier.
constexpr int64_t kParallelMin = 1 << 15;
constexpr int64_t kParallelMinCostly = 1 << 14;
// The same for convolution loops, counted in multiply-adds (or values copied by im2col/col2im).
constexpr int64_t kParallelMinMacs = 1 << 16;

// Runs fn(i) once for every i in [0, n), in any order and on any of the pool's threads. If a call
// throws, the other chunks still run and the first exception is rethrown here afterwards.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Cuts [0, n) into contiguous ranges and runs fn(begin, end) on each, in parallel: about 8 ranges
// per thread (so a late helper costs little), none shorter than `grain` items, and a single call
// fn(0, n) when n <= grain (pass a grain that makes small work serial). Range boundaries depend
// only on n, grain and the thread count.
void parallel_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// 0 on the thread that called parallel_for (or outside one), 1..threads-1 on the helpers: an
// index for per-thread scratch.
int parallel_thread_index();

// How many threads a parallel_for may use now (>= 1).
int parallel_threads();

}  // namespace cnx
