#pragma once
// The GEMMs of a ConvNeXt block's pointwise convolutions, one block per stage, and a timer for
// them in GFLOP per CPU-second: shared by bench/bench_gemm.cpp (Google Benchmark) and
// `convnext bench --gemm`.
//
// Per stage (P = batch x H x W pixels, C channels), pwconv1 is x[P,C] W1^T[C,4C], pwconv2
// h[P,4C] W2^T[4C,C]; their backward passes are dX = dY W (NN) and dW = dY^T X (TN).
#include <ctime>
#include <string>
#include <vector>

#include "core/cpu_info.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "models/convnext.h"
#include "ops/gemm.h"

namespace cnx::bench {

struct GemmShape {
    std::string name;  // "stage0/pw1_fwd_NT"
    bool ta, tb;
    int64_t M, N, K;
    double flops() const { return 2.0 * (double)M * (double)N * (double)K; }
};

inline std::vector<GemmShape> convnext_gemm_shapes(const models::ConvNeXtOptions& options, int64_t batch,
                                                   int64_t image_size) {
    const models::ModelCost cost = models::model_cost(options, image_size, image_size);
    std::vector<GemmShape> s;
    for (size_t st = 0; st < cost.stages.size(); ++st) {
        const int64_t P = batch * cost.stages[st].height * cost.stages[st].width, C = cost.stages[st].dim;
        const std::string pre = "stage" + std::to_string(st) + "/";
        s.push_back({pre + "pw1_fwd_NT", false, true, P, 4 * C, C});
        s.push_back({pre + "pw2_fwd_NT", false, true, P, C, 4 * C});
        s.push_back({pre + "pw2_dx_NN", false, false, P, 4 * C, C});
        s.push_back({pre + "pw1_dx_NN", false, false, P, C, 4 * C});
        s.push_back({pre + "pw2_dW_TN", true, false, C, 4 * C, P});
        s.push_back({pre + "pw1_dW_TN", true, false, 4 * C, C, P});
    }
    return s;
}

// Operands of one shape (random, as stored: A is [K,M] when ta, B is [N,K] when tb).
struct GemmOperands {
    Tensor A, B, C;
    int64_t lda, ldb;
    explicit GemmOperands(const GemmShape& s)
        : A(randn({s.ta ? s.K : s.M, s.ta ? s.M : s.K})),
          B(randn({s.tb ? s.N : s.K, s.tb ? s.K : s.N})),
          C(zeros({s.M, s.N})),
          lda(s.ta ? s.M : s.K),
          ldb(s.tb ? s.K : s.N) {}
    void run(const GemmShape& s) {
        gemm<float>(s.ta, s.tb, s.M, s.N, s.K, 1.0f, A.data<float>(), lda, B.data<float>(), ldb, 0.0f, C.data<float>(),
                    s.N);
    }
};

struct GemmRate {
    double cpu_gflops = 0;   // per CPU-second: of the calling thread (1 thread) or the process
    double wall_gflops = 0;  // per second of wall time
};

// Best of `reps` calls (after one warm-up). With one thread the calling thread's CPU time is used;
// with more, the process's (helpers included), so cpu_gflops is a per-core rate either way.
inline GemmRate time_gemm(const GemmShape& s, GemmOperands& ops, int threads, int reps) {
    auto cpu_now = [threads] {
        return threads == 1 ? thread_cpu_seconds() : (double)std::clock() / CLOCKS_PER_SEC;
    };
    auto wall_now = [] {
        timespec t{};
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
    };
    ops.run(s);
    double best_cpu = 1e30, best_wall = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double c0 = cpu_now(), w0 = wall_now();
        ops.run(s);
        best_cpu = std::min(best_cpu, cpu_now() - c0);
        best_wall = std::min(best_wall, wall_now() - w0);
    }
    return {s.flops() / std::max(best_cpu, 1e-9) / 1e9, s.flops() / std::max(best_wall, 1e-9) / 1e9};
}

}  // namespace cnx::bench
