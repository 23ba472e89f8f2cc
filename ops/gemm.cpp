#include "ops/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <climits>
#include <vector>

#include "core/cpu_info.h"
#include "core/cpu_peak.h"
#include "core/error.h"
#include "ops/column_sum.h"
#include "ops/kernels/gelu_math.h"
#include "ops/kernels/sgemm_avx512.h"
#include "ops/parallel.h"

namespace cnx {
namespace {

void check_dims(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
    CNX_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX,
              "gemm: dimensions M=", M, " N=", N, " K=", K, " exceed the BLAS integer range");
}

// K == 0: op(A)*op(B) is the zero matrix, C = beta * C (OpenBLAS may reject lda for K = 0).
template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

// ---- backend selection ----------------------------------------------------------------------

GemmBackend initial_backend() {
    if (!kernels::sgemm_avx512_available()) return GemmBackend::OpenBLAS;
    const char* env = std::getenv("CNX_GEMM");
    if (env && std::string(env) == "openblas") return GemmBackend::OpenBLAS;
    return GemmBackend::Avx512;
}

std::atomic<GemmBackend>& backend_slot() {
    static std::atomic<GemmBackend> b{initial_backend()};
    return b;
}

// ---- precision and blocking -------------------------------------------------------------------

thread_local MatmulPrecision t_precision = MatmulPrecision::Float32;

Bf16Kernel initial_bf16_kernel() {
    const char* env = std::getenv("CNX_BF16");
    const std::string v = env ? env : "";
    if (v == "always") return Bf16Kernel::Always;
    if (v == "never") return Bf16Kernel::Never;
    if (v == "fp16") return Bf16Kernel::Fp16;
    return Bf16Kernel::Auto;
}

std::atomic<Bf16Kernel>& bf16_slot() {
    static std::atomic<Bf16Kernel> k{initial_bf16_kernel()};
    return k;
}

// This CPU's measured rates (compute_peak(): read from the per-CPU cache or measured), fetched on
// the first GEMM that could run a 16-bit kernel only. A 16-bit kernel pays where its rate is at
// least 1.5x the fp32 FMA rate (one core).
const PeakRates& peak_rates() {
    static const PeakRates p = compute_peak();
    return p;
}
bool pays(double rate) { return rate >= 1.5 * peak_rates().fp32_core; }

std::atomic<int64_t> g_kc{0}, g_nc{0};

GemmBlocking blocking_now() {
    GemmBlocking b{g_kc.load(std::memory_order_relaxed), g_nc.load(std::memory_order_relaxed)};
    if (b.kc > 0 && b.nc > 0) return b;
    static const GemmBlocking def = kernels::avx512_default_blocking(cpu_info());
    if (b.kc <= 0) b.kc = def.kc;
    if (b.nc <= 0) b.nc = def.nc;
    return b;
}

void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

// The epilogue as one pass over C (the OpenBLAS route, float64, and K == 0).
template <class T>
void apply_epilogue(T* C, int64_t ldc, int64_t M, int64_t N, const GemmEpilogue<T>& ep) {
    if (ep.empty()) return;
    parallel_range(M, M * N > (1 << 15) ? 1 : M, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            T* c = C + i * ldc;
            if (ep.bias)
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) c[j] += ep.bias[j];
            if (ep.pre) std::copy(c, c + N, ep.pre + i * ep.ld_pre);
            if (ep.act == GemmAct::Gelu) {
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) c[j] = gelu_math::gelu(c[j]);
            } else if (ep.act == GemmAct::GeluGrad && ep.act_in_bf16) {
                const BFloat16* h = ep.act_in_bf16 + i * ep.ld_act_in;
                for (int64_t j = 0; j < N; ++j) c[j] *= gelu_math::gelu_grad((T)bf16_to_float(h[j]));
            } else if (ep.act == GemmAct::GeluGrad) {
                const T* h = ep.act_in + i * ep.ld_act_in;
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) c[j] *= gelu_math::gelu_grad(h[j]);
            }
            if (ep.col_scale)
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) c[j] *= ep.col_scale[j];
            if (ep.residual) {
                const T* x = ep.residual + i * ep.ld_residual;
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) c[j] += x[j];
            }
            if (ep.out_bf16) {
                BFloat16* o = ep.out_bf16 + i * ep.ld_out_bf16;
                for (int64_t j = 0; j < N; ++j) o[j] = float_to_bf16((float)c[j]);
            }
        }
    });
}

// A dense float32 copy of a bfloat16 matrix stored rows x cols with stride ld.
std::vector<float> widen_copy(const BFloat16* src, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> out(rows * cols);
    parallel_range(rows, rows * cols > (1 << 16) ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) bf16_to_float(src + r * ld, out.data() + r * cols, cols);
    });
    return out;
}

std::atomic<int64_t> g_calls_bf16{0}, g_calls_fp16{0}, g_calls_fp32{0}, g_calls_openblas{0};

// GELU of every element of a matrix (stored rows x cols with stride ldb), into a dense copy.
template <class T>
std::vector<T> gelu_copy(const T* B, int64_t rows, int64_t cols, int64_t ldb) {
    std::vector<T> out(rows * cols);
    parallel_range(rows, rows * cols > (1 << 15) ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
#pragma omp simd
            for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = gelu_math::gelu(B[r * ldb + c]);
    });
    return out;
}

}  // namespace

void set_gemm_backend(GemmBackend b) {
    if (b == GemmBackend::Auto) b = initial_backend();
    CNX_CHECK(b != GemmBackend::Avx512 || kernels::sgemm_avx512_available(),
              "gemm: the AVX-512 backend was requested but this CPU or build lacks AVX-512");
    backend_slot() = b;
}
GemmBackend gemm_backend() { return backend_slot(); }

void set_matmul_precision(MatmulPrecision p) { t_precision = p; }
MatmulPrecision matmul_precision() { return t_precision; }
void set_bf16_kernel(Bf16Kernel k) { bf16_slot() = k; }
Bf16Kernel bf16_kernel() { return bf16_slot(); }
bool gemm_bf16_supported() { return kernels::sbgemm_avx512_available(); }
bool gemm_fp16_supported() { return kernels::hgemm_avx512_available(); }

namespace {
enum class SixteenBit { None, Bf16Dot, Fp16Fma };
SixteenBit sixteen_bit_kernel() {
    if (t_precision != MatmulPrecision::BFloat16 || gemm_backend() != GemmBackend::Avx512) return SixteenBit::None;
    const bool bf16 = kernels::sbgemm_avx512_available(), fp16 = kernels::hgemm_avx512_available();
    switch (bf16_slot().load()) {
        case Bf16Kernel::Never: return SixteenBit::None;
        case Bf16Kernel::Always: return bf16 ? SixteenBit::Bf16Dot : SixteenBit::None;
        case Bf16Kernel::Fp16: return fp16 ? SixteenBit::Fp16Fma : SixteenBit::None;
        case Bf16Kernel::Auto: break;
    }
    if (bf16 && pays(peak_rates().bf16_core)) return SixteenBit::Bf16Dot;
    if (fp16 && pays(peak_rates().fp16_core)) return SixteenBit::Fp16Fma;
    return SixteenBit::None;
}
}  // namespace

bool gemm_uses_bf16() { return sixteen_bit_kernel() == SixteenBit::Bf16Dot; }
bool gemm_uses_fp16() { return sixteen_bit_kernel() == SixteenBit::Fp16Fma; }
bool gemm_rounds_operands() { return sixteen_bit_kernel() != SixteenBit::None; }
const char* gemm_precision_name() {
    switch (sixteen_bit_kernel()) {
        case SixteenBit::Bf16Dot: return "bf16";
        case SixteenBit::Fp16Fma: return "fp16";
        case SixteenBit::None: break;
    }
    return "fp32";
}

void set_gemm_blocking(GemmBlocking b) {
    CNX_CHECK(b.kc >= 0 && b.nc >= 0, "set_gemm_blocking: kc=", b.kc, " and nc=", b.nc, " must not be negative");
    g_kc = b.kc, g_nc = b.nc;
}
GemmBlocking gemm_blocking() { return blocking_now(); }
bool gemm_avx512_supported() { return kernels::sgemm_avx512_available(); }
const char* gemm_backend_name() { return gemm_backend() == GemmBackend::Avx512 ? "avx512" : "openblas"; }

namespace {

// Every float GEMM: A and B float32 or bfloat16 (a16 / b16), C null when only ep.out_bf16 is wanted.
void gemm_float(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A, bool a16, int64_t lda,
                const void* B, bool b16, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep,
                bool gelu_a, bool gelu_b) {
    if (M == 0 || N == 0) return;
    CNX_CHECK(C || (ep.out_bf16 && beta == 0.0f), "gemm: no output: C may be null only with out_bf16 and beta 0");
    std::vector<float> c32;  // C when only the bfloat16 copy is wanted and the kernel needs a float32 one
    auto dense_c = [&] {
        if (C) return;
        c32.assign(M * N, 0.0f);
        C = c32.data(), ldc = N;
    };
    if (K == 0) {
        dense_c();
        scale_c(M, N, beta, C, ldc);
        return apply_epilogue(C, ldc, M, N, ep);
    }
    check_dims(M, N, K, lda, ldb, ldc);
    if (gemm_backend() == GemmBackend::Avx512) {
        const kernels::KernelOperands ab{A, lda, a16, B, ldb, b16};
        switch (sixteen_bit_kernel()) {
            case SixteenBit::Bf16Dot:
                g_calls_bf16.fetch_add(1, std::memory_order_relaxed);
                return kernels::sbgemm_avx512(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b,
                                              blocking_now());
            case SixteenBit::Fp16Fma:
                g_calls_fp16.fetch_add(1, std::memory_order_relaxed);
                return kernels::hgemm_avx512(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b,
                                             blocking_now());
            case SixteenBit::None: break;
        }
        g_calls_fp32.fetch_add(1, std::memory_order_relaxed);
        return kernels::sgemm_avx512(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b, blocking_now());
    }
    g_calls_openblas.fetch_add(1, std::memory_order_relaxed);
    // OpenBLAS: float32 copies of what it cannot read (bfloat16, GELU'd operands).
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    std::vector<float> wa, wb, ga, gb;
    const float* Af = static_cast<const float*>(A);
    const float* Bf = static_cast<const float*>(B);
    if (a16) {
        wa = widen_copy(static_cast<const BFloat16*>(A), a_rows, a_cols, lda);
        Af = wa.data(), lda = a_cols;
    }
    if (b16) {
        wb = widen_copy(static_cast<const BFloat16*>(B), b_rows, b_cols, ldb);
        Bf = wb.data(), ldb = b_cols;
    }
    if (gelu_a) {
        ga = gelu_copy(Af, a_rows, a_cols, lda);
        Af = ga.data(), lda = a_cols;
    }
    if (gelu_b) {
        gb = gelu_copy(Bf, b_rows, b_cols, ldb);
        Bf = gb.data(), ldb = b_cols;
    }
    dense_c();
    blas(ta, tb, M, N, K, alpha, Af, lda, Bf, ldb, beta, C, ldc);
    apply_epilogue(C, ldc, M, N, ep);
}

}  // namespace

template <>
void gemm_ex<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep,
                    bool gelu_a, bool gelu_b) {
    gemm_float(ta, tb, M, N, K, alpha, A, false, lda, B, false, ldb, beta, C, ldc, ep, gelu_a, gelu_b);
}

template <>
void gemm_ex<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                     const double* B, int64_t ldb, double beta, double* C, int64_t ldc,
                     const GemmEpilogue<double>& ep, bool gelu_a, bool gelu_b) {
    CNX_CHECK(!ep.act_in_bf16 && !ep.out_bf16 && C, "gemm: bfloat16 epilogue operands are for float GEMMs only");
    if (M == 0 || N == 0) return;
    if (K == 0) {
        scale_c(M, N, beta, C, ldc);
        return apply_epilogue(C, ldc, M, N, ep);
    }
    check_dims(M, N, K, lda, ldb, ldc);
    std::vector<double> ga, gb;
    if (gelu_a) {
        ga = gelu_copy(A, ta ? K : M, ta ? M : K, lda);
        A = ga.data(), lda = ta ? M : K;
    }
    if (gelu_b) {
        gb = gelu_copy(B, tb ? N : K, tb ? K : N, ldb);
        B = gb.data(), ldb = tb ? K : N;
    }
    blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    apply_epilogue(C, ldc, M, N, ep);
}

template <class TA, class TB>
void gemm_mixed(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const TA* A, int64_t lda, const TB* B,
                int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a,
                bool gelu_b) {
    static_assert((std::is_same<TA, float>::value || std::is_same<TA, BFloat16>::value) &&
                      (std::is_same<TB, float>::value || std::is_same<TB, BFloat16>::value),
                  "gemm_mixed: operands are float or BFloat16");
    gemm_float(ta, tb, M, N, K, alpha, A, std::is_same<TA, BFloat16>::value, lda, B,
               std::is_same<TB, BFloat16>::value, ldb, beta, C, ldc, ep, gelu_a, gelu_b);
}

template void gemm_mixed<float, float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                       const float*, int64_t, float, float*, int64_t, const GemmEpilogue<float>&,
                                       bool, bool);
template void gemm_mixed<float, BFloat16>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                          const BFloat16*, int64_t, float, float*, int64_t,
                                          const GemmEpilogue<float>&, bool, bool);
template void gemm_mixed<BFloat16, float>(bool, bool, int64_t, int64_t, int64_t, float, const BFloat16*, int64_t,
                                          const float*, int64_t, float, float*, int64_t,
                                          const GemmEpilogue<float>&, bool, bool);
template void gemm_mixed<BFloat16, BFloat16>(bool, bool, int64_t, int64_t, int64_t, float, const BFloat16*, int64_t,
                                             const BFloat16*, int64_t, float, float*, int64_t,
                                             const GemmEpilogue<float>&, bool, bool);

GemmCallCounts gemm_call_counts() {
    GemmCallCounts c;
    c.bf16 = g_calls_bf16.load(), c.fp16 = g_calls_fp16.load(), c.fp32 = g_calls_fp32.load();
    c.openblas = g_calls_openblas.load();
    return c;
}
void reset_gemm_call_counts() { g_calls_bf16 = 0, g_calls_fp16 = 0, g_calls_fp32 = 0, g_calls_openblas = 0; }

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
    gemm_ex<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, GemmEpilogue<T>{});
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

template <class T>
void sum_rows(const T* a, int64_t M, int64_t N, T* out) {
    column_sums<T>(1, M, N, out, 1.0, [a, N](int64_t, int64_t r0, int64_t r1, double* acc) {
        add_rows(acc, a + r0 * N, r1 - r0, N, N);
    });
}

template <class T>
void fill_rows(T* y, const T* bias, int64_t M, int64_t N) {
    parallel_range(M, M * N > (1 << 16) ? 1 : M, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) std::copy(bias, bias + N, y + i * N);
    });
}

template void sum_rows<float>(const float*, int64_t, int64_t, float*);
template void sum_rows<double>(const double*, int64_t, int64_t, double*);
template void fill_rows<float>(float*, const float*, int64_t, int64_t);
template void fill_rows<double>(double*, const double*, int64_t, int64_t);

}  // namespace cnx
