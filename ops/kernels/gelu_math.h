#pragma once
// Branch-free float GELU (exact erf form) and its derivative, written so that `#pragma omp simd`
// loops vectorise them: GEMM epilogues and packing routines apply them to tiles, so a fused
// pwconv1 -> GELU or GELU' -> pwconv2-backward needs no extra pass over the activation.
//
// Absolute error below 1e-6 over all inputs (PyTorch's float GELU has the same cancellation in
// 1 + erf); ops/activation.cpp's float path is more careful in the left tail and slower, so fused
// and unfused GELU agree to about 1e-7 relative to max(|y|, 1), not bit for bit.
//
// Everything here has internal linkage: translation units compiled for different instruction
// sets (the AVX-512 GEMM is) each keep their own copy instead of sharing one the linker picks.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace cnx {
namespace {
namespace gelu_math {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

// exp(y): y = k ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial, 2^k built in the exponent.
inline float exp_f(float y_in) {
    // std::max/min return their first argument when a comparison involves NaN: this order maps
    // NaN into range, so 2^k below is built from a finite k (a NaN k made the shift undefined).
    const float y = std::min(88.0f, std::max(-87.0f, y_in));
    const float k = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    float r = y - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const float e = y_in < -87.0f ? 0.0f : p * scale;
    return y_in > 88.0f ? std::numeric_limits<float>::infinity() : (y_in != y_in ? y_in : e);
}

// erf(z) = z P(z^2) / Q(z^2) on z clamped to [-4, 4] (beyond, erf rounds to +-1 in float): a
// rational least-squares fit with near-equal-ripple weights, relative error < 7e-8 on [0, 4]. One
// division, no exp, no branches: about half the cost of an erfc(exp) tail formula.
inline float erf_f(float z_in) {
    const float z = std::min(std::max(z_in, -4.0f), 4.0f), s = z * z;
    float p = 1.9109616139489916e-08f;
    p = p * s - 1.9422613891859064e-06f;
    p = p * s + 1.4729095964381321e-04f;
    p = p * s + 3.9909124566744718e-03f;
    p = p * s + 5.1526148855009939e-02f;
    p = p * s + 2.0713436438639984e-01f;
    p = p * s + 1.1283790942683347e+00f;
    float q = 1.0211813834905e-03f;
    q = q * s + 1.495883946212976e-02f;
    q = q * s + 1.179745561802969e-01f;
    q = q * s + 5.168993010834906e-01f;
    q = q * s + 1.0f;
    return std::min(std::max(z * p / q, -1.0f), 1.0f);
}

// Phi(x) = (1 + erf(x/sqrt2)) / 2. Like PyTorch's float GELU this loses relative precision in the
// far left tail (absolute error stays below 1e-7 there, where Phi itself is tiny).
inline float normal_cdf(float x) { return 0.5f + 0.5f * erf_f(x * kInvSqrt2); }

inline float gelu(float x) { return x * normal_cdf(x); }

inline float gelu_grad(float x) {
    const float xc = std::min(std::max(x, -10.0f), 10.0f);  // x phi(x) < 1e-20 beyond
    return normal_cdf(x) + xc * kInvSqrt2Pi * exp_f(-0.5f * xc * xc);
}

// Double versions (libm), for the float64 fallbacks of the fused ops.
inline double gelu(double x) { return 0.5 * x * std::erfc(-x * 0.70710678118654752440); }
inline double gelu_grad(double x) {
    return 0.5 * std::erfc(-x * 0.70710678118654752440) + x * 0.39894228040143267794 * std::exp(-0.5 * x * x);
}

}  // namespace gelu_math
}  // namespace
}  // namespace cnx
