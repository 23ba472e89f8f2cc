// Peak measurements: loops of independent accumulators (enough to cover the FMA latency on every
// core seen: 4-5 cycles x 2 pipes needs >= 10 in flight; 24 are used), timed in thread CPU time,
// best of several runs; a triad over buffers of max(2 x L3, 64 MB) each.
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics when they are
// compiled through a target pragma rather than -mavx512f. Clang ignores the GCC target pragma, so
// each region also carries a clang attribute pragma (which reaches the lambdas too).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "core/cpu_peak.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/cpu_info.h"
#include "core/json.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CNX_PEAK_X86 1
#else
#define CNX_PEAK_X86 0
#endif

namespace cnx {
namespace {

constexpr int kAcc = 24;

// Each loop returns a value that depends on every accumulator, so none is optimised away, and
// takes `iters` as a run-time count. FLOPs per iteration: kAcc x lanes x 2 (x 2 for dpbf16).
typedef float v8f __attribute__((vector_size(32)));

__attribute__((noinline)) float fma_generic(int64_t iters) {
    v8f acc[kAcc], a, b;
    for (int i = 0; i < 8; ++i) a[i] = 0.999f, b[i] = 1e-4f;
    for (int i = 0; i < kAcc; ++i) acc[i] = a * (float)i;
    for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
        for (int i = 0; i < kAcc; ++i) acc[i] = acc[i] * a + b;
    float s = 0;
    for (int i = 0; i < kAcc; ++i) s += acc[i][0] + acc[i][7];
    return s;
}

#if CNX_PEAK_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#endif
__attribute__((noinline)) float fma_avx2(int64_t iters) {
    __m256 acc[kAcc];
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
    for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
        for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __m256 s = acc[0];
    for (int i = 1; i < kAcc; ++i) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#endif
// kAcc independent chains acc = step(acc), then their sum (so none is optimised away).
template <class Step>
__attribute__((always_inline)) inline float chains_avx512(int64_t iters, Step step) {
    __m512 acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
    for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
        for (int i = 0; i < kAcc; ++i) acc[i] = step(acc[i]);
    __m512 s = acc[0];
    for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((noinline)) float fma_avx512(int64_t iters) {
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-4f);
    return chains_avx512(iters, [&](__m512 x) { return _mm512_fmadd_ps(x, a, b); });
}

// a[i] = b[i] + 3 c[i] over [begin, end) (16-float aligned).
__attribute__((noinline)) void triad_avx512(float* a, const float* b, const float* c, int64_t n) {
    const __m512 s = _mm512_set1_ps(3.0f);
    for (int64_t i = 0; i < n; i += 16)
        _mm512_store_ps(a + i, _mm512_fmadd_ps(_mm512_load_ps(c + i), s, _mm512_load_ps(b + i)));
}
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bf16"))), apply_to = function)
#endif
__attribute__((noinline)) float dpbf16_avx512(int64_t iters) {
    // 1.0 and 2^-10 in bf16, pairwise: every lane adds 2 x 2^-10 per instruction, far from overflow.
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3a80);
    return chains_avx512(iters, [&](__m512 x) { return _mm512_dpbf16_ps(x, a, b); });
}
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options

// GCC 12 declares the fp16 vector types for a target pragma; clang 14 only when the whole file
// is compiled for AVX512_FP16.
#if (!defined(__clang__) && __GNUC__ >= 12) || (defined(__clang__) && defined(__AVX512FP16__))
#define CNX_PEAK_FP16 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512fp16")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512fp16"))), apply_to = function)
#endif
__attribute__((noinline)) float fma_fp16_avx512(int64_t iters) {
    // Half-precision chains acc = acc * a + b with a = 1 - 2^-11 and b = 2^-10: every lane settles
    // near 2 (far from overflow and from subnormals), whatever the iteration count.
    // Its own chains rather than chains_avx512's: casting each step between __m512 and __m512h
    // made GCC 12 spill the accumulators every iteration.
    const __m512h a = _mm512_castsi512_ph(_mm512_set1_epi16(0x3bff));
    const __m512h b = _mm512_castsi512_ph(_mm512_set1_epi16(0x1400));
    __m512h acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_castsi512_ph(_mm512_set1_epi16((short)(0x3c00 + 16 * i)));
    for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
        for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_fmadd_ph(acc[i], a, b);
    __m512h s = acc[0];
    for (int i = 1; i < kAcc; ++i) s = _mm512_add_ph(s, acc[i]);
    return (float)_mm512_reduce_add_ph(s);
}
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#else
#define CNX_PEAK_FP16 0
#endif
#endif

void triad_generic(float* a, const float* b, const float* c, int64_t n) {
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + 3.0f * c[i];
}

volatile float g_sink;

// Work per CPU-second of a loop: best of `reps` runs, each grown until it lasts >= min_s.
double rate_of(const std::function<double(int64_t)>& run_for_work, double min_s, int reps) {
    int64_t iters = 1000;
    double best = 0;
    for (int r = 0; r < reps;) {
        const double t0 = thread_cpu_seconds();
        const double work = run_for_work(iters);
        const double dt = thread_cpu_seconds() - t0;
        if (dt < min_s) {
            iters = (int64_t)((double)iters * std::min(100.0, 1.5 * min_s / std::max(dt, 1e-6)));
            continue;
        }
        best = std::max(best, work / dt);
        ++r;
    }
    return best;
}

// Runs fn on n threads started together; returns the sum of what each returns.
double on_threads(int n, const std::function<double(int)>& fn) {
    if (n <= 1) return fn(0);
    std::vector<double> out(n, 0.0);
    std::atomic<int> ready{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < n; ++t)
        pool.emplace_back([&, t] {
            ready.fetch_add(1);
            while (ready.load() < n) std::this_thread::yield();
            out[t] = fn(t);
        });
    for (auto& th : pool) th.join();
    double s = 0;
    for (double v : out) s += v;
    return s;
}

struct FlopLoop {
    float (*fn)(int64_t);
    double flops_per_iter;
    const char* kind;
};

FlopLoop fp32_loop(const CpuInfo& ci) {
#if CNX_PEAK_X86
    if (ci.avx512) return {fma_avx512, kAcc * 16 * 2.0, "avx512"};
    if (ci.avx2_fma) return {fma_avx2, kAcc * 8 * 2.0, "avx2"};
#endif
    return {fma_generic, kAcc * 8 * 2.0, "generic"};
}

double gflops(const FlopLoop& l) {
    return rate_of([&](int64_t it) { g_sink = l.fn(it); return l.flops_per_iter * (double)it; }, 0.02, 3) / 1e9;
}

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};

void measure_memory(PeakRates& r, int threads) {
    const CpuInfo& ci = cpu_info();
    int64_t n = std::max<int64_t>(2 * ci.l3_bytes, 64 << 20) / (int64_t)sizeof(float);
    n = (n + 16 * threads - 1) / (16 * threads) * (16 * threads);
    std::unique_ptr<float, FreeDeleter> a((float*)std::aligned_alloc(64, n * sizeof(float))),
        b((float*)std::aligned_alloc(64, n * sizeof(float))), c((float*)std::aligned_alloc(64, n * sizeof(float)));
    if (!a || !b || !c) return;
    void (*triad)(float*, const float*, const float*, int64_t) = triad_generic;
#if CNX_PEAK_X86
    if (ci.avx512) triad = triad_avx512;
#endif
    auto run = [&](int t, int nt) {
        const int64_t chunk = n / nt, off = chunk * t;
        float *pa = a.get() + off, *pb = b.get() + off, *pc = c.get() + off;
        std::memset(pa, 0, chunk * sizeof(float));  // first touch on the thread that streams it
        std::fill(pb, pb + chunk, 1.0f);
        std::fill(pc, pc + chunk, 2.0f);
        double best = 0;
        for (int rep = 0; rep < 4; ++rep) {
            const double t0 = thread_cpu_seconds();
            triad(pa, pb, pc, chunk);
            best = std::max(best, 12.0 * (double)chunk / (thread_cpu_seconds() - t0));
        }
        return best / 1e9;
    };
    r.mem_core = run(0, 1);
    r.mem_all = on_threads(threads, [&](int t) { return run(t, threads); });
}

// ---- the per-CPU cache file ----------------------------------------------------------------

std::string cache_path() {
    const std::string dir = cache_dir();
    return dir.empty() ? "" : dir + "/peak-" + cpu_info().key() + ".json";
}

bool cache_enabled() {
    const char* e = std::getenv("CNX_PEAK_CACHE");
    return !(e && std::string(e) == "off");
}

bool read_cache(PeakRates& r) {
    const std::string path = cache_path();
    if (path.empty()) return false;
    std::ifstream f(path);
    if (!f) return false;
    try {
        const auto j = parse_json(f);
        r.fp32_core = j.at("fp32_gflops_per_core").get<double>();
        r.fp32_all = j.at("fp32_gflops_all").get<double>();
        r.bf16_core = j.at("bf16_gflops_per_core").get<double>();
        r.bf16_all = j.at("bf16_gflops_all").get<double>();
        // Files written before the fp16 figures existed lack them: measured again where it matters.
        if (!j.contains("fp16_gflops_per_core") && cpu_info().avx512_fp16) return false;
        r.fp16_core = j.value("fp16_gflops_per_core", 0.0);
        r.fp16_all = j.value("fp16_gflops_all", 0.0);
        r.mem_core = j.value("mem_gbs_per_core", 0.0);
        r.mem_all = j.value("mem_gbs_all", 0.0);
        r.threads = j.at("threads").get<int>();
        r.fp32_kind = j.at("fp32_kind").get<std::string>();
        return r.fp32_core > 0 && r.fp32_all > 0 && r.threads > 0;
    } catch (const std::exception&) {
        return false;  // a damaged or older file: measure again and overwrite it
    }
}

void mkdirs(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); ++i)
        if (i == dir.size() || dir[i] == '/') mkdir(dir.substr(0, i).c_str(), 0755);
}

std::string write_cache(const PeakRates& r) {
    const std::string path = cache_path();
    if (path.empty()) return "";
    mkdirs(cache_dir());
    nlohmann::json j{{"cpu", cpu_info().model_name},
                     {"fp32_kind", r.fp32_kind},
                     {"fp32_gflops_per_core", r.fp32_core},
                     {"fp32_gflops_all", r.fp32_all},
                     {"bf16_gflops_per_core", r.bf16_core},
                     {"bf16_gflops_all", r.bf16_all},
                     {"fp16_gflops_per_core", r.fp16_core},
                     {"fp16_gflops_all", r.fp16_all},
                     {"mem_gbs_per_core", r.mem_core},
                     {"mem_gbs_all", r.mem_all},
                     {"threads", r.threads}};
    // Written aside and renamed: a concurrent reader sees the old file or the new one, never half.
    const std::string tmp = path + ".tmp." + std::to_string((long long)getpid());
    {
        std::ofstream f(tmp);
        if (!f) return "";
        f << dump_json(j, 2) << "\n";
        if (!f) return "";
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        return "";
    }
    return path;
}

std::mutex g_mutex;
std::unique_ptr<PeakRates> g_peak;
bool g_from_cache = false;

}  // namespace

PeakRates measure_peak(bool compute, bool memory, int threads) {
    const CpuInfo& ci = cpu_info();
    PeakRates r;
    r.threads = threads > 0 ? threads : ci.hardware_threads;
    const FlopLoop fp32 = fp32_loop(ci);
    r.fp32_kind = fp32.kind;
    if (compute) {
        r.fp32_core = gflops(fp32);
        r.fp32_all = on_threads(r.threads, [&](int) { return gflops(fp32); });
#if CNX_PEAK_X86
        if (ci.avx512_bf16) {
            const FlopLoop bf16{dpbf16_avx512, kAcc * 16 * 4.0, "avx512_bf16"};
            r.bf16_core = gflops(bf16);
            r.bf16_all = on_threads(r.threads, [&](int) { return gflops(bf16); });
        }
#if CNX_PEAK_FP16
        if (ci.avx512_fp16) {
            const FlopLoop fp16{fma_fp16_avx512, kAcc * 32 * 2.0, "avx512_fp16"};
            r.fp16_core = gflops(fp16);
            r.fp16_all = on_threads(r.threads, [&](int) { return gflops(fp16); });
        }
#endif
#endif
    }
    if (memory) measure_memory(r, r.threads);
    return r;
}

PeakRates compute_peak(bool* from_cache) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_peak) {
        auto r = std::make_unique<PeakRates>();
        g_from_cache = cache_enabled() && read_cache(*r);
        if (!g_from_cache) {
            *r = measure_peak(true, false);
            if (cache_enabled()) write_cache(*r);
        }
        g_peak = std::move(r);
    }
    if (from_cache) *from_cache = g_from_cache;
    return *g_peak;
}

std::string store_peak(const PeakRates& rates) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_peak = std::make_unique<PeakRates>(rates);
    g_from_cache = false;
    return cache_enabled() ? write_cache(rates) : "";
}

}  // namespace cnx
