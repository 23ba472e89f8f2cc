// The fp16-FMA kernel behind BFloat16 matmul precision (ops/gemm_fp16.cpp): on every transpose and
// edge its error stays below what the bf16 kernel's rounding allows, whatever the operands' scale
// (powers of two are undone exactly, so a product of huge or tiny operands is as accurate as one
// near 1); NaN and infinity propagating as in float32; epilogues, GELU operands and
// bfloat16-stored operands; thread-count independence; and the choice between the kernels.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/cpu_peak.h"
#include "core/dtype.h"
#include "gemm_problem.h"
#include "ops/gemm.h"

using namespace cnx;
using namespace cnx::test;

namespace {

bool fp16_kernel_here() {
    if (gemm_fp16_supported() && gemm_avx512_supported()) return true;
    WARN("this CPU has no AVX512_FP16: the fp16 kernel is not exercised");
    return false;
}

// Runs p through the fp16 kernel (BFloat16 precision, Bf16Kernel::Fp16).
std::vector<float> run_fp16(const Problem& p, const GemmEpilogue<float>& ep = {}, bool ga = false, bool gb = false) {
    set_bf16_kernel(Bf16Kernel::Fp16);
    MatmulPrecisionGuard pg(MatmulPrecision::BFloat16);
    REQUIRE(gemm_uses_fp16());
    REQUIRE(std::string(gemm_precision_name()) == "fp16");
    return p.run(GemmBackend::Avx512, ep, ga, gb);
}

}  // namespace

TEST_CASE("gemm fp16: within bf16 rounding of the exact product on every transpose and edge", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    // Odd depths (a zero-padded last pair), flushes of the fp16 partial sums inside a depth block
    // and across several, partial row and column panels, depth chunks (K = 4000).
    const std::vector<EdgeShape> shapes = {{1, 1, 1, 0},    {13, 31, 7, 0},   {14, 32, 16, 0},   {15, 33, 17, 3},
                                           {29, 47, 257, 0}, {57, 96, 384, 5}, {100, 160, 45, 0}, {9, 70, 33, 2},
                                           {3, 7, 601, 0},   {31, 70, 256, 0}, {20, 40, 4000, 0}, {45, 20, 1300, 1}};
    for_each_edge_problem(shapes, 900, [](const Problem& p) {
        const auto got = run_fp16(p);
        const double err = max_err(p, got, reference(p, false));
        // The bf16 kernel's bound (tests/test_gemm.cpp); fp16 keeps 3 more bits per operand.
        REQUIRE(err < 1e-2);
        if (p.K > 1) REQUIRE(err > 0);  // it did round
        REQUIRE(padding_untouched(p, got));
    });
}

TEST_CASE("gemm fp16: closer to the exact product than bfloat16 rounding of the operands gets", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    // Root-mean-square error against the exact product, next to that of the exact product of the
    // bf16-rounded operands (what the bf16 kernel computes before its own float32 sums): the
    // fp16 kernel's rounding to 11 bits and its short fp16 sums must stay well under it. Depths
    // of ConvNeXt's GEMMs: 96 (one flush), 384, 1536 (several depth blocks), either layout of A.
    for (int64_t K : {96, 384, 1536})
        for (int t = 0; t < 4; ++t) {
            Problem p(t & 1, t & 2, 60, 64, K, 0, 1.0f, 0.0f, 1100 + K + t);
            const auto got = run_fp16(p);
            const auto exact = reference(p, false), bf16 = reference(p, true);
            double e16 = 0, eb = 0;
            for (int64_t q = 0; q < p.M * p.N; ++q) {
                e16 += ((double)got[q] - exact[q]) * ((double)got[q] - exact[q]);
                eb += ((double)bf16[q] - exact[q]) * ((double)bf16[q] - exact[q]);
            }
            INFO("K=" << K << " ta=" << (t & 1) << " tb=" << (t & 2) << " rms fp16 kernel "
                      << std::sqrt(e16 / (p.M * p.N)) << ", rms bf16 rounding " << std::sqrt(eb / (p.M * p.N)));
            REQUIRE(std::sqrt(e16) < 0.75 * std::sqrt(eb));
        }
}

TEST_CASE("gemm fp16: as accurate for huge, tiny and mixed-scale operands", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    // Rows of A and columns of B scaled far outside fp16's range (65504 down to 6e-8), and one row
    // and one column all zero: per-row and per-column powers of two bring each into range.
    const int64_t M = 40, N = 50, K = 700;
    for (int t = 0; t < 4; ++t) {
        Problem p(t & 1, t & 2, M, N, K, 0, 1.0f, 0.0f, 1200 + t);
        auto a_at = [&](int64_t i, int64_t k) -> float& { return p.ta ? p.A[k * p.lda + i] : p.A[i * p.lda + k]; };
        auto b_at = [&](int64_t k, int64_t j) -> float& { return p.tb ? p.B[j * p.ldb + k] : p.B[k * p.ldb + j]; };
        std::vector<double> row_scale(M), col_scale(N);
        for (int64_t i = 0; i < M; ++i) row_scale[i] = std::ldexp(1.0, (int)(i % 5) * 30 - 60);  // 2^-60 .. 2^60
        for (int64_t j = 0; j < N; ++j) col_scale[j] = std::ldexp(1.0, (int)(j % 3) * 25 - 25);  // 2^-25 .. 2^25
        row_scale[7] = 0, col_scale[11] = 0;
        for (int64_t i = 0; i < M; ++i)
            for (int64_t k = 0; k < K; ++k) a_at(i, k) = (float)(a_at(i, k) * row_scale[i]);
        for (int64_t k = 0; k < K; ++k)
            for (int64_t j = 0; j < N; ++j) b_at(k, j) = (float)(b_at(k, j) * col_scale[j]);
        const auto got = run_fp16(p);
        const auto ref = reference(p, false);
        double worst = 0;
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                const double s = row_scale[i] * col_scale[j];
                if (s == 0) {
                    REQUIRE(got[i * p.ldc + j] == 0.0f);
                    continue;
                }
                worst = std::max(worst, std::fabs((double)got[i * p.ldc + j] - ref[i * p.ldc + j]) / s);
            }
        INFO("ta=" << (t & 1) << " tb=" << (t & 2));
        REQUIRE(worst / (K / 3.0) < 1e-2);
    }
}

TEST_CASE("gemm fp16: epilogues, GELU operands and bfloat16-stored operands", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    const int64_t M = 45, N = 70, K = 301;
    std::vector<float> bias = random_floats(N, 5), scale = random_floats(N, 6), res = random_floats(M * N, 7);
    for (int t = 0; t < 4; ++t) {
        Problem p(t & 1, t & 2, M, N, K, 0, 1.0f, 0.0f, 1300 + t);
        for (auto& v : p.A) v *= 0.2f;
        INFO("ta=" << (t & 1) << " tb=" << (t & 2));
        std::vector<float> pre(M * N, 0.0f);
        GemmEpilogue<float> e1;
        e1.bias = bias.data(), e1.pre = pre.data(), e1.ld_pre = N, e1.act = GemmAct::Gelu;
        e1.col_scale = scale.data(), e1.residual = res.data(), e1.ld_residual = N;
        const auto c1 = run_fp16(p, e1);
        const auto c3 = run_fp16(p, {}, true, false), c4 = run_fp16(p, {}, false, true);
        const auto prod = reference(p, false), pga = reference(p, false, true, false),
                   pgb = reference(p, false, false, true);
        const double tol = 1e-2 * K / 3.0;
        double wp = 0, w1 = 0, w3 = 0, w4 = 0;
        for (int64_t q = 0; q < M * N; ++q) {
            const int64_t j = q % N;
            const double v = (double)prod[q] + bias[j];
            wp = std::max(wp, std::fabs(pre[q] - v));
            w1 = std::max(w1, std::fabs(c1[q] - (gelu_math::gelu((double)pre[q]) * scale[j] + res[q])));
            w3 = std::max(w3, std::fabs((double)c3[q] - pga[q]));
            w4 = std::max(w4, std::fabs((double)c4[q] - pgb[q]));
        }
        REQUIRE(wp < tol);
        REQUIRE(w1 < 1e-5);  // the epilogue itself runs in float32 on the pre-activation it stored
        REQUIRE(w3 < tol);
        REQUIRE(w4 < tol);

        // Operands stored in bfloat16 (saved activations): the kernel reads them as they are.
        std::vector<BFloat16> a16(p.A.size()), b16(p.B.size());
        for (size_t i = 0; i < a16.size(); ++i) a16[i] = float_to_bf16(p.A[i]), p.A[i] = bf16_to_float(a16[i]);
        for (size_t i = 0; i < b16.size(); ++i) b16[i] = float_to_bf16(p.B[i]), p.B[i] = bf16_to_float(b16[i]);
        set_bf16_kernel(Bf16Kernel::Fp16);
        set_gemm_backend(GemmBackend::Avx512);
        MatmulPrecisionGuard pg(MatmulPrecision::BFloat16);
        std::vector<float> mixed(M * p.ldc, 0.0f), widened(M * p.ldc, 0.0f);
        gemm_mixed<BFloat16, BFloat16>(p.ta, p.tb, M, N, K, 1.0f, a16.data(), p.lda, b16.data(), p.ldb, 0.0f,
                                       mixed.data(), p.ldc, {}, false, false);
        gemm<float>(p.ta, p.tb, M, N, K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f, widened.data(), p.ldc);
        REQUIRE(mixed == widened);  // bfloat16 widens exactly: the same rounded operands, the same sums
    }
}

TEST_CASE("gemm fp16: results do not depend on the thread count", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    const int prev_threads = get_num_threads();
    for (int t = 0; t < 4; ++t) {
        Problem p(t & 1, t & 2, 700, 300, 520, 0, 1.0f, 0.0f, 1400 + t);
        set_num_threads(1);
        const auto one = run_fp16(p);
        set_num_threads(3);
        REQUIRE(one == run_fp16(p));
    }
    set_num_threads(prev_threads);
}

TEST_CASE("gemm: BFloat16 precision picks the 16-bit kernel this CPU's measured rates favour", "[gemm][fp16]") {
    BackendGuard bg;
    GemmStateGuard sg;
    const PeakRates peak = compute_peak();
    set_bf16_kernel(Bf16Kernel::Auto);
    MatmulPrecisionGuard pg(MatmulPrecision::BFloat16);
    const bool avx512 = gemm_backend() == GemmBackend::Avx512;
    const bool bf16 = avx512 && gemm_bf16_supported() && peak.bf16_core >= 1.5 * peak.fp32_core;
    const bool fp16 = avx512 && !bf16 && gemm_fp16_supported() && peak.fp16_core >= 1.5 * peak.fp32_core;
    INFO("fp32 " << peak.fp32_core << " bf16 " << peak.bf16_core << " fp16 " << peak.fp16_core << " GFLOP/s");
    REQUIRE(gemm_uses_bf16() == bf16);
    REQUIRE(gemm_uses_fp16() == fp16);
    REQUIRE(gemm_rounds_operands() == (bf16 || fp16));
    REQUIRE(std::string(gemm_precision_name()) == (bf16 ? "bf16" : fp16 ? "fp16" : "fp32"));
    // Forced: the fp16 kernel wherever the CPU has it, and neither under Never.
    set_bf16_kernel(Bf16Kernel::Fp16);
    REQUIRE(gemm_uses_fp16() == (avx512 && gemm_fp16_supported()));
    REQUIRE(!gemm_uses_bf16());
    set_bf16_kernel(Bf16Kernel::Never);
    REQUIRE(!gemm_rounds_operands());
    REQUIRE(std::string(gemm_precision_name()) == "fp32");
    // Counted by the kernel that ran.
    if (avx512 && gemm_fp16_supported()) {
        set_bf16_kernel(Bf16Kernel::Fp16);
        reset_gemm_call_counts();
        Problem p(false, true, 30, 40, 50, 0, 1.0f, 0.0f, 1500);
        p.run(GemmBackend::Avx512);
        const GemmCallCounts n = gemm_call_counts();
        REQUIRE(n.fp16 == 1);
        REQUIRE(n.bf16 + n.fp32 + n.openblas == 0);
    }
}

TEST_CASE("gemm fp16: NaN and infinity in an operand reach the outputs they touch, as in float32", "[gemm][fp16]") {
    if (!fp16_kernel_here()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    for (int t = 0; t < 4; ++t) {
        Problem p(t & 1, t & 2, 30, 40, 200, 0, 1.0f, 0.0f, 1600 + t);
        auto a_at = [&](int64_t i, int64_t k) -> float& { return p.ta ? p.A[k * p.lda + i] : p.A[i * p.lda + k]; };
        auto b_at = [&](int64_t k, int64_t j) -> float& { return p.tb ? p.B[j * p.ldb + k] : p.B[k * p.ldb + j]; };
        a_at(3, 17) = std::numeric_limits<float>::quiet_NaN();
        b_at(50, 7) = std::numeric_limits<float>::infinity();
        const auto got = run_fp16(p);
        INFO("ta=" << (t & 1) << " tb=" << (t & 2));
        for (int64_t j = 0; j < p.N; ++j) CHECK(std::isnan(got[3 * p.ldc + j]));  // row 3 saw the NaN
        for (int64_t i = 0; i < p.M; ++i)
            if (i != 3) CHECK(!std::isfinite(got[i * p.ldc + 7]));  // column 7 saw the infinity
        // everything else stays finite, and close to the exact product
        const auto ref = reference(p, false);
        for (int64_t i = 0; i < p.M; ++i)
            for (int64_t j = 0; j < p.N; ++j)
                if (i != 3 && j != 7) {
                    REQUIRE(std::isfinite(got[i * p.ldc + j]));
                    REQUIRE(std::fabs(got[i * p.ldc + j] - ref[i * p.ldc + j]) < 1e-2 * p.K / 3.0);
                }
    }
}
