#include "optim/clip.h"

#include <cmath>

#include "optim/optimizer.h"

namespace cnx::optim {

namespace {
// Accumulates in double: a float sum over millions of squares loses digits.
template <class T>
double norm_part(const T* g, int64_t n, double p) {
    double acc = 0;
    if (std::isinf(p)) {
        bool nan = false;
        for (int64_t i = 0; i < n; ++i) {
            nan |= std::isnan((double)g[i]);
            acc = std::fmax(acc, std::fabs((double)g[i]));
        }
        return nan ? NAN : acc;
    }
    if (p == 2) {
#pragma omp parallel for reduction(+ : acc) if (n > detail::kParallelMin)
        for (int64_t i = 0; i < n; ++i) acc += (double)g[i] * (double)g[i];
    } else if (p == 1) {
#pragma omp parallel for reduction(+ : acc) if (n > detail::kParallelMin)
        for (int64_t i = 0; i < n; ++i) acc += std::fabs((double)g[i]);
    } else {
#pragma omp parallel for reduction(+ : acc) if (n > detail::kParallelMin)
        for (int64_t i = 0; i < n; ++i) acc += std::pow(std::fabs((double)g[i]), p);
    }
    return acc;
}

template <class T>
void scale_kernel(T* g, int64_t n, T s) {
#pragma omp parallel for if (n > detail::kParallelMin)
    for (int64_t i = 0; i < n; ++i) g[i] *= s;
}
}  // namespace

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type) {
    CNX_CHECK(norm_type > 0, "clip_grad_norm: norm_type ", norm_type, " must be positive (or infinity)");
    std::vector<Tensor> grads;
    for (const auto& p : params)
        if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return 0.0;
    const bool inf = std::isinf(norm_type);
    double acc = 0;
    for (const auto& g : grads) {
        double part = 0;
        CNX_DISPATCH(g.dtype(), "clip_grad_norm", { part = norm_part<scalar_t>(g.data<scalar_t>(), g.numel(), norm_type); });
        if (inf) acc = std::isnan(part) || std::isnan(acc) ? NAN : std::fmax(acc, part);
        else acc += part;
    }
    const double total = inf ? acc : norm_type == 2 ? std::sqrt(acc) : norm_type == 1 ? acc : std::pow(acc, 1.0 / norm_type);
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1 || std::isnan(coef)) {
        for (auto& g : grads) {
            Tensor t = g;
            CNX_DISPATCH(t.dtype(), "clip_grad_norm", { scale_kernel<scalar_t>(t.data<scalar_t>(), t.numel(), (scalar_t)coef); });
        }
    }
    return total;
}

GradAccumulator::GradAccumulator(int64_t steps) : steps_(steps) {
    CNX_CHECK(steps > 0, "GradAccumulator: steps ", steps, " must be positive");
}

bool GradAccumulator::ready() {
    if (++count_ < steps_) return false;
    count_ = 0;
    return true;
}

}  // namespace cnx::optim
