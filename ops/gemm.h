#pragma once
// The GEMM layer shared by linear, conv2d and the fused ops. Row-major throughout; transposes are
// flags, never materialised.
//
//   C[M,N] = alpha * op(A) * op(B) + beta * C     op(A) is [M,K], op(B) is [K,N]
//
// lda/ldb/ldc are the row strides (in elements) of A, B and C as stored, so a column block of a
// wider matrix (one group of a grouped conv) is addressed by pointer offset + its parent's stride.
//
// float runs on the built-in AVX-512 kernels (ops/gemm_avx512.cpp) when the CPU has AVX-512F and
// on OpenBLAS otherwise; double always runs on OpenBLAS. Call these outside OpenMP parallel
// regions: both backends start their own threads (the AVX-512 kernels use the OpenMP team, so
// OpenBLAS's pool sleeps while they run).
#include <cstdint>

namespace cnx {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// ---- fused epilogues ---------------------------------------------------------------------------
// Element-wise work applied to each final value v = alpha*op(A)op(B) + beta*C[i,j] before it is
// stored, in this order (each step only when its pointer is set):
//
//   v += bias[j]
//   pre[i,j] = v                         (the pre-activation, kept for a backward)
//   v = gelu(v)                          act == Gelu
//   v = v * gelu'(act_in[i,j])           act == GeluGrad (the GELU backward of a product)
//   v = v * col_scale[j]
//   v = v + residual[i,j]
//
// With the AVX-512 kernels this happens while the output tile is still in registers/L1; the
// fallback runs one pass over C after the BLAS call. None of the side matrices may alias C.
enum class GemmAct { None, Gelu, GeluGrad };

template <class T>
struct GemmEpilogue {
    const T* bias = nullptr;
    T* pre = nullptr;
    int64_t ld_pre = 0;
    GemmAct act = GemmAct::None;
    const T* act_in = nullptr;
    int64_t ld_act_in = 0;
    const T* col_scale = nullptr;
    const T* residual = nullptr;
    int64_t ld_residual = 0;
    bool empty() const { return !bias && !pre && act == GemmAct::None && !col_scale && !residual; }
};

// gemm with an epilogue. gelu_a / gelu_b: every element of op(A) / op(B) passes through GELU as it
// is read (a layer whose input is GELU(h), forward and dW: h is read, GELU(h) is never stored).
template <class T>
void gemm_ex(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, T beta, T* C, int64_t ldc, const GemmEpilogue<T>& ep, bool gelu_a = false,
             bool gelu_b = false);

// ---- backend selection (tests and benchmarks) ----------------------------------------------------
enum class GemmBackend { Auto, OpenBLAS, Avx512 };
// Auto: AVX-512 kernels for float when the CPU has them, unless the environment sets
// CNX_GEMM=openblas. Forcing Avx512 on a CPU without it throws.
void set_gemm_backend(GemmBackend b);
GemmBackend gemm_backend();         // what float GEMMs run on now (never Auto)
bool gemm_avx512_supported();       // the CPU (and the build) can run the AVX-512 kernels
const char* gemm_backend_name();    // "avx512" or "openblas"

// out[N] = sum over the M rows of a [M, N] (the bias gradient: column sums of dY), through
// column_sums (ops/column_sum.h): deterministic, double accumulators, threads inside.
template <class T>
void sum_rows(const T* a, int64_t M, int64_t N, T* out);

// Every row of y [M, N] = bias[N] (the bias term before a beta = 1 GEMM). OpenMP inside.
template <class T>
void fill_rows(T* y, const T* bias, int64_t M, int64_t N);

}  // namespace cnx
