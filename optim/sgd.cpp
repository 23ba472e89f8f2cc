#include "optim/sgd.h"

namespace cnx::optim {

namespace {
struct SGDStep {
    double weight_decay, momentum, dampening, neg_lr;
    bool nesterov;
};

// buf == nullptr: no momentum. first: the buffer starts as a copy of d (PyTorch's clone).
// Elements [begin, end), the scalars as locals so the loop vectorises (see adamw.cpp).
template <class T>
void sgd_range(T* p, const T* g, T* buf, bool first, int64_t begin, int64_t end, const SGDStep& s) {
    const T wd = (T)s.weight_decay, mom = (T)s.momentum, one_minus_damp = (T)(1 - s.dampening),
            neg_lr = (T)s.neg_lr;
    const bool decay = s.weight_decay != 0, nesterov = s.nesterov;
    for (int64_t i = begin; i < end; ++i) {
        T d = g[i];
        if (decay) d = detail::mul_add(p[i], wd, d);
        if (buf) {
            const T b = first ? d : detail::mul_add(d, one_minus_damp, buf[i] * mom);
            buf[i] = b;
            d = nesterov ? detail::mul_add(b, mom, d) : b;
        }
        p[i] = detail::mul_add(d, neg_lr, p[i]);
    }
}

template <class T>
void sgd_kernel(T* p, const T* g, T* buf, bool first, int64_t n, const SGDStep& s) {
    parallel_range(n, detail::kParallelMin,
                   [&](int64_t begin, int64_t end) { sgd_range(p, g, buf, first, begin, end, s); });
}

void check_options(const SGDOptions& o) {
    CNX_CHECK(o.lr() >= 0, "SGD: invalid learning rate ", o.lr());
    CNX_CHECK(o.momentum() >= 0, "SGD: invalid momentum ", o.momentum());
    CNX_CHECK(o.weight_decay() >= 0, "SGD: invalid weight_decay ", o.weight_decay());
    CNX_CHECK(!o.nesterov() || (o.momentum() > 0 && o.dampening() == 0),
              "SGD: nesterov momentum requires a momentum and zero dampening");
}
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions defaults) : OptimizerWithOptions(defaults, check_options) {
    add_initial_groups(std::move(groups));
}

void SGD::update_param(const ParamGroup& group, const SGDOptions& o, Tensor& param, const Tensor& grad,
                         ParamState& st) {
    SGDStep s;
    s.weight_decay = *group.weight_decay;
    s.momentum = o.momentum();
    s.dampening = o.dampening();
    s.nesterov = o.nesterov();
    s.neg_lr = -group.effective_lr();
    Tensor* buf = nullptr;
    bool first = false;
    if (o.momentum() != 0) {
        buf = st.find("momentum_buffer");
        if (!buf) {
            st.buffers.emplace_back("momentum_buffer", zeros_like(param));
            buf = &st.buffers.back().second;
            first = true;
        }
    }
    CNX_DISPATCH(param.dtype(), "SGD", {
        sgd_kernel<scalar_t>(param.data<scalar_t>(), grad.data<scalar_t>(), buf ? buf->data<scalar_t>() : nullptr,
                             first, param.numel(), s);
    });
}

std::vector<std::string> SGD::buffer_names(size_t group_index) const {
    if (options_[group_index].momentum() != 0) return {"momentum_buffer"};
    return {};
}

std::vector<std::pair<std::string, double>> SGD::option_values(size_t group_index) const {
    const SGDOptions& o = options_[group_index];
    return {{"momentum", o.momentum()}, {"dampening", o.dampening()}, {"nesterov", o.nesterov() ? 1.0 : 0.0}};
}


void SGD::set_option_value(size_t group_index, const std::string& key, double value) {
    SGDOptions& o = options_[group_index];
    if (key == "momentum") o.momentum(value);
    else if (key == "dampening") o.dampening(value);
    else if (key == "nesterov") o.nesterov(value != 0);
    else fail("SGD: unknown option '", key, "'");
}

}  // namespace cnx::optim
