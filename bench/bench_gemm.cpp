// Google Benchmark: the GEMMs of a ConvNeXt-T block at batch 8 / 224 (pwconv1 and pwconv2,
// forward NT, dx NN, dW TN) on the AVX-512 kernels and on OpenBLAS, in GFLOP per CPU-second.
//   bench_gemm --benchmark_filter=stage0 --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "ops/gemm.h"

using namespace cnx;

namespace {

struct Shape3 {
    const char* name;
    bool ta, tb;
    int64_t M, N, K;
};

// M = pixels of a batch-8 stage (8*56*56, 8*28*28, 8*14*14, 8*7*7), C = 96, 192, 384, 768.
std::vector<Shape3> shapes() {
    std::vector<Shape3> s;
    const int64_t pix[4] = {25088, 6272, 1568, 392}, dims[4] = {96, 192, 384, 768};
    static std::vector<std::string> names;
    names.reserve(64);
    for (int st = 0; st < 4; ++st) {
        const int64_t M = pix[st], C = dims[st];
        auto add = [&](const char* what, bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
            names.push_back("stage" + std::to_string(st) + "/" + what);
            s.push_back({names.back().c_str(), ta, tb, m, n, k});
        };
        add("pw1_fwd_NT", false, true, M, 4 * C, C);
        add("pw2_fwd_NT", false, true, M, C, 4 * C);
        add("pw2_dx_NN", false, false, M, 4 * C, C);
        add("pw1_dx_NN", false, false, M, C, 4 * C);
        add("pw2_dW_TN", true, false, C, 4 * C, M);
        add("pw1_dW_TN", true, false, 4 * C, C, M);
    }
    return s;
}

void run(benchmark::State& st, Shape3 s, GemmBackend be) {
    set_gemm_backend(be);
    const int64_t am = s.ta ? s.K : s.M, an = s.ta ? s.M : s.K;
    const int64_t bm = s.tb ? s.N : s.K, bn = s.tb ? s.K : s.N;
    Tensor A = randn({am, an}), B = randn({bm, bn}), C = zeros({s.M, s.N});
    for (auto _ : st) {
        gemm<float>(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data<float>(), an, B.data<float>(), bn, 0.0f,
                    C.data<float>(), s.N);
        benchmark::ClobberMemory();
    }
    st.counters["GFLOPS"] = benchmark::Counter(2.0 * s.M * s.N * s.K * st.iterations(), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
    set_gemm_backend(GemmBackend::Auto);
}

int reg = [] {
    for (const auto& s : shapes()) {
        if (gemm_avx512_supported())
            benchmark::RegisterBenchmark((std::string(s.name) + "/avx512").c_str(), run, s, GemmBackend::Avx512)
                ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark((std::string(s.name) + "/openblas").c_str(), run, s, GemmBackend::OpenBLAS)
            ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    }
    return 0;
}();

}  // namespace

CNX_BENCHMARK_MAIN()
