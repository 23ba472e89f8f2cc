#pragma once
// Internal: the AVX-512 single-precision GEMM behind cnx::gemm / gemm_ex (ops/gemm.cpp decides
// when to call it). Same contract as gemm_ex<float>; requires M, N, K > 0 and
// sgemm_avx512_available().
#include <cstdint>

#include "ops/gemm.h"

namespace cnx::kernels {

// The CPU has AVX-512 F/VL/BW/DQ and the build targets x86-64.
bool sgemm_avx512_available();

void sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep,
                  bool gelu_a, bool gelu_b);

}  // namespace cnx::kernels
