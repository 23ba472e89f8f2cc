#pragma once
// The main() of every Google Benchmark program in bench/. Threads come from CNX_BENCH_THREADS
// (default 2). On a shared, loaded machine wall time says little; the rates are per CPU-second of
// the whole process (so per core), which load barely moves.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "core/threads.h"

#define CNX_BENCHMARK_MAIN()                                      \
    int main(int argc, char** argv) {                             \
        const char* t = std::getenv("CNX_BENCH_THREADS");         \
        cnx::set_num_threads(t ? std::atoi(t) : 2);               \
        benchmark::Initialize(&argc, argv);                       \
        benchmark::RunSpecifiedBenchmarks();                      \
        return 0;                                                 \
    }
