#pragma once
// The machine's limits, measured: fp32 FMA, bf16 dot-product and fp16 FMA throughput (GFLOP/s) and memory
// bandwidth (GB/s), for one core alone and for every hardware thread at once. Kernels and
// benchmarks compare themselves with these figures (`convnext bench --peak`, `fraction_of_peak`),
// and the GEMM uses bf16 dot products or fp16 FMAs only where they measure faster than fp32 FMAs.
//
// Rates are work per CPU-second of each thread (CLOCK_THREAD_CPUTIME_ID), summed over threads
// for the all-thread figures, so a machine shared with other jobs still gives the hardware's
// figure rather than the share it granted; run on a quiet machine for the all-thread memory
// bandwidth, which only means something when the threads really overlap.
#include <string>

namespace cnx {

struct PeakRates {
    double fp32_core = 0, fp32_all = 0;  // FMA GFLOP/s: widest vectors the CPU has (2 FLOP per lane)
    double bf16_core = 0, bf16_all = 0;  // vdpbf16ps GFLOP/s (4 FLOP per 32-bit lane); 0 without AVX512_BF16
    double fp16_core = 0, fp16_all = 0;  // vfmadd231ph GFLOP/s (2 FLOP per 16-bit lane); 0 without AVX512_FP16
    double mem_core = 0, mem_all = 0;    // triad a = b + s*c over buffers far larger than L3, GB/s
                                         // (STREAM's count: 12 bytes per element); 0 when not measured
    int threads = 1;                     // threads behind the *_all figures
    std::string fp32_kind;               // "avx512", "avx2", or "generic": which FMA loop ran
};

// Measures now. compute: the FMA and dot-product figures (~0.3 s); memory: the triad figures
// (~1 s, ~200 MB of buffers). threads <= 0: all hardware threads.
PeakRates measure_peak(bool compute, bool memory, int threads = 0);

// The compute figures of this CPU model (fp32, bf16 and fp16, one core and all), from the per-CPU cache
// file in cache_dir() when present, otherwise measured once (~0.3 s) and written there. The
// environment variable CNX_PEAK_CACHE=off skips the file (always measure, never write).
// from_cache (optional) says which happened on the first call of this process.
PeakRates compute_peak(bool* from_cache = nullptr);

// Writes rates to the per-CPU cache file (what `bench --peak` measured) and makes compute_peak()
// return them from now on. Returns the file's path, or "" when it could not be written.
std::string store_peak(const PeakRates& rates);

}  // namespace cnx
