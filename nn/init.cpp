#include "nn/init.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cnx::nn::init {
namespace {

template <class T, class F>
void fill_with(T* p, int64_t n, F&& next) {
    for (int64_t i = 0; i < n; ++i) p[i] = (T)next();
}

// Element order is the flat row-major order, one draw per element, so a seed gives the same
// values whatever the dtype.
template <class F>
void generate(Tensor& t, const char* what, F&& next) {
    CNX_CHECK(t.defined(), what, ": undefined tensor");
    CNX_DISPATCH(t.dtype(), what, { fill_with(t.data<scalar_t>(), t.numel(), next); });
}

double norm_cdf(double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

double erfinv(double x) {
    if (std::isnan(x) || x < -1 || x > 1) return std::numeric_limits<double>::quiet_NaN();
    if (x == 1) return std::numeric_limits<double>::infinity();
    if (x == -1) return -std::numeric_limits<double>::infinity();
    // Giles, "Approximating the erfinv function" (2010), then Newton steps on erf to full precision.
    double w = -std::log((1.0 - x) * (1.0 + x)), p;
    if (w < 5.0) {
        w -= 2.5;
        p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w;
        p = -3.5233877e-06 + p * w;
        p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w;
        p = -0.00125372503 + p * w;
        p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w;
        p = 1.50140941 + p * w;
    } else {
        w = std::sqrt(w) - 3.0;
        p = -0.000200214257;
        p = 0.000100950558 + p * w;
        p = 0.00134934322 + p * w;
        p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w;
        p = -0.0076224613 + p * w;
        p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w;
        p = 2.83297682 + p * w;
    }
    double y = p * x;
    const double two_over_sqrt_pi = 2.0 / std::sqrt(M_PI);
    for (int i = 0; i < 2; ++i) {
        double d = two_over_sqrt_pi * std::exp(-y * y);
        if (d == 0) break;
        y -= (std::erf(y) - x) / d;
    }
    return y;
}

void trunc_normal_(Tensor& t, double std, double a, double b, Generator* gen, double mean) {
    CNX_CHECK(std > 0, "trunc_normal_: std must be positive, got ", std);
    CNX_CHECK(a < b, "trunc_normal_: empty interval [", a, ", ", b, "]");
    Generator& g = gen ? *gen : default_generator();
    double cdf_a = norm_cdf((a - mean) / std), cdf_b = norm_cdf((b - mean) / std);
    if (cdf_b - cdf_a > 0.5) {
        // Most draws land inside: rejection gives the same distribution at a fraction of the
        // cost of erfinv (model init draws tens of millions of values).
        generate(t, "trunc_normal_", [&] {
            for (;;) {
                double v = mean + std * g.normal();
                if (v >= a && v <= b) return v;
            }
        });
        return;
    }
    // Uniform in CDF space between the bounds, mapped back through the inverse normal CDF.
    double lo = 2 * cdf_a - 1, hi = 2 * cdf_b - 1;
    generate(t, "trunc_normal_", [&] {
        double v = erfinv(g.uniform(lo, hi)) * std * std::sqrt(2.0) + mean;
        return std::clamp(v, a, b);
    });
}

void normal_(Tensor& t, double mean, double std, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    generate(t, "normal_", [&] { return mean + std * g.normal(); });
}

void uniform_(Tensor& t, double lo, double hi, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    generate(t, "uniform_", [&] { return g.uniform(lo, hi); });
}

void constant_(Tensor& t, double value) {
    CNX_CHECK(t.defined(), "constant_: undefined tensor");
    fill_(t, value);
}
void zeros_(Tensor& t) { constant_(t, 0.0); }
void ones_(Tensor& t) { constant_(t, 1.0); }

int64_t fan_in(const Tensor& weight) {
    CNX_CHECK(weight.dim() >= 2, "fan_in: weight ", weight.str(), " needs at least 2 dimensions");
    int64_t f = weight.size(1);
    for (int64_t d = 2; d < weight.dim(); ++d) f *= weight.size(d);
    return f;
}

void default_weight_init_(Tensor& weight, Generator* gen) {
    // kaiming_uniform_ with a = sqrt(5): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in).
    int64_t f = fan_in(weight);
    double bound = f > 0 ? 1.0 / std::sqrt((double)f) : 0.0;
    uniform_(weight, -bound, bound, gen);
}

void default_bias_init_(Tensor& bias, int64_t fan_in, Generator* gen) {
    double bound = fan_in > 0 ? 1.0 / std::sqrt((double)fan_in) : 0.0;
    uniform_(bias, -bound, bound, gen);
}

}  // namespace cnx::nn::init
