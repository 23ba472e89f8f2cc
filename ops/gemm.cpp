#include "ops/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "core/error.h"

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

}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) return scale_c(M, N, beta, C, ldc);
    check_dims(M, N, K, lda, ldb, ldc);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) return scale_c(M, N, beta, C, ldc);
    check_dims(M, N, K, lda, ldb, ldc);
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

template <class T>
void sum_rows(const T* a, int64_t M, int64_t N, T* out) {
    // Fixed block count (not the thread count) keeps the summation order, hence the result,
    // independent of how many threads run it.
    const int64_t blocks = std::min<int64_t>(std::max<int64_t>(M / 64, 1), 32);
    if (blocks == 1) {
        std::fill(out, out + N, T(0));
        for (int64_t i = 0; i < M; ++i) {
            const T* r = a + i * N;
#pragma omp simd
            for (int64_t j = 0; j < N; ++j) out[j] += r[j];
        }
        return;
    }
    std::vector<T> partial(blocks * N, T(0));
#pragma omp parallel for schedule(static) if (M * N > (1 << 16))
    for (int64_t b = 0; b < blocks; ++b) {
        T* p = partial.data() + b * N;
        const int64_t i0 = M * b / blocks, i1 = M * (b + 1) / blocks;
        for (int64_t i = i0; i < i1; ++i) {
            const T* r = a + i * N;
#pragma omp simd
            for (int64_t j = 0; j < N; ++j) p[j] += r[j];
        }
    }
    std::copy(partial.begin(), partial.begin() + N, out);
    for (int64_t b = 1; b < blocks; ++b) {
        const T* p = partial.data() + b * N;
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) out[j] += p[j];
    }
}

template <class T>
void fill_rows(T* y, const T* bias, int64_t M, int64_t N) {
#pragma omp parallel for schedule(static) if (M * N > (1 << 16))
    for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, y + i * N);
}

template void sum_rows<float>(const float*, int64_t, int64_t, float*);
template void sum_rows<double>(const double*, int64_t, int64_t, double*);
template void fill_rows<float>(float*, const float*, int64_t, int64_t);
template void fill_rows<double>(double*, const double*, int64_t, int64_t);

}  // namespace cnx
