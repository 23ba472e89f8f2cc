#pragma once
// Internal: the AVX-512 GEMM kernels behind cnx::gemm / gemm_ex (ops/gemm.cpp decides when to
// call which). Same contract as gemm_ex<float>; require M, N, K > 0 and the matching *_available().
//   sgemm_avx512:  float32 FMA (ops/gemm_avx512.cpp)
//   sbgemm_avx512: op(A) and op(B) rounded to bfloat16 (nearest-even) while packing, products by
//                  vdpbf16ps with float32 accumulation (ops/gemm_bf16.cpp)
//   hgemm_avx512:  op(A) and op(B) scaled by powers of two and rounded to fp16 while packing,
//                  products by vfmadd231ph, short fp16 partial sums added in float32 (ops/gemm_fp16.cpp)
// kc / nc: depth block and packed column block in float32 elements (the bf16 kernel takes twice
// the depth for the same bytes, as does the fp16 kernel).
#include <cstdint>

#include "core/cpu_info.h"
#include "ops/gemm.h"

namespace cnx::kernels {

// kc and nc for this CPU's caches (see GemmBlocking in ops/gemm.h).
GemmBlocking avx512_default_blocking(const CpuInfo& cpu);

// The CPU has AVX-512 F/VL/BW/DQ and the build targets x86-64.
bool sgemm_avx512_available();
// ... and AVX512_BF16, and the compiler could build the bf16 kernel.
bool sbgemm_avx512_available();
// ... and AVX512_FP16, and the compiler could build the fp16 kernel.
bool hgemm_avx512_available();

// A and B: float32, or bfloat16 where a_bf16 / b_bf16. C may be null when ep.out_bf16 is set and
// beta is 0 (ops/gemm.h).
struct KernelOperands {
    const void* A;
    int64_t lda;
    bool a_bf16;
    const void* B;
    int64_t ldb;
    bool b_bf16;
};

void sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                  float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                  const GemmBlocking& blocking);

void sbgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                   float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                   const GemmBlocking& blocking);

void hgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                  float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                  const GemmBlocking& blocking);

}  // namespace cnx::kernels
