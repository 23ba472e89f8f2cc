#pragma once
// The per-image, per-channel algebra of GRN shared by the grn op (ops/grn.cpp) and the fused V2
// MLP (ops/fused_grn.cpp). Both see the activation a as N images of P rows of K channels (the op
// reads a itself, the fused MLP GELU(h)): the O(N K) steps between their passes over a, and the
// backward's pass of per-image sums.
//
// Forward, from the sums of squares q[n,k] = sum_p a[p,k]^2:
//   G = sqrt(q), m = mean_k G, Nx = G / (m + eps), s = 1 + gamma Nx, y = a s + beta.
// Backward, from S[n,k] = sum_p dy[p,k] a[p,k] (per image):
//   dL/dNx[k] = D[k] = gamma[k] S[k]
//   dL/dG[k]  = D[k] / (m + eps) - (sum_j D[j] G[j]) / (K (m + eps)^2)
//   da        = dy s + a r,     r[k] = dL/dG[k] / G[k]   (0 where G[k] = 0: a is 0 there)
//   dgamma[k] = sum_n Nx[n,k] S[n,k],   dbeta[k] = sum over every row of dy[., k].
#include <cmath>
#include <cstdint>
#include <vector>

#include "ops/column_sum.h"

namespace cnx::grn_math {

// One image: q [K] (sums of squares) -> G, Nx, s [K]; returns m + eps.
template <class T>
double stats(const double* q, const T* gamma, int64_t K, double eps, T* G, T* Nx, T* s) {
    double m = 0;
    for (int64_t k = 0; k < K; ++k) m += std::sqrt(q[k]);
    const double denom = m / (double)K + eps;
    for (int64_t k = 0; k < K; ++k) {
        const double g = std::sqrt(q[k]), nx = g / denom;
        G[k] = (T)g;
        Nx[k] = (T)nx;
        s[k] = (T)(1.0 + (double)gamma[k] * nx);
    }
    return denom;
}

// One image: S [K] and the forward's G, m + eps -> r [K]; adds Nx S into dgamma when given.
template <class T>
void backward_coeffs(const double* S, const T* gamma, const T* G, const T* Nx, double denom, int64_t K, T* r,
                     double* dgamma) {
    double dg = 0;  // sum_j D[j] G[j]
    for (int64_t k = 0; k < K; ++k) dg += (double)gamma[k] * S[k] * (double)G[k];
    const double c2 = dg / ((double)K * denom * denom);
    for (int64_t k = 0; k < K; ++k) {
        const double dG = (double)gamma[k] * S[k] / denom - c2;
        r[k] = G[k] > 0 ? (T)(dG / (double)G[k]) : T(0);
        if (dgamma) dgamma[k] += (double)Nx[k] * S[k];
    }
}

// The backward up to the input gradient, over the activation a = act(in[i]) (in [N, P, K]):
// the per-image sums of dy a and dy (column_sums: double accumulators, the same for any thread
// count), then r [N, K]; dgamma and dbeta [K] are written when given. TI: how in is stored (T, or
// bfloat16 saved for backward; act widens it).
template <class T, class TI, class Act>
void backward_stats(const T* dy, const TI* in, const Act& act, const T* gamma, const T* G, const T* Nx,
                    const double* denom, int64_t N, int64_t P, int64_t K, T* r, T* dgamma, T* dbeta) {
    std::vector<double> S(N * 2 * K);  // per image: [sum dy a | sum dy]
    column_sums<double>(N, P, 2 * K, S.data(), 1.0, [&](int64_t n, int64_t r0, int64_t r1, double* acc) {
        double* acc_b = acc + K;
        for (int64_t row = r0; row < r1; ++row) {
            const T* g = dy + (n * P + row) * K;
            const TI* x = in + (n * P + row) * K;
#pragma omp simd
            for (int64_t k = 0; k < K; ++k) {
                acc[k] += (double)g[k] * (double)act(x[k]);
                acc_b[k] += (double)g[k];
            }
        }
    });
    std::vector<double> dg(K, 0.0), db(K, 0.0);
    for (int64_t n = 0; n < N; ++n) {
        const double* Sn = S.data() + n * 2 * K;
        backward_coeffs(Sn, gamma, G + n * K, Nx + n * K, denom[n], K, r + n * K, dg.data());
        for (int64_t k = 0; k < K; ++k) db[k] += Sn[K + k];
    }
    for (int64_t k = 0; k < K; ++k) {
        if (dgamma) dgamma[k] = (T)dg[k];
        if (dbeta) dbeta[k] = (T)db[k];
    }
}

}  // namespace cnx::grn_math
