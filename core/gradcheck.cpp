#include "core/gradcheck.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/rng.h"

namespace cnx {
namespace {

double weighted_sum(const Tensor& y, const Tensor& weights) {
    const double* a = y.data<double>();
    const double* w = weights.data<double>();
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += a[i] * w[i];
    return s;
}

}  // namespace

GradcheckResult gradcheck(const TensorFn& fn, std::vector<Tensor> inputs, const GradcheckOptions& opts) {
    CNX_CHECK(opts.element_stride >= 1, "gradcheck: element_stride must be at least 1, got ", opts.element_stride);
    std::vector<int> idx = opts.check_inputs;
    if (idx.empty())
        for (size_t i = 0; i < inputs.size(); ++i)
            if (inputs[i].defined()) idx.push_back((int)i);
    for (auto& t : inputs)
        if (t.defined()) CNX_CHECK(t.dtype() == DType::F64, "gradcheck: inputs must be float64, got ", t.str());
    // Leaves of our own, so the caller's tensors keep their grads and flags.
    for (auto& t : inputs)
        if (t.defined()) t = t.clone();
    for (int i : idx) inputs[i].requires_grad_(true);

    default_generator().manual_seed(opts.seed);
    Tensor y = fn(inputs);
    CNX_CHECK(y.dtype() == DType::F64, "gradcheck: function returned ", y.str(), ", expected float64");
    Generator wgen(opts.seed ^ 0x5eedull);
    Tensor weights = randn(y.shape(), DType::F64, &wgen);
    CNX_CHECK(y.requires_grad(), "gradcheck: output does not depend on any checked input");
    y.backward(weights);

    GradcheckResult r;
    NoGradGuard no_grad;
    for (int i : idx) {
        Tensor x = inputs[i];
        Tensor analytic = x.grad().defined() ? x.grad() : zeros_like(x);
        double* xp = x.data<double>();
        const double* ap = analytic.data<double>();
        for (int64_t k = 0; k < x.numel(); k += opts.element_stride) {
            double saved = xp[k];
            xp[k] = saved + opts.eps;
            default_generator().manual_seed(opts.seed);
            double fp = weighted_sum(fn(inputs), weights);
            xp[k] = saved - opts.eps;
            default_generator().manual_seed(opts.seed);
            double fm = weighted_sum(fn(inputs), weights);
            xp[k] = saved;
            double numeric = (fp - fm) / (2 * opts.eps);
            double a = ap[k];
            double abs_err = std::fabs(a - numeric);
            double rel_err = abs_err / std::max({std::fabs(a), std::fabs(numeric), 1.0});
            r.max_abs_err = std::max(r.max_abs_err, abs_err);
            if (rel_err > r.max_rel_err) {
                r.max_rel_err = rel_err;
                r.worst = "input " + std::to_string(i) + " element " + std::to_string(k) + ": analytic " +
                          std::to_string(a) + ", numeric " + std::to_string(numeric);
            }
            if (abs_err > opts.tol * std::max({std::fabs(a), std::fabs(numeric), 1.0})) r.pass = false;
        }
    }
    return r;
}

double forward_f32_vs_f64(const TensorFn& fn, const std::vector<Tensor>& inputs64, uint64_t seed) {
    NoGradGuard no_grad;
    std::vector<Tensor> in32;
    for (auto& t : inputs64) in32.push_back(t.defined() ? t.to(DType::F32) : Tensor());
    default_generator().manual_seed(seed);
    Tensor y64 = fn(inputs64);
    default_generator().manual_seed(seed);
    Tensor y32 = fn(in32);
    CNX_CHECK(y32.shape() == y64.shape(), "forward_f32_vs_f64: shapes ", shape_str(y32.shape()), " and ",
              shape_str(y64.shape()), " differ");
    const float* a = y32.data<float>();
    const double* b = y64.data<double>();
    double worst = 0;
    for (int64_t i = 0; i < y64.numel(); ++i)
        worst = std::max(worst, std::fabs((double)a[i] - b[i]) / std::max(std::fabs(b[i]), 1.0));
    return worst;
}

}  // namespace cnx
