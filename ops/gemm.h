#pragma once
// Thin typed wrappers over OpenBLAS, shared by linear, conv2d and anything else that multiplies
// matrices. Row-major throughout; transposes are flags, never materialised.
//
//   C[M,N] = alpha * op(A) * op(B) + beta * C     op(A) is [M,K], op(B) is [K,N]
//
// lda/ldb/ldc are the row strides (in elements) of A, B and C as stored, so a column block of a
// wider matrix (one group of a grouped conv) is addressed by pointer offset + its parent's stride.
// Call these outside OpenMP parallel regions: OpenBLAS runs its own threads.
#include <cstdint>

namespace cnx {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// out[N] = sum over the M rows of a [M, N] (the bias gradient: column sums of dY). Deterministic:
// rows are cut into a fixed number of blocks whatever the thread count, partial sums reduced in
// order. OpenMP inside.
template <class T>
void sum_rows(const T* a, int64_t M, int64_t N, T* out);

// Every row of y [M, N] = bias[N] (the bias term before a beta = 1 GEMM). OpenMP inside.
template <class T>
void fill_rows(T* y, const T* bias, int64_t M, int64_t N);

}  // namespace cnx
