#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

namespace cnx::optim {

namespace {
struct AdamWStep {
    double decay, beta1, beta2, eps, bias_correction2_sqrt, neg_step_size;
};

// The scalars are rounded to T once, as PyTorch's kernels do with a Python float argument.
// Each line mirrors one PyTorch op: mul_, add_(alpha) and addcmul_ (both fused multiply-adds in
// PyTorch's CPU build), sqrt / div / add_(eps), addcdiv_ (p + (value * m) / denom).
// Elements [begin, end); the scalars are locals here (not captured by reference), so the compiler
// can keep them in registers and vectorise the loop.
template <class T, bool AMSGRAD>
void adamw_range(T* p, const T* g, T* m, T* v, T* vmax, int64_t begin, int64_t end, const AdamWStep& s) {
    const T decay = (T)s.decay, b1 = (T)s.beta1, one_minus_b1 = (T)(1 - s.beta1), b2 = (T)s.beta2,
            one_minus_b2 = (T)(1 - s.beta2), bc2 = (T)s.bias_correction2_sqrt, eps = (T)s.eps,
            neg_step = (T)s.neg_step_size;
    for (int64_t i = begin; i < end; ++i) {
        const T gi = g[i];
        const T pi = p[i] * decay;
        const T mi = detail::mul_add(gi, one_minus_b1, m[i] * b1);
        const T vi = detail::mul_add(one_minus_b2 * gi, gi, v[i] * b2);
        m[i] = mi;
        v[i] = vi;
        T vd = vi;
        if (AMSGRAD) {
            vd = std::max(vmax[i], vi);
            vmax[i] = vd;
        }
        const T denom = std::sqrt(vd) / bc2 + eps;
        p[i] = pi + neg_step * mi / denom;
    }
}

template <class T, bool AMSGRAD>
void adamw_kernel(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamWStep& s) {
    parallel_range(n, detail::kParallelMin,
                   [&](int64_t begin, int64_t end) { adamw_range<T, AMSGRAD>(p, g, m, v, vmax, begin, end, s); });
}

template <class T>
void adamw_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, Tensor* vmax, const AdamWStep& s) {
    if (vmax)
        adamw_kernel<T, true>(p.data<T>(), g.data<T>(), m.data<T>(), v.data<T>(), vmax->data<T>(), p.numel(), s);
    else
        adamw_kernel<T, false>(p.data<T>(), g.data<T>(), m.data<T>(), v.data<T>(), nullptr, p.numel(), s);
}

void check_options(const AdamWOptions& o) {
    CNX_CHECK(o.lr() >= 0, "AdamW: invalid learning rate ", o.lr());
    CNX_CHECK(o.eps() >= 0, "AdamW: invalid eps ", o.eps());
    CNX_CHECK(o.beta1() >= 0 && o.beta1() < 1, "AdamW: invalid beta1 ", o.beta1());
    CNX_CHECK(o.beta2() >= 0 && o.beta2() < 1, "AdamW: invalid beta2 ", o.beta2());
    CNX_CHECK(o.weight_decay() >= 0, "AdamW: invalid weight_decay ", o.weight_decay());
}
}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions defaults) : OptimizerWithOptions(defaults, check_options) {
    add_initial_groups(std::move(groups));
}

void AdamW::update_param(const ParamGroup& group, const AdamWOptions& o, Tensor& param, const Tensor& grad,
                         ParamState& st) {
    if (!st.initialized) {
        st.buffers.clear();
        st.buffers.emplace_back("exp_avg", zeros_like(param));
        st.buffers.emplace_back("exp_avg_sq", zeros_like(param));
    }
    // amsgrad may be switched on after the first steps: its running max starts at zero then.
    if (o.amsgrad() && !st.find("max_exp_avg_sq")) st.buffers.emplace_back("max_exp_avg_sq", zeros_like(param));
    const double lr = group.effective_lr();
    const double bias_correction1 = 1 - std::pow(o.beta1(), (double)st.step);
    const double bias_correction2 = 1 - std::pow(o.beta2(), (double)st.step);
    AdamWStep s;
    s.decay = 1 - lr * *group.weight_decay;
    s.beta1 = o.beta1();
    s.beta2 = o.beta2();
    s.eps = o.eps();
    s.bias_correction2_sqrt = std::sqrt(bias_correction2);
    s.neg_step_size = -(lr / bias_correction1);
    Tensor& m = st.buffer("exp_avg");
    Tensor& v = st.buffer("exp_avg_sq");
    Tensor* vmax = o.amsgrad() ? &st.buffer("max_exp_avg_sq") : nullptr;
    CNX_DISPATCH(param.dtype(), "AdamW", { adamw_update<scalar_t>(param, grad, m, v, vmax, s); });
}

std::vector<std::string> AdamW::buffer_names(size_t group_index) const {
    if (options_[group_index].amsgrad()) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    return {"exp_avg", "exp_avg_sq"};
}

std::vector<std::pair<std::string, double>> AdamW::option_values(size_t group_index) const {
    const AdamWOptions& o = options_[group_index];
    return {{"beta1", o.beta1()}, {"beta2", o.beta2()}, {"eps", o.eps()}, {"amsgrad", o.amsgrad() ? 1.0 : 0.0}};
}


void AdamW::set_option_value(size_t group_index, const std::string& key, double value) {
    AdamWOptions& o = options_[group_index];
    if (key == "beta1") o.betas({value, o.beta2()});
    else if (key == "beta2") o.betas({o.beta1(), value});
    else if (key == "eps") o.eps(value);
    else if (key == "amsgrad") o.amsgrad(value != 0);
    else fail("AdamW: unknown option '", key, "'");
}

}  // namespace cnx::optim
