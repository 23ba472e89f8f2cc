#pragma once
// What the GEMM tests share (tests/test_gemm.cpp, tests/test_gemm_fp16.cpp): guards that restore
// the GEMM's global state, a random problem with strided operands, and references in double.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "ops/gemm.h"
#include "ops/kernels/gelu_math.h"

namespace cnx::test {

struct BackendGuard {
    GemmBackend prev = gemm_backend();
    ~BackendGuard() { set_gemm_backend(prev); }
};

struct ThreadsGuard {
    int prev = get_num_threads();
    ~ThreadsGuard() { set_num_threads(prev); }
};

// Restores the blocking, the bf16 kernel mode and this thread's precision.
struct GemmStateGuard {
    GemmBlocking blocking = gemm_blocking();
    Bf16Kernel bf16 = bf16_kernel();
    MatmulPrecision precision = matmul_precision();
    ~GemmStateGuard() {
        set_gemm_blocking(GemmBlocking{});
        set_bf16_kernel(bf16);
        set_matmul_precision(precision);
    }
};

// float -> bfloat16 -> float, rounding to nearest even (what vcvtne2ps2bf16 does to normal numbers).
inline float round_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    float y;
    std::memcpy(&y, &u, 4);
    return y;
}

inline std::vector<float> random_floats(int64_t n, uint64_t seed) {
    Generator g(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)(g.uniform() * 2 - 1);
    return v;
}

struct Problem {
    bool ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    std::vector<float> A, B, C0;
    Problem(bool ta_, bool tb_, int64_t M_, int64_t N_, int64_t K_, int64_t pad, float alpha_, float beta_,
            uint64_t seed)
        : ta(ta_), tb(tb_), M(M_), N(N_), K(K_), alpha(alpha_), beta(beta_) {
        lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
        A = random_floats((ta ? K : M) * lda, seed);
        B = random_floats((tb ? N : K) * ldb, seed + 1);
        C0 = random_floats(M * ldc, seed + 2);
    }
    double a(int64_t i, int64_t k) const { return ta ? A[k * lda + i] : A[i * lda + k]; }
    double b(int64_t k, int64_t j) const { return tb ? B[j * ldb + k] : B[k * ldb + j]; }
    std::vector<float> run(GemmBackend be, const GemmEpilogue<float>& ep = {}, bool ga = false, bool gb = false) const {
        set_gemm_backend(be);
        std::vector<float> C = C0;
        gemm_ex<float>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc, ep, ga, gb);
        return C;
    }
};

// max |x - y| over the M x N block, relative to the scale of the products (sum_k |a||b| ~ K/3).
inline double max_err(const Problem& p, const std::vector<float>& x, const std::vector<float>& y) {
    double worst = 0;
    for (int64_t i = 0; i < p.M; ++i)
        for (int64_t j = 0; j < p.N; ++j)
            worst = std::max(worst, std::fabs((double)x[i * p.ldc + j] - (double)y[i * p.ldc + j]));
    return worst / std::max<double>(1.0, p.K / 3.0);
}

// The padding columns (between N and ldc) are never written.
inline bool padding_untouched(const Problem& p, const std::vector<float>& C) {
    for (int64_t i = 0; i < p.M; ++i)
        for (int64_t j = p.N; j < p.ldc; ++j)
            if (C[i * p.ldc + j] != p.C0[i * p.ldc + j]) return false;
    return true;
}

// alpha * op(A) op(B) + beta * C0 in double, with the operands (after GELU when asked) rounded to
// bfloat16 first when bf16: what the bf16 kernel computes, but for its float32 accumulation.
inline std::vector<float> reference(const Problem& p, bool bf16, bool ga = false, bool gb = false) {
    auto op = [&](double v, bool g) {
        const float f = g ? gelu_math::gelu((float)v) : (float)v;
        return (double)(bf16 ? round_bf16(f) : f);
    };
    std::vector<double> a(p.M * p.K), b(p.K * p.N);
    for (int64_t i = 0; i < p.M; ++i)
        for (int64_t k = 0; k < p.K; ++k) a[i * p.K + k] = op(p.a(i, k), ga);
    for (int64_t k = 0; k < p.K; ++k)
        for (int64_t j = 0; j < p.N; ++j) b[k * p.N + j] = op(p.b(k, j), gb);
    std::vector<float> C = p.C0;
    for (int64_t i = 0; i < p.M; ++i)
        for (int64_t j = 0; j < p.N; ++j) {
            double s = 0;
            for (int64_t k = 0; k < p.K; ++k) s += a[i * p.K + k] * b[k * p.N + j];
            C[i * p.ldc + j] = (float)(p.alpha * s + (p.beta == 0 ? 0.0 : p.beta * (double)p.C0[i * p.ldc + j]));
        }
    return C;
}

// The 16-bit kernels' edge cases: each shape (pad: extra stride) with the default blocking and a
// small one (several depth and column blocks on small shapes), every transpose, and two
// alpha/beta pairs; body(p) runs with the blocking set, and INFO names the case.
struct EdgeShape {
    int64_t M, N, K, pad;
};
template <class F>
void for_each_edge_problem(const std::vector<EdgeShape>& shapes, uint64_t seed, F&& body) {
    for (GemmBlocking blk : {GemmBlocking{}, GemmBlocking{48, 64}})
        for (const EdgeShape& s : shapes)
            for (int t = 0; t < 4; ++t) {
                const bool ta = t & 1, tb = t & 2;
                for (auto ab : {std::pair<float, float>{1.0f, 0.0f}, {-2.0f, 0.25f}}) {
                    Problem p(ta, tb, s.M, s.N, s.K, s.pad, ab.first, ab.second, seed++);
                    set_gemm_blocking(blk);
                    INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " ta=" << ta << " tb=" << tb << " alpha="
                              << ab.first << " beta=" << ab.second << " kc=" << gemm_blocking().kc);
                    body(p);
                }
            }
}

}  // namespace cnx::test
