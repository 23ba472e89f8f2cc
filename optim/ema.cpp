#include "optim/ema.h"

#include <cstdlib>

namespace cnx::optim {

namespace {
template <class T>
void ema_kernel(T* e, const T* v, int64_t n, T d, T one_minus_d) {
    parallel_range(n, detail::kParallelMin, [e, v, d, one_minus_d](int64_t begin, int64_t end) {
        const T a = d, b = one_minus_d;  // locals, so the loop vectorises
        for (int64_t i = begin; i < end; ++i) e[i] = a * e[i] + b * v[i];
    });
}
}  // namespace

ModelEMA::ModelEMA(const NamedTensors& named, double decay) : decay_(0) {
    set_decay(decay);
    for (const auto& kv : named) {
        CNX_CHECK(kv.second.defined(), "ModelEMA: tensor '", kv.first, "' is undefined");
        CNX_CHECK(index_.emplace(kv.first, shadow_.size()).second, "ModelEMA: name '", kv.first, "' appears twice");
        Tensor copy = kv.second.clone();
        copy.set_name(kv.first);
        shadow_.emplace_back(kv.first, copy);
    }
}

void ModelEMA::set_decay(double decay) {
    CNX_CHECK(decay >= 0 && decay <= 1, "ModelEMA: decay ", decay, " must be in [0, 1]");
    decay_ = decay;
}

template <class F>
void ModelEMA::for_each_pair(const NamedTensors& named, const char* what, F fn) {
    CNX_CHECK(named.size() == shadow_.size(), "ModelEMA::", what, ": got ", named.size(), " tensors, the shadow has ",
              shadow_.size());
    std::vector<char> seen(shadow_.size(), 0);
    for (const auto& kv : named) {
        auto it = index_.find(kv.first);
        CNX_CHECK(it != index_.end(), "ModelEMA::", what, ": unknown tensor '", kv.first, "'");
        CNX_CHECK(!seen[it->second], "ModelEMA::", what, ": tensor '", kv.first, "' given twice");
        seen[it->second] = 1;
        Tensor& e = shadow_[it->second].second;
        CNX_CHECK(kv.second.defined() && kv.second.shape() == e.shape() && kv.second.dtype() == e.dtype(), "ModelEMA::",
                  what, ": '", kv.first, "' is ", kv.second.str(), ", the shadow is ", e.str());
        fn(e, kv.second);
    }
}

void ModelEMA::update(const NamedTensors& named) {
    const double d = decay_;
    for_each_pair(named, "update", [d](Tensor& e, const Tensor& v) {
        CNX_DISPATCH(e.dtype(), "ModelEMA::update", {
            ema_kernel<scalar_t>(e.data<scalar_t>(), v.data<scalar_t>(), e.numel(), (scalar_t)d, (scalar_t)(1.0 - d));
        });
    });
    ++updates_;
}

void ModelEMA::set(const NamedTensors& named) {
    for_each_pair(named, "set", [](Tensor& e, const Tensor& v) { copy_(e, v); });
}

OptimizerState ModelEMA::state_dict(const std::string& prefix) const {
    OptimizerState out;
    for (const auto& kv : shadow_) out.tensors.emplace_back(prefix + kv.first, kv.second);
    out.scalars[prefix + "decay"] = detail::format_double(decay_);
    out.scalars[prefix + "num_updates"] = std::to_string(updates_);
    return out;
}

void ModelEMA::load_state_dict(const OptimizerState& state, const std::string& prefix) {
    auto d = state.scalars.find(prefix + "decay");
    auto u = state.scalars.find(prefix + "num_updates");
    CNX_CHECK(d != state.scalars.end() && u != state.scalars.end(), "ModelEMA: state lacks '", prefix, "decay' or '",
              prefix, "num_updates'");
    const double decay = detail::parse_double(d->first, d->second);
    char* end = nullptr;
    const long long updates = std::strtoll(u->second.c_str(), &end, 10);
    CNX_CHECK(end != u->second.c_str() && *end == '\0' && updates >= 0, "ModelEMA: '", u->first, "' = '", u->second,
              "' is not a count");
    std::map<std::string, const Tensor*> found;
    for (const auto& kv : state.tensors)
        if (kv.first.compare(0, prefix.size(), prefix) == 0) found[kv.first.substr(prefix.size())] = &kv.second;
    // Validate everything before touching the shadow.
    for (const auto& kv : shadow_) {
        auto it = found.find(kv.first);
        CNX_CHECK(it != found.end(), "ModelEMA: state lacks tensor '", prefix, kv.first, "'");
        CNX_CHECK(it->second->defined() && it->second->shape() == kv.second.shape(), "ModelEMA: tensor '", prefix,
                  kv.first, "' is ", it->second->str(), ", the shadow is ", kv.second.str());
    }
    for (auto& kv : shadow_) copy_(kv.second, *found[kv.first]);
    set_decay(decay);
    updates_ = updates;
}

}  // namespace cnx::optim
