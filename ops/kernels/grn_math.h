#pragma once
// The per-image, per-channel algebra of GRN shared by the grn op (ops/grn.cpp) and the fused V2
// MLP (ops/fused_grn.cpp). Both see the activation a as N images of P rows of K channels, and
// only their passes over a differ; these are the O(N K) steps between those passes.
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

}  // namespace cnx::grn_math
