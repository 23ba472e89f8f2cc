// The GEMM layer: the AVX-512 kernels against OpenBLAS on every transpose combination and on
// shapes that hit each edge (partial row panels, partial and masked column panels, several depth
// blocks, several column blocks, strided sub-matrices, alpha/beta), the fused epilogues and GELU
// operands against plain loops, thread-count independence, parallel_for, and the fused
// convnext_mlp op against the unfused composition in float64 and float32.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>
#include <stdexcept>
#include <vector>

#include "core/autograd.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/fused.h"
#include "ops/gemm.h"
#include "ops/kernels/gelu_math.h"
#include "ops/ops.h"
#include "ops/parallel.h"
#include "gemm_problem.h"

using namespace cnx;
using namespace cnx::test;


TEST_CASE("gemm: AVX-512 kernels match OpenBLAS on every transpose and edge", "[gemm]") {
    if (!gemm_avx512_supported()) {
        WARN("this CPU has no AVX-512: only the OpenBLAS route is exercised");
        return;
    }
    BackendGuard bg;
    struct S {
        int64_t M, N, K, pad;
    };
    GemmStateGuard sg;
    // 14-row panels, 32-column panels; the default blocking (from this CPU's caches: depth blocks
    // of <= 256, column blocks of >= 512 on the machines seen) and a small one, so that several
    // depth and column blocks occur whatever the CPU; row strides that are multiples of 256 (A
    // copied to dodge L1 set conflicts) and not.
    const std::vector<S> shapes = {{1, 1, 1, 0},      {13, 31, 7, 0},    {14, 32, 16, 0},  {15, 33, 17, 3},
                                   {29, 47, 257, 0},  {57, 96, 384, 5},  {100, 160, 40, 0}, {9, 545, 70, 2},
                                   {300, 40, 600, 1}, {3, 7, 1100, 0},   {31, 70, 256, 0},  {45, 33, 512, 0},
                                   {20, 40, 4000, 0},  // many depth blocks of a narrow B in one group
                                   {50, 32, 8, 0},     // ldb == NR: in place and packed panels alike
                                   {40, 20, 4000, 1}};  // depth chunks, computed transposed (M > N)
    uint64_t seed = 1;
    for (GemmBlocking blk : {GemmBlocking{}, GemmBlocking{48, 64}})
        for (const S& s : shapes)
            for (int t = 0; t < 4; ++t) {
                const bool ta = t & 1, tb = t & 2;
                for (auto ab : {std::pair<float, float>{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}}) {
                    Problem p(ta, tb, s.M, s.N, s.K, s.pad, ab.first, ab.second, seed++);
                    set_gemm_blocking(blk);
                    const auto ref = p.run(GemmBackend::OpenBLAS), got = p.run(GemmBackend::Avx512);
                    INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " ta=" << ta << " tb=" << tb << " alpha="
                              << ab.first << " beta=" << ab.second << " kc=" << gemm_blocking().kc
                              << " nc=" << gemm_blocking().nc);
                    REQUIRE(max_err(p, got, ref) < 1e-5);
                    REQUIRE(padding_untouched(p, got));
                }
            }
}

TEST_CASE("gemm: the default blocking follows the CPU's caches", "[gemm]") {
    const GemmBlocking b = gemm_blocking();
    REQUIRE(b.kc >= 64);
    REQUIRE(b.kc <= 256);
    REQUIRE(b.nc % 32 == 0);
    REQUIRE(b.nc >= 32);
    REQUIRE_THROWS_WITH(set_gemm_blocking(GemmBlocking{-1, 0}), Catch::Contains("kc=-1"));
}

TEST_CASE("gemm: beta = 0 ignores whatever C held, NaN included", "[gemm]") {
    BackendGuard bg;
    for (GemmBackend be : {GemmBackend::OpenBLAS, GemmBackend::Avx512}) {
        if (be == GemmBackend::Avx512 && !gemm_avx512_supported()) continue;
        Problem p(false, true, 20, 40, 30, 0, 1.0f, 0.0f, 77);
        std::fill(p.C0.begin(), p.C0.end(), std::nanf(""));
        const auto C = p.run(be);
        for (int64_t i = 0; i < p.M; ++i)
            for (int64_t j = 0; j < p.N; ++j) {
                double ref = 0;
                for (int64_t k = 0; k < p.K; ++k) ref += p.a(i, k) * p.b(k, j);
                REQUIRE(std::fabs(C[i * p.ldc + j] - ref) < 1e-4);
            }
    }
}

TEST_CASE("gemm: epilogues and GELU operands match plain loops on both backends", "[gemm]") {
    BackendGuard bg;
    const int64_t M = 45, N = 70, K = 300;  // edges in rows and columns, two depth blocks
    std::vector<float> bias = random_floats(N, 5), scale = random_floats(N, 6), res = random_floats(M * N, 7),
                       hin = random_floats(M * N, 8);
    for (float& h : hin) h *= 4;  // GELU' over its interesting range
    for (GemmBackend be : {GemmBackend::OpenBLAS, GemmBackend::Avx512}) {
        if (be == GemmBackend::Avx512 && !gemm_avx512_supported()) continue;
        for (int t = 0; t < 4; ++t) {
            Problem p(t & 1, t & 2, M, N, K, 0, 1.0f, 0.0f, 100 + t);
            for (auto& v : p.A) v *= 0.2f;  // products of order 1, where GELU bends
            // plain product in double
            std::vector<double> prod(M * N), prod_ga(M * N), prod_gb(M * N);
            for (int64_t i = 0; i < M; ++i)
                for (int64_t j = 0; j < N; ++j) {
                    double s = 0, sa = 0, sb = 0;
                    for (int64_t k = 0; k < K; ++k) {
                        s += p.a(i, k) * p.b(k, j);
                        sa += gelu_math::gelu(p.a(i, k)) * p.b(k, j);
                        sb += p.a(i, k) * gelu_math::gelu(p.b(k, j));
                    }
                    prod[i * N + j] = s, prod_ga[i * N + j] = sa, prod_gb[i * N + j] = sb;
                }
            INFO("backend " << (be == GemmBackend::Avx512 ? "avx512" : "openblas") << " ta=" << (t & 1)
                            << " tb=" << (t & 2));
            std::vector<float> pre(M * N, 0.0f);
            GemmEpilogue<float> e1;
            e1.bias = bias.data(), e1.pre = pre.data(), e1.ld_pre = N, e1.act = GemmAct::Gelu;
            e1.col_scale = scale.data(), e1.residual = res.data(), e1.ld_residual = N;
            const auto c1 = p.run(be, e1);
            GemmEpilogue<float> e2;
            e2.act = GemmAct::GeluGrad, e2.act_in = hin.data(), e2.ld_act_in = N;
            const auto c2 = p.run(be, e2);
            const auto c3 = p.run(be, {}, true, false), c4 = p.run(be, {}, false, true);
            double w1 = 0, wp = 0, w2 = 0, w3 = 0, w4 = 0;
            for (int64_t q = 0; q < M * N; ++q) {
                const int64_t j = q % N;
                const double v = prod[q] + bias[j];
                wp = std::max(wp, std::fabs(pre[q] - v));
                w1 = std::max(w1, std::fabs(c1[q] - (gelu_math::gelu(v) * scale[j] + res[q])));
                w2 = std::max(w2, std::fabs(c2[q] - prod[q] * gelu_math::gelu_grad((double)hin[q])));
                w3 = std::max(w3, std::fabs(c3[q] - prod_ga[q]));
                w4 = std::max(w4, std::fabs(c4[q] - prod_gb[q]));
            }
            REQUIRE(wp < 2e-5);
            REQUIRE(w1 < 2e-5);
            REQUIRE(w2 < 2e-5);
            REQUIRE(w3 < 2e-5);
            REQUIRE(w4 < 2e-5);
        }
    }
}

TEST_CASE("gemm: float GELU helpers stay within 1e-6 of the double formulas", "[gemm]") {
    double worst = 0, worst_grad = 0;
    for (double x = -12; x <= 12; x += 1e-3) {
        const float xf = (float)x;
        worst = std::max(worst, std::fabs(gelu_math::gelu(xf) - gelu_math::gelu((double)xf)) /
                                    std::max(1.0, std::fabs(gelu_math::gelu((double)xf))));
        worst_grad = std::max(worst_grad, std::fabs(gelu_math::gelu_grad(xf) - gelu_math::gelu_grad((double)xf)));
    }
    REQUIRE(worst < 1e-6);
    REQUIRE(worst_grad < 1e-6);
}

TEST_CASE("gemm: AVX-512 results (fp32 and bf16) do not depend on the thread count (and match OpenBLAS)",
          "[gemm][bf16]") {
    if (!gemm_avx512_supported()) return;
    BackendGuard bg;
    ThreadsGuard tg;
    GemmStateGuard sg;
    set_bf16_kernel(Bf16Kernel::Always);
    for (MatmulPrecision prec : {MatmulPrecision::Float32, MatmulPrecision::BFloat16}) {
        if (prec == MatmulPrecision::BFloat16 && !gemm_bf16_supported()) continue;
        for (int t = 0; t < 4; ++t) {
            Problem p(t & 1, t & 2, 700, 300, 520, 0, 1.0f, 0.0f, 300 + t);
            set_matmul_precision(prec);
            set_num_threads(1);
            const auto one = p.run(GemmBackend::Avx512);
            set_num_threads(2);
            const auto two = p.run(GemmBackend::Avx512);
            set_num_threads(3);
            const auto three = p.run(GemmBackend::Avx512);
            REQUIRE(one == two);
            REQUIRE(one == three);
            set_matmul_precision(MatmulPrecision::Float32);
            REQUIRE(max_err(p, two, p.run(GemmBackend::OpenBLAS)) < (prec == MatmulPrecision::Float32 ? 1e-5 : 1e-2));
        }
    }
}


TEST_CASE("gemm: deep products in depth chunks keep epilogues and GELU operands, either orientation", "[gemm]") {
    if (!gemm_avx512_supported()) return;
    BackendGuard bg;
    ThreadsGuard tg;
    const int64_t K = 3000;  // >= 2048 and >= 4 (M + N): split into fixed depth chunks
    for (auto mn : {std::pair<int64_t, int64_t>{45, 20}, {20, 45}})
        for (int t = 0; t < 4; ++t) {
            const int64_t M = mn.first, N = mn.second;
            Problem p(t & 1, t & 2, M, N, K, 0, 0.5f, 1.0f, 1000 + t);
            for (auto& v : p.A) v *= 0.2f;
            std::vector<float> bias = random_floats(N, 11), res = random_floats(M * N, 12);
            GemmEpilogue<float> ep;
            ep.bias = bias.data(), ep.residual = res.data(), ep.ld_residual = N;
            INFO("M=" << M << " N=" << N << " ta=" << (t & 1) << " tb=" << (t & 2));
            for (bool ga : {false, true}) {
                set_num_threads(1);
                const auto one = p.run(GemmBackend::Avx512, ep, ga, !ga);
                set_num_threads(3);
                REQUIRE(one == p.run(GemmBackend::Avx512, ep, ga, !ga));
                const auto ref = reference(p, false, ga, !ga);
                double worst = 0;
                for (int64_t q = 0; q < M * N; ++q)
                    worst = std::max(worst, std::fabs(one[q] - ((double)ref[q] + bias[q % N] + res[q])));
                REQUIRE(worst / (K / 3.0) < 1e-6);
            }
        }
}

TEST_CASE("gemm bf16: the exact product of the rounded operands on every transpose and edge, fp32 within bf16 "
          "tolerance", "[gemm][bf16]") {
    if (!gemm_bf16_supported()) {
        WARN("this CPU has no AVX512_BF16: only the fallback is exercised");
        return;
    }
    BackendGuard bg;
    GemmStateGuard sg;
    set_bf16_kernel(Bf16Kernel::Always);
    // Odd depths (a zero-padded last pair), depth tails of the 32-wide conversion, partial panels.
    const std::vector<EdgeShape> shapes = {{1, 1, 1, 0},    {13, 31, 7, 0},   {14, 32, 16, 0},   {15, 33, 17, 3},
                                           {29, 47, 257, 0}, {57, 96, 384, 5}, {100, 160, 45, 0}, {9, 70, 33, 2},
                                           {3, 7, 601, 0},   {31, 70, 256, 0}};
    for_each_edge_problem(shapes, 500, [](const Problem& p) {
        set_matmul_precision(MatmulPrecision::BFloat16);
        REQUIRE(gemm_uses_bf16());
        REQUIRE(std::string(gemm_precision_name()) == "bf16");
        const auto got = p.run(GemmBackend::Avx512);
        set_matmul_precision(MatmulPrecision::Float32);
        REQUIRE(max_err(p, got, reference(p, true)) < 1e-5);
        // Each product is off by at most ~2^-8 of |a||b| (two roundings of 2^-9).
        REQUIRE(max_err(p, got, reference(p, false)) < 1e-2);
        REQUIRE(max_err(p, got, reference(p, false)) > 0);  // it did round
        REQUIRE(padding_untouched(p, got));
    });
}

TEST_CASE("gemm bf16: epilogues and GELU operands", "[gemm][bf16]") {
    if (!gemm_bf16_supported()) return;
    BackendGuard bg;
    GemmStateGuard sg;
    set_bf16_kernel(Bf16Kernel::Always);
    const int64_t M = 45, N = 70, K = 301;
    std::vector<float> bias = random_floats(N, 5), scale = random_floats(N, 6), res = random_floats(M * N, 7),
                       hin = random_floats(M * N, 8);
    for (float& h : hin) h *= 4;
    for (int t = 0; t < 4; ++t) {
        Problem p(t & 1, t & 2, M, N, K, 0, 1.0f, 0.0f, 700 + t);
        for (auto& v : p.A) v *= 0.2f;
        INFO("ta=" << (t & 1) << " tb=" << (t & 2));
        set_matmul_precision(MatmulPrecision::BFloat16);
        std::vector<float> pre(M * N, 0.0f);
        GemmEpilogue<float> e1;
        e1.bias = bias.data(), e1.pre = pre.data(), e1.ld_pre = N, e1.act = GemmAct::Gelu;
        e1.col_scale = scale.data(), e1.residual = res.data(), e1.ld_residual = N;
        const auto c1 = p.run(GemmBackend::Avx512, e1);
        GemmEpilogue<float> e2;
        e2.act = GemmAct::GeluGrad, e2.act_in = hin.data(), e2.ld_act_in = N;
        const auto c2 = p.run(GemmBackend::Avx512, e2);
        const auto c3 = p.run(GemmBackend::Avx512, {}, true, false), c4 = p.run(GemmBackend::Avx512, {}, false, true);
        set_matmul_precision(MatmulPrecision::Float32);
        const auto prod = reference(p, true), pga = reference(p, true, true, false),
                   pgb = reference(p, true, false, true);
        double wp = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0;
        for (int64_t q = 0; q < M * N; ++q) {
            const int64_t j = q % N;
            const double v = (double)prod[q] + bias[j];
            wp = std::max(wp, std::fabs(pre[q] - v));
            w1 = std::max(w1, std::fabs(c1[q] - (gelu_math::gelu(v) * scale[j] + res[q])));
            w2 = std::max(w2, std::fabs(c2[q] - prod[q] * gelu_math::gelu_grad((double)hin[q])));
            w3 = std::max(w3, std::fabs((double)c3[q] - pga[q]));
            w4 = std::max(w4, std::fabs((double)c4[q] - pgb[q]));
        }
        REQUIRE(wp < 2e-5);
        REQUIRE(w1 < 2e-5);
        REQUIRE(w2 < 2e-5);
        // GELU is computed in float by the kernel and the reference: the rare operand whose two
        // GELUs round to neighbouring bf16 values moves a product by ~2^-8 of itself.
        REQUIRE(w3 < 5e-3);
        REQUIRE(w4 < 5e-3);
    }
}

TEST_CASE("gemm bf16: as if the CPU lacked AVX512_BF16, BFloat16 precision gives exactly the fp32 results",
          "[gemm][bf16]") {
    BackendGuard bg;
    GemmStateGuard sg;
    set_bf16_kernel(Bf16Kernel::Never);
    std::vector<float> bias = random_floats(70, 9);
    for (GemmBackend be : {GemmBackend::OpenBLAS, GemmBackend::Avx512}) {
        if (be == GemmBackend::Avx512 && !gemm_avx512_supported()) continue;
        for (int t = 0; t < 4; ++t) {
            Problem p(t & 1, t & 2, 45, 70, 301, 1, 0.5f, 1.0f, 800 + t);
            GemmEpilogue<float> ep;
            ep.bias = bias.data(), ep.act = GemmAct::Gelu;
            set_matmul_precision(MatmulPrecision::BFloat16);
            REQUIRE(!gemm_uses_bf16());
            REQUIRE(std::string(gemm_precision_name()) == "fp32");
            const auto fallback = p.run(be, ep);
            set_matmul_precision(MatmulPrecision::Float32);
            REQUIRE(fallback == p.run(be, ep));
        }
    }
}

TEST_CASE("gemm bf16: precision is per thread", "[gemm][bf16]") {
    GemmStateGuard sg;
    set_matmul_precision(MatmulPrecision::BFloat16);
    MatmulPrecision seen = MatmulPrecision::BFloat16;
    std::thread([&] { seen = matmul_precision(); }).join();
    REQUIRE(seen == MatmulPrecision::Float32);
    {
        MatmulPrecisionGuard fp32(MatmulPrecision::Float32);
        REQUIRE(!gemm_uses_bf16());
    }
    REQUIRE(matmul_precision() == MatmulPrecision::BFloat16);
}

TEST_CASE("gemm: K = 0 scales C and still applies the epilogue; empty M or N is a no-op", "[gemm]") {
    BackendGuard bg;
    for (GemmBackend be : {GemmBackend::OpenBLAS, GemmBackend::Avx512}) {
        if (be == GemmBackend::Avx512 && !gemm_avx512_supported()) continue;
        set_gemm_backend(be);
        std::vector<float> C = {1, 2, 3, 4}, bias = {10, 20};
        GemmEpilogue<float> ep;
        ep.bias = bias.data();
        gemm_ex<float>(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2, ep);
        REQUIRE(C == std::vector<float>{10.5f, 21, 11.5f, 22});
        gemm<float>(false, false, 0, 2, 3, 1.0f, nullptr, 3, nullptr, 2, 0.0f, C.data(), 2);
        REQUIRE(C == std::vector<float>{10.5f, 21, 11.5f, 22});
    }
}

TEST_CASE("parallel_for: every index runs once, exceptions reach the caller, nested calls run serially",
          "[gemm][parallel]") {
    ThreadsGuard tg;
    for (int threads : {1, 2, 4}) {
        set_num_threads(threads);
        for (int64_t n : {1, 2, 7, 100, 1000}) {
            std::vector<int> hits(n, 0);
            parallel_for(n, [&](int64_t i) { __atomic_fetch_add(&hits[i], 1, __ATOMIC_RELAXED); });
            REQUIRE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
            std::vector<int> covered(n, 0);
            int empty_ranges = 0;  // (Catch's REQUIRE is not for helper threads: count, check after)
            parallel_range(n, 3, [&](int64_t b, int64_t e) {
                if (b >= e) __atomic_fetch_add(&empty_ranges, 1, __ATOMIC_RELAXED);
                for (int64_t i = b; i < e; ++i) __atomic_fetch_add(&covered[i], 1, __ATOMIC_RELAXED);
            });
            REQUIRE(empty_ranges == 0);
            REQUIRE(std::all_of(covered.begin(), covered.end(), [](int h) { return h == 1; }));
        }
        REQUIRE_THROWS_WITH(parallel_for(100,
                                         [](int64_t i) {
                                             if (i == 37) throw std::runtime_error("chunk 37 failed");
                                         }),
                            Catch::Contains("chunk 37"));
        std::vector<int> after(50, 0);  // the pool still works after an exception
        parallel_for(50, [&](int64_t i) { after[i] = 1; });
        REQUIRE(std::all_of(after.begin(), after.end(), [](int h) { return h == 1; }));
        std::vector<int> inner(64, 0);
        parallel_for(8, [&](int64_t i) {
            parallel_for(8, [&](int64_t j) { inner[i * 8 + j] += 1; });  // serial inside: no race
        });
        REQUIRE(std::all_of(inner.begin(), inner.end(), [](int h) { return h == 1; }));
    }
}

namespace {

std::vector<Tensor> mlp_inputs(DType dt, bool full, uint64_t seed) {
    Generator g(seed);
    const int64_t C = 6, H = 11;
    auto r = [&](const Shape& s) { return randn(s, DType::F64, &g).to(dt).requires_grad_(); };
    return {r({2, 3, 5, C}), r({H, C}),
            full ? r({H}) : Tensor(), r({C, H}),
            full ? r({C}) : Tensor(), full ? r({C}) : Tensor(),
            full ? r({2, 3, 5, C}) : Tensor()};
}

Tensor mlp_fused(const std::vector<Tensor>& x) { return convnext_mlp(x[0], x[1], x[2], x[3], x[4], x[5], x[6]); }

Tensor mlp_composed(const std::vector<Tensor>& x) {
    Tensor y = linear(gelu(linear(x[0], x[1], x[2])), x[3], x[4]);
    if (x[5].defined()) y = channel_scale(y, x[5]);
    return x[6].defined() ? add(x[6], y) : y;
}

// Forward and every input gradient of both versions, as one list of tensors.
std::vector<Tensor> values_and_grads(Tensor (*fn)(const std::vector<Tensor>&), const std::vector<Tensor>& in,
                                     const Tensor& seed_grad) {
    std::vector<Tensor> x;
    for (auto& t : in) x.push_back(t.defined() ? t.detach().clone().requires_grad_() : Tensor());
    Tensor y = fn(x);
    y.backward(seed_grad);
    std::vector<Tensor> out{y.detach()};
    for (auto& t : x)
        if (t.defined()) out.push_back(t.grad());
    return out;
}

double max_rel(const Tensor& a, const Tensor& b) {
    auto va = a.to_vector(), vb = b.to_vector();
    double w = 0;
    for (size_t i = 0; i < va.size(); ++i) w = std::max(w, std::fabs(va[i] - vb[i]) / std::max(1.0, std::fabs(vb[i])));
    return w;
}

}  // namespace

TEST_CASE("convnext_mlp: forward and every gradient equal the unfused ops", "[gemm][fused]") {
    for (bool full : {true, false})
        for (DType dt : {DType::F64, DType::F32}) {
            auto in = mlp_inputs(dt, full, full ? 11 : 12);
            Tensor g = randn({2, 3, 5, 6}, DType::F64).to(dt);
            auto a = values_and_grads(mlp_fused, in, g), b = values_and_grads(mlp_composed, in, g);
            REQUIRE(a.size() == b.size());
            for (size_t i = 0; i < a.size(); ++i) {
                INFO("tensor " << i << (dt == DType::F64 ? " float64" : " float32") << (full ? " full" : " bare"));
                REQUIRE(a[i].shape() == b[i].shape());
                REQUIRE(max_rel(a[i], b[i]) < (dt == DType::F64 ? 1e-12 : 2e-5));
            }
        }
}

TEST_CASE("convnext_mlp: only the requested gradients, and clear shape errors", "[gemm][fused]") {
    auto in = mlp_inputs(DType::F32, true, 13);
    Tensor u = in[0].detach();  // input without grad: du is not computed
    Tensor y = convnext_mlp(u, in[1], in[2], in[3], in[4], in[5], Tensor());
    y.backward(ones(y.shape()));
    REQUIRE(!u.grad().defined());
    for (int i : {1, 2, 3, 4, 5}) REQUIRE(in[i].grad().defined());
    {
        NoGradGuard ng;
        REQUIRE_THROWS_WITH(convnext_mlp(in[0], in[3], in[2], in[1], in[4], in[5], in[6]),
                            Catch::Contains("convnext_mlp") && Catch::Contains("w1"));
        REQUIRE_THROWS_WITH(convnext_mlp(in[0], in[1], in[4], in[3], in[4], in[5], in[6]),
                            Catch::Contains("b1"));
        REQUIRE_THROWS_WITH(convnext_mlp(in[0], in[1], in[2], in[3], in[4], in[5], in[0].reshape({30, 6})),
                            Catch::Contains("residual"));
    }
}

TEST_CASE("depthwise_conv2d: float32 gradients at vector, half-vector and tail channel counts", "[depthwise]") {
    // 40 = 2 x 16 + 8 (ConvNeXt-atto's first stage) and 27 = 16 + 8 + 3 take the full-vector,
    // half-vector and single-channel paths of the float32 kernels; float64 is the reference.
    for (int64_t C : {40, 27, 96}) {
        Tensor x64 = randn({2, 11, 13, C}, DType::F64), w64 = randn({C, 1, 7, 7}, DType::F64),
               b64 = randn({C}, DType::F64), g64 = randn({2, 11, 13, C}, DType::F64);
        std::vector<Tensor> grads[2];
        for (int d = 0; d < 2; ++d) {
            const DType dt = d ? DType::F32 : DType::F64;
            Tensor x = x64.to(dt).requires_grad_(), w = w64.to(dt).requires_grad_(), b = b64.to(dt).requires_grad_();
            Tensor y = depthwise_conv2d(x, w, b, 1, 3);
            y.backward(g64.to(dt));
            grads[d] = {y.detach(), x.grad(), w.grad(), b.grad()};
        }
        for (int i = 0; i < 4; ++i) {
            INFO("C=" << C << " tensor " << i);
            REQUIRE(max_rel(grads[1][i], grads[0][i]) < 1e-4);
        }
    }
}
