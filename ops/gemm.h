#pragma once
// The GEMM layer shared by linear, conv2d and the fused ops. Row-major throughout; transposes are
// flags, never materialised.
//
//   C[M,N] = alpha * op(A) * op(B) + beta * C     op(A) is [M,K], op(B) is [K,N]
//
// lda/ldb/ldc are the row strides (in elements) of A, B and C as stored, so a column block of a
// wider matrix (one group of a grouped conv) is addressed by pointer offset + its parent's stride.
//
// float runs on the built-in AVX-512 kernels (ops/gemm_avx512.cpp, or ops/gemm_bf16.cpp under
// MatmulPrecision::BFloat16) when the CPU has AVX-512F and on OpenBLAS otherwise; double always
// runs on OpenBLAS. Call these outside OpenMP parallel
// regions: both backends start their own threads (the AVX-512 kernels use the OpenMP team, so
// OpenBLAS's pool sleeps while they run).
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"

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
//   out_bf16[i,j] = bf16(v)              (a bfloat16 copy, rounded to nearest even; float only)
//
// With the AVX-512 kernels this happens while the output tile is still in registers/L1; the
// fallback runs one pass over C after the BLAS call. None of the side matrices may alias C.
//
// For float GEMMs whose output is wanted only in bfloat16 (an activation saved in bf16, ops/saved.h),
// C may be null when out_bf16 is set and beta is 0: the float32 values then never reach memory
// (except as a temporary where the product's depth is summed in several blocks).
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
    // float only: GeluGrad's input stored in bfloat16 (read instead of act_in, stride ld_act_in),
    // and the bfloat16 copy of the result.
    const BFloat16* act_in_bf16 = nullptr;
    BFloat16* out_bf16 = nullptr;
    int64_t ld_out_bf16 = 0;
    bool empty() const {
        return !bias && !pre && act == GemmAct::None && !col_scale && !residual && !out_bf16;
    }
};

// gemm with an epilogue. gelu_a / gelu_b: every element of op(A) / op(B) passes through GELU as it
// is read (a layer whose input is GELU(h), forward and dW: h is read, GELU(h) is never stored).
template <class T>
void gemm_ex(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, T beta, T* C, int64_t ldc, const GemmEpilogue<T>& ep, bool gelu_a = false,
             bool gelu_b = false);
// Defined (specialised) in gemm.cpp for float and double; declared here so that no file can
// instantiate the primary template first.
template <>
void gemm_ex<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                    float*, int64_t, const GemmEpilogue<float>&, bool, bool);
template <>
void gemm_ex<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t,
                     double, double*, int64_t, const GemmEpilogue<double>&, bool, bool);

// gemm_ex<float> whose A and/or B are stored in bfloat16 (TA, TB: float or BFloat16), as the
// activations saved under Precision::BF16 are: the kernels read them as they pack, so no float32
// copy is made. bfloat16 widens to float32 exactly, so with the float32 kernels the result is the
// one gemm_ex<float> gives on the widened values, to the bit; the bf16 kernel takes bf16 operands
// as they are (GELU'd ones are widened, passed through GELU and rounded again).
template <class TA, class TB>
void gemm_mixed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const TA* A, int64_t lda,
                const TB* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep,
                bool gelu_a = false, bool gelu_b = false);

// C = op(A) op(B) (alpha 1, beta 0) with A and B as an op saved them: gemm_ex when both are T,
// gemm_mixed when one is bfloat16 (T float). For kernels templated over how their operands are stored.
template <class T, class TA, class TB>
void gemm_stored(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const TA* A, int64_t lda, const TB* B,
                 int64_t ldb, T* C, int64_t ldc, const GemmEpilogue<T>& ep = {}, bool gelu_a = false,
                 bool gelu_b = false) {
    if constexpr (std::is_same<TA, T>::value && std::is_same<TB, T>::value)
        gemm_ex<T>(trans_a, trans_b, M, N, K, T(1), A, lda, B, ldb, T(0), C, ldc, ep, gelu_a, gelu_b);
    else
        gemm_mixed<TA, TB>(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, ep, gelu_a, gelu_b);
}

// ---- precision -------------------------------------------------------------------------------------
// Like torch.set_float32_matmul_precision: with BFloat16, float GEMMs (and everything built on
// them: linear, the 1x1 and patchify convs, the fused MLP) may round op(A) and op(B) to bfloat16
// (nearest-even) and multiply with bf16 dot products, accumulating in float32: ~3 significant
// digits per product instead of ~7, at up to twice the speed. It does so only where the bf16
// kernel pays (see Bf16Kernel); otherwise the float32 kernels run and results are exactly those of
// Float32. Epilogues, bias, float64 and the OpenBLAS route are unaffected. Per thread (a new
// thread starts at Float32), so one part of a program can opt in without changing another's numbers.
enum class MatmulPrecision { Float32, BFloat16 };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
struct MatmulPrecisionGuard {  // scoped set_matmul_precision
    explicit MatmulPrecisionGuard(MatmulPrecision p) : prev(matmul_precision()) { set_matmul_precision(p); }
    ~MatmulPrecisionGuard() { set_matmul_precision(prev); }
    MatmulPrecision prev;
};

// When BFloat16 precision runs a 16-bit kernel, and which:
//   the bf16 kernel (AVX512_BF16 vdpbf16ps, ops/gemm_bf16.cpp): where the CPU has AVX512_BF16 and
//           its measured bf16 dot-product rate is >= 1.5x its float32 FMA rate (compute_peak(),
//           core/cpu_peak.h: cached per CPU model) -- on some Intel Xeons it is half;
//   else the fp16 kernel (AVX512_FP16 vfmadd231ph, ops/gemm_fp16.cpp): where the CPU has
//           AVX512_FP16 and its measured fp16 FMA rate is >= 1.5x the float32 one (those same
//           Xeons: 2x). Operands are scaled by powers of two and rounded to fp16 (11 significant
//           bits, more than bfloat16's 8), products summed 64 at a time in fp16, then in float32:
//           errors below the bf16 kernel's on ConvNeXt's shapes;
//   else the float32 kernels, and float32 results.
// Bf16Kernel chooses: Auto as above; Always: the bf16 kernel wherever the CPU has AVX512_BF16;
// Fp16: the fp16 kernel wherever the CPU has AVX512_FP16 (both for tests and benchmarks of the
// kernels themselves); Never: neither (as if the CPU lacked both: float32 kernels and results).
// The initial mode comes from the environment: CNX_BF16=auto|always|fp16|never (default auto).
enum class Bf16Kernel { Auto, Always, Never, Fp16 };
void set_bf16_kernel(Bf16Kernel k);
Bf16Kernel bf16_kernel();
bool gemm_bf16_supported();  // the CPU and the build can run the bf16 kernel (ignoring Never)
bool gemm_fp16_supported();  // ... the fp16 kernel
bool gemm_uses_bf16();       // would a float GEMM called on this thread now run the bf16 kernel
bool gemm_uses_fp16();       // ... the fp16 kernel
bool gemm_rounds_operands();  // either: float GEMMs on this thread now round op(A), op(B) to 16 bits
const char* gemm_precision_name();  // "bf16", "fp16" or "fp32": what float GEMMs on this thread run now

// Float GEMM calls by the kernel that ran them, over all threads since the last reset: what a
// benchmark reports as the path taken.
struct GemmCallCounts {
    int64_t bf16 = 0, fp16 = 0, fp32 = 0, openblas = 0;
};
GemmCallCounts gemm_call_counts();
void reset_gemm_call_counts();

// ---- blocking (tests and benchmarks) --------------------------------------------------------------
// Depth block kc and packed column block nc of the AVX-512 kernels, in float32 elements: by
// default from the CPU's caches (the A row panel, 14 x kc floats, within half of L1d; the packed
// B block, kc x nc floats, within half of L2). Tests shrink them to reach every edge on small
// shapes; {0, 0} restores the default. Changing kc changes how the depth is summed (results
// differ in rounding); nothing else here does.
struct GemmBlocking {
    int64_t kc = 0, nc = 0;
};
void set_gemm_blocking(GemmBlocking b);
GemmBlocking gemm_blocking();  // in effect now

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
