#pragma once
// The main() of every Google Benchmark program in bench/. Threads come from CNX_BENCH_THREADS
// (default 2). On a shared, loaded machine wall time says little; the rates are per CPU-second of
// the whole process (so per core), which load barely moves. CNX_BENCH_KC / CNX_BENCH_NC override
// the GEMM blocking (default: from this CPU's cache sizes), for sweeping it on a new CPU.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "core/threads.h"
#include "ops/gemm.h"

#define CNX_BENCHMARK_MAIN()                                      \
    int main(int argc, char** argv) {                             \
        const char* t = std::getenv("CNX_BENCH_THREADS");         \
        cnx::set_num_threads(t ? std::atoi(t) : 2);               \
        const char* kc = std::getenv("CNX_BENCH_KC");             \
        const char* nc = std::getenv("CNX_BENCH_NC");             \
        cnx::set_gemm_blocking({kc ? std::atoll(kc) : 0, nc ? std::atoll(nc) : 0}); \
        benchmark::Initialize(&argc, argv);                       \
        benchmark::RunSpecifiedBenchmarks();                      \
        return 0;                                                 \
    }
