// Google Benchmark: the ops of a ConvNeXt-T training step at batch 8 / 224 (W1) and of a
// ConvNeXt-atto step at batch 128 / 32 (W4), forward and forward+backward, per stage.
// Rates are per CPU-second of the whole process: on a shared machine wall time mostly measures
// the other tenants. Threads from CNX_BENCH_THREADS (default 2).
//   bench_ops --benchmark_filter=mlp
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "core/autograd.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "ops/fused.h"

using namespace cnx;

namespace {

struct Stage {
    std::string name;
    int64_t N, H, C;
};

std::vector<Stage> stages() {
    return {{"tiny_s0", 8, 56, 96},   {"tiny_s1", 8, 28, 192},  {"tiny_s2", 8, 14, 384}, {"tiny_s3", 8, 7, 768},
            {"atto_s0", 128, 8, 40},  {"atto_s1", 128, 4, 80},  {"atto_s2", 128, 2, 160}, {"atto_s3", 128, 1, 320}};
}

Tensor param(const Shape& s) { return randn(s).requires_grad_(); }

// fn builds the op's output; backward=true also runs backward with a fixed gradient (made once, so
// filling it is not timed). Leaf inputs accumulate their .grad in place from the second iteration
// on: one axpy per input, a few percent of the backward.
void run(benchmark::State& st, const std::function<Tensor()>& fn, bool backward, double flops) {
    Tensor seed;
    if (backward) seed = randn(fn().shape());
    for (auto _ : st) {
        Tensor y = fn();
        if (backward) y.backward(seed);
    }
    if (flops > 0)
        st.counters["GFLOPS"] = benchmark::Counter(flops * st.iterations(), benchmark::Counter::kIsRate,
                                                   benchmark::Counter::kIs1000);
}

void reg(const std::string& name, std::function<Tensor()> fn, double fwd_flops) {
    for (bool bw : {false, true})
        benchmark::RegisterBenchmark((name + (bw ? "/fwd+bwd" : "/fwd")).c_str(),
                                     [=](benchmark::State& st) { run(st, fn, bw, fwd_flops * (bw ? 3 : 1)); })
            ->MeasureProcessCPUTime()
            ->Unit(benchmark::kMillisecond);
}

int registered = [] {
    for (const Stage& s : stages()) {
        const int64_t M = s.N * s.H * s.H, C = s.C;
        Tensor x = randn({s.N, s.H, s.H, C}).requires_grad_();
        Tensor w1 = param({4 * C, C}), b1 = param({4 * C}), w2 = param({C, 4 * C}), b2 = param({C}),
               gm = param({C}), dw = param({C, 1, 7, 7}), db = param({C}), lw = param({C}), lb = param({C});
        reg(s.name + "/mlp_fused", [=] { return convnext_mlp(x, w1, b1, w2, b2, gm, x); }, 2.0 * M * C * 4 * C * 2);
        reg(s.name + "/mlp_unfused",
            [=] { return add(x, channel_scale(linear(gelu(linear(x, w1, b1)), w2, b2), gm)); },
            2.0 * M * C * 4 * C * 2);
        reg(s.name + "/dwconv7", [=] { return depthwise_conv2d(x, dw, db, 1, 3); }, 2.0 * M * C * 49);
        reg(s.name + "/layer_norm", [=] { return layer_norm(x, lw, lb, 1e-6); }, 0);
    }
    return 0;
}();

}  // namespace

CNX_BENCHMARK_MAIN()
