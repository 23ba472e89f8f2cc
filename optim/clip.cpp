#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "optim/optimizer.h"

namespace cnx::optim {

namespace {
// Sums term(g[i]) in double (a float sum over millions of squares loses digits) over fixed
// chunks whose partial sums are added in order: the result depends on the data alone, never on
// the thread count, like every other reduction in the project.
constexpr int64_t kNormChunk = 1 << 14;

template <class T, class Term>
double chunked_sum(const T* g, int64_t n, Term term) {
    const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
    std::vector<double> partial((size_t)chunks);
    parallel_range(chunks, n > detail::kParallelMin ? 1 : chunks, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
            const int64_t end = std::min(n, (c + 1) * kNormChunk);
            double acc = 0;
            for (int64_t i = c * kNormChunk; i < end; ++i) acc += term((double)g[i]);
            partial[(size_t)c] = acc;
        }
    });
    double acc = 0;
    for (double v : partial) acc += v;
    return acc;
}

template <class T>
double norm_part(const T* g, int64_t n, double p) {
    if (std::isinf(p)) {  // a maximum is the same in any order
        double acc = 0;
        bool nan = false;
        for (int64_t i = 0; i < n; ++i) {
            nan |= std::isnan((double)g[i]);
            acc = std::fmax(acc, std::fabs((double)g[i]));
        }
        return nan ? NAN : acc;
    }
    if (p == 2) return chunked_sum(g, n, [](double x) { return x * x; });
    if (p == 1) return chunked_sum(g, n, [](double x) { return std::fabs(x); });
    return chunked_sum(g, n, [p](double x) { return std::pow(std::fabs(x), p); });
}

template <class T>
void scale_kernel(T* g, int64_t n, T s) {
    parallel_range(n, detail::kParallelMin, [g, s](int64_t begin, int64_t end) {
        const T f = s;  // a local, so the loop vectorises
        for (int64_t i = begin; i < end; ++i) g[i] *= f;
    });
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
