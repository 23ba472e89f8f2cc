// GELU (Hendrycks & Gimpel 2016): exact x * Phi(x), or PyTorch's approximate='tanh' form
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Backward saves the input.
//
// float64 uses libm (std::erfc, std::exp), so gradchecks test the formulas themselves. float32
// runs on every block's widest activation, where one libm erff call per element was ~15x slower
// than the branch-free polynomial approximations below, which the compiler vectorises. They are
// accurate to a few float ulps; the tests compare them with float64 over [-12, 12].
#include "ops/activation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/kernels/gelu_math.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/sqrt(2 pi), the normal pdf's constant
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kTanhCoef = 0.044715;

// exp_f is shared with the fused MLP kernels.
using gelu_math::exp_f;

// Phi(x), the standard normal CDF, float. With z = x / sqrt(2):
//   |z| < 0.84: Phi = 0.5 + 0.5 erf(z), erf(z) = 2/sqrt(pi) sum_n (-1)^n z^(2n+1) / (n! (2n+1))
//               (ten terms, truncation < 1e-8);
//   otherwise:  erfc(|z|) = exp(-z^2) t Q(t), t = 1 / (1 + |z|/2), Q a degree-8 least-squares
//               fit of erfc(a) exp(a^2) / t on a in [0.84, 10] (relative error < 3e-8); then
//               Phi = erfc/2 for x < 0 (no cancellation in the left tail) or 1 - erfc/2.
inline float normal_cdf_f(float x) {
    const float z = x * (float)kInvSqrt2, s = z * z, a = std::fabs(z);
    float p = -1.0f / 6894720;  // coefficient n is (-1)^n / (n! (2n+1)), n = 9 down to 1
    p = p * s + 1.0f / 685440;
    p = p * s - 1.0f / 75600;
    p = p * s + 1.0f / 9360;
    p = p * s - 1.0f / 1320;
    p = p * s + 1.0f / 216;
    p = p * s - 1.0f / 42;
    p = p * s + 1.0f / 10;
    p = p * s - 1.0f / 3;
    const float erf_small = 1.12837916709551257f * (z + z * s * p);
    const float t = 1.0f / (1.0f + 0.5f * std::min(a, 10.0f));
    float q = -0.03859376969618281f;
    q = q * t + 0.2201091199922482f;
    q = q * t - 0.40329639093728387f;
    q = q * t + 0.21995696669608195f;
    q = q * t - 0.0037451251267260482f;
    q = q * t + 0.19767439109819224f;
    q = q * t + 0.24363309274225067f;
    q = q * t + 0.2823634820979323f;
    q = q * t + 0.2820851137316296f;
    const float half_erfc = 0.5f * exp_f(-s) * t * q;
    const float tail = x < 0 ? half_erfc : 1.0f - half_erfc;
    return a < 0.84f ? 0.5f + 0.5f * erf_small : tail;
}

// Per-element GELU and its derivative. Phi(x) = erfc(-x/sqrt2)/2 and 1 + tanh(u) = 2 sigmoid(2u)
// equal PyTorch's 0.5 x (1 + erf(..)) and 0.5 x (1 + tanh(..)) but keep full relative precision in
// the left tail, where 1 + erf and 1 + tanh cancel.
inline double gelu_exact(double x) { return 0.5 * x * std::erfc(-x * kInvSqrt2); }
inline double gelu_exact_grad(double x) {
    return 0.5 * std::erfc(-x * kInvSqrt2) + x * kInvSqrt2Pi * std::exp(-0.5 * x * x);
}
// e = exp(-2u): sigma(2u) = 1 / (1 + e) and 1 - sigma = e sigma (no cancellation near sigma = 1).
inline double exp_m2u(double x) { return std::exp(-2.0 * kSqrt2OverPi * (x + kTanhCoef * x * x * x)); }
inline double gelu_tanh(double x) { return x / (1.0 + exp_m2u(x)); }
inline double gelu_tanh_grad(double x) {
    // d/dx x sigma(2u) = sigma + 2 x sigma (1 - sigma) u'
    const double e = exp_m2u(x), sg = 1.0 / (1.0 + e);
    return sg + 2.0 * x * (e * sg) * sg * kSqrt2OverPi * (1.0 + 3.0 * kTanhCoef * x * x);
}
inline float gelu_exact(float x) { return x * normal_cdf_f(x); }
inline float gelu_exact_grad(float x) {
    const float xc = std::min(std::max(x, -20.0f), 20.0f);  // x phi(x) vanishes beyond
    return normal_cdf_f(x) + xc * (float)kInvSqrt2Pi * exp_f(-0.5f * xc * xc);
}
inline float exp_m2u(float x) {
    return exp_f(-2.0f * (float)kSqrt2OverPi * (x + (float)kTanhCoef * x * x * x));
}
inline float gelu_tanh(float x) { return x / (1.0f + exp_m2u(x)); }
inline float gelu_tanh_grad(float x) {
    // Beyond |x| = 9 the derivative is 1 or below 1e-26; clamping keeps e = exp(-2u) finite
    // (e sg <= 1 then cannot overflow) and x^2 finite for absurd inputs.
    const float xc = std::min(std::max(x, -9.0f), 9.0f);
    const float e = exp_m2u(xc), sg = 1.0f / (1.0f + e);
    const float du = (float)kSqrt2OverPi * (1.0f + (float)(3 * kTanhCoef) * xc * xc);
    return sg + 2.0f * xc * du * (e * sg) * sg;
}

template <class T>
void gelu_forward(T* out, const T* x, int64_t n, bool approx) {
    if (approx) {
        parallel_range(n, n >= kParallelMinCostly ? 4096 : n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
            for (int64_t i = i0; i < i1; ++i) out[i] = gelu_tanh(x[i]);
        });
    } else {
        parallel_range(n, n >= kParallelMinCostly ? 4096 : n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
            for (int64_t i = i0; i < i1; ++i) out[i] = gelu_exact(x[i]);
        });
    }
}

template <class T, class TX>
void gelu_backward(T* dx, const T* dout, const TX* x, int64_t n, bool approx) {
    if (approx) {
        parallel_range(n, n >= kParallelMinCostly ? 4096 : n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
            for (int64_t i = i0; i < i1; ++i) dx[i] = dout[i] * gelu_tanh_grad(widen(x[i]));
        });
    } else {
        parallel_range(n, n >= kParallelMinCostly ? 4096 : n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
            for (int64_t i = i0; i < i1; ++i) dx[i] = dout[i] * gelu_exact_grad(widen(x[i]));
        });
    }
}

}  // namespace

Tensor gelu(const Tensor& x, bool tanh_approximation) {
    CNX_CHECK(x.defined(), "gelu: undefined input");
    Tensor out = empty_like(x);
    CNX_DISPATCH(x.dtype(), "gelu", {
        gelu_forward<scalar_t>(out.data<scalar_t>(), x.data<scalar_t>(), x.numel(), tanh_approximation);
    });
    if (autograd::records("gelu", {x})) {
        const SavedTensor sx = save_for_backward(x);
        autograd::record("gelu", out, {x}, [sx, tanh_approximation](const Tensor& g) -> std::vector<Tensor> {
            Tensor dx = empty_like(g);
            if (sx.is_bf16() && !meta_mode()) {
                gelu_backward<float>(dx.data<float>(), g.data<float>(), sx.stored().data<BFloat16>(), g.numel(),
                                     tanh_approximation);
                return {dx};
            }
            CNX_DISPATCH(g.dtype(), "gelu backward", {
                gelu_backward<scalar_t>(dx.data<scalar_t>(), g.data<scalar_t>(), sx.stored().data<scalar_t>(),
                                        g.numel(), tanh_approximation);
            });
            return {dx};
        });
    }
    return out;
}

}  // namespace cnx
