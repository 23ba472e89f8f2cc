// Google Benchmark: the GEMMs of a ConvNeXt-T block at batch 8 / 224 (pwconv1 and pwconv2,
// forward NT, dx NN, dW TN; bench/gemm_shapes.h) on the AVX-512 kernels (float32, and bf16 where
// the CPU has AVX512_BF16) and on OpenBLAS, in GFLOP per CPU-second.
//   bench_gemm --benchmark_filter=stage0 --benchmark_min_time=0.5
// `convnext bench --gemm` prints the same shapes as a table, best of several runs.
#include <benchmark/benchmark.h>

#include <string>

#include "bench/bench_main.h"
#include "bench/gemm_shapes.h"

using namespace cnx;

namespace {

enum class Path { Avx512, Bf16, OpenBLAS };

void run(benchmark::State& st, bench::GemmShape s, Path path) {
    set_gemm_backend(path == Path::OpenBLAS ? GemmBackend::OpenBLAS : GemmBackend::Avx512);
    set_bf16_kernel(Bf16Kernel::Always);
    MatmulPrecisionGuard pg(path == Path::Bf16 ? MatmulPrecision::BFloat16 : MatmulPrecision::Float32);
    bench::GemmOperands ops(s);
    for (auto _ : st) {
        ops.run(s);
        benchmark::ClobberMemory();
    }
    st.counters["GFLOPS"] =
        benchmark::Counter(s.flops() * st.iterations(), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
    set_gemm_backend(GemmBackend::Auto);
    set_bf16_kernel(Bf16Kernel::Auto);
}

int reg = [] {
    const auto opts = models::model_options("convnext_tiny");
    for (const auto& s : bench::convnext_gemm_shapes(opts, 8, 224)) {
        auto add = [&](const char* suffix, Path p) {
            benchmark::RegisterBenchmark((s.name + suffix).c_str(), run, s, p)
                ->MeasureProcessCPUTime()
                ->Unit(benchmark::kMillisecond);
        };
        if (gemm_avx512_supported()) add("/avx512", Path::Avx512);
        if (gemm_bf16_supported()) add("/bf16", Path::Bf16);
        add("/openblas", Path::OpenBLAS);
    }
    return 0;
}();

}  // namespace

CNX_BENCHMARK_MAIN()
