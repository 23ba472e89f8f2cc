#include "optim/optimizer.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <unordered_map>

namespace cnx::optim {

namespace detail {
std::string format_double(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

double parse_double(const std::string& key, const std::string& text) {
    const char* s = text.c_str();
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s, &end);
    CNX_CHECK(end != s && *end == '\0' && errno != ERANGE, "optimizer state: '", key, "' = '", text,
              "' is not a number");
    return v;
}
}  // namespace detail

namespace {
int64_t parse_int(const std::string& key, const std::string& text) {
    const char* s = text.c_str();
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(s, &end, 10);
    CNX_CHECK(end != s && *end == '\0' && errno != ERANGE && v >= 0, "optimizer state: '", key, "' = '", text,
              "' is not a step count");
    return v;
}

// Learning rates, weight decay and scales: finite and not negative (a bad value would silently
// turn descent into ascent or NaN).
double parse_rate(const std::string& key, const std::string& text) {
    const double v = detail::parse_double(key, text);
    CNX_CHECK(std::isfinite(v) && v >= 0, "optimizer state: '", key, "' = '", text, "' is not a rate (finite, >= 0)");
    return v;
}

const std::string& lookup(const std::map<std::string, std::string>& m, const std::string& key) {
    auto it = m.find(key);
    CNX_CHECK(it != m.end(), "optimizer state: missing key '", key, "'");
    return it->second;
}

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size(); ++i) out += (i ? "," : "") + names[i];
    return out;
}
}  // namespace

Tensor* Optimizer::ParamState::find(const std::string& key) {
    for (auto& kv : buffers)
        if (kv.first == key) return &kv.second;
    return nullptr;
}

Tensor& Optimizer::ParamState::buffer(const std::string& key) {
    Tensor* t = find(key);
    if (!t) fail("optimizer: parameter state has no buffer '", key, "'");
    return *t;
}

void Optimizer::zero_grad() {
    for (auto& g : groups_)
        for (auto& p : g.params) p.zero_grad();
}

void Optimizer::step() {
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
        ParamGroup& g = groups_[gi];
        for (size_t pi = 0; pi < g.params.size(); ++pi) {
            Tensor& p = g.params[pi];
            if (!p.requires_grad()) continue;
            Tensor grad = p.grad();
            if (!grad.defined()) continue;
            CNX_CHECK(grad.dtype() == p.dtype() && grad.shape() == p.shape(), type(), ": gradient ", grad.str(),
                      " does not match parameter '", g.names[pi], "' ", p.str());
            ParamState& st = state_[gi][pi];
            st.step += 1;
            update(gi, p, grad, st);
            st.initialized = true;
        }
    }
}

void Optimizer::add_param_group(ParamGroup group) {
    const size_t gi = groups_.size();
    if (group.names.empty()) {
        for (size_t i = 0; i < group.params.size(); ++i) {
            const Tensor& p = group.params[i];
            std::string n = p.defined() ? p.name() : std::string();
            group.names.push_back(!n.empty() ? n : (group.name.empty() ? "group" + std::to_string(gi) : group.name) +
                                                       "." + std::to_string(i));
        }
    }
    CNX_CHECK(group.names.size() == group.params.size(), type(), ": param group '", group.name, "' has ",
              group.params.size(), " params but ", group.names.size(), " names");
    std::set<const TensorImpl*> seen;
    std::set<std::string> seen_names;
    for (const auto& g : groups_) {
        for (const auto& p : g.params) seen.insert(p.impl());
        seen_names.insert(g.names.begin(), g.names.end());
    }
    for (size_t i = 0; i < group.params.size(); ++i) {
        const Tensor& p = group.params[i];
        const std::string& n = group.names[i];
        CNX_CHECK(p.defined(), type(), ": parameter '", n, "' is an undefined tensor");
        CNX_CHECK(p.is_leaf(), type(), ": can't optimise non-leaf tensor '", n, "' ", p.str());
        CNX_CHECK(seen.insert(p.impl()).second, type(), ": parameter '", n, "' ", p.str(),
                  " appears in more than one param group");
        CNX_CHECK(!n.empty() && n.find(',') == std::string::npos, type(), ": bad parameter name '", n, "'");
        CNX_CHECK(seen_names.insert(n).second, type(), ": parameter name '", n, "' is used twice");
    }
    apply_defaults(group);
    CNX_CHECK(group.lr && *group.lr >= 0, type(), ": invalid learning rate ", group.lr.value_or(-1), " in group '",
              group.name, "'");
    CNX_CHECK(group.weight_decay && *group.weight_decay >= 0, type(), ": invalid weight_decay ",
              group.weight_decay.value_or(-1), " in group '", group.name, "'");
    CNX_CHECK(group.lr_scale >= 0, type(), ": invalid lr_scale ", group.lr_scale, " in group '", group.name, "'");
    if (!group.initial_lr) group.initial_lr = group.lr;
    state_.emplace_back(group.params.size());
    groups_.push_back(std::move(group));
    on_group_added(gi);
}

std::vector<Tensor> Optimizer::params() const {
    std::vector<Tensor> out;
    for (const auto& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
    return out;
}

void Optimizer::set_lr(double lr) {
    CNX_CHECK(lr >= 0, type(), ": invalid learning rate ", lr);
    for (auto& g : groups_) g.lr = lr;
}

int64_t Optimizer::step_count(const std::string& param_name) const {
    for (size_t gi = 0; gi < groups_.size(); ++gi)
        for (size_t pi = 0; pi < groups_[gi].names.size(); ++pi)
            if (groups_[gi].names[pi] == param_name) return state_[gi][pi].step;
    fail(type(), ": no parameter named '", param_name, "'");
}

OptimizerState Optimizer::state_dict(const std::string& prefix) const {
    using detail::format_double;
    OptimizerState out;
    out.scalars[prefix + "type"] = type();
    out.scalars[prefix + "groups"] = std::to_string(groups_.size());
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
        const ParamGroup& g = groups_[gi];
        const std::string gp = prefix + "group." + std::to_string(gi) + ".";
        out.scalars[gp + "name"] = g.name;
        out.scalars[gp + "params"] = join_names(g.names);
        out.scalars[gp + "lr"] = format_double(*g.lr);
        out.scalars[gp + "initial_lr"] = format_double(*g.initial_lr);
        out.scalars[gp + "weight_decay"] = format_double(*g.weight_decay);
        out.scalars[gp + "lr_scale"] = format_double(g.lr_scale);
        for (const auto& kv : option_values(gi)) out.scalars[gp + kv.first] = format_double(kv.second);
        for (size_t pi = 0; pi < g.params.size(); ++pi) {
            const ParamState& st = state_[gi][pi];
            if (!st.initialized) continue;
            const std::string pp = prefix + g.names[pi] + ".";
            out.scalars[pp + "step"] = std::to_string(st.step);
            for (const auto& kv : st.buffers) out.tensors.emplace_back(pp + kv.first, kv.second);
        }
    }
    return out;
}

void Optimizer::load_state_dict(const OptimizerState& state, const std::string& prefix) {
    const auto& sc = state.scalars;
    const std::string saved_type = lookup(sc, prefix + "type");
    CNX_CHECK(saved_type == type(), type(), ": load_state_dict given the state of a ", saved_type, " optimizer");
    const int64_t ngroups = parse_int(prefix + "groups", lookup(sc, prefix + "groups"));
    CNX_CHECK(ngroups == (int64_t)groups_.size(), type(), ": the state has ", ngroups,
              " param groups but this optimizer has ", groups_.size());
    std::unordered_map<std::string, const Tensor*> tensors;
    for (const auto& kv : state.tensors) tensors[kv.first] = &kv.second;

    // Work on copies and commit at the end, so a bad checkpoint leaves the optimiser untouched.
    std::vector<ParamGroup> groups = groups_;
    std::vector<std::vector<ParamState>> new_state(groups_.size());
    std::vector<std::vector<std::pair<std::string, double>>> old_options, new_options;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        ParamGroup& g = groups[gi];
        const std::string gp = prefix + "group." + std::to_string(gi) + ".";
        const std::string& saved_names = lookup(sc, gp + "params");
        CNX_CHECK(saved_names == join_names(g.names), type(), ": param group ", gi, " holds [", saved_names,
                  "] in the state but [", join_names(g.names), "] here");
        g.name = lookup(sc, gp + "name");
        g.lr = parse_rate(gp + "lr", lookup(sc, gp + "lr"));
        g.initial_lr = parse_rate(gp + "initial_lr", lookup(sc, gp + "initial_lr"));
        g.weight_decay = parse_rate(gp + "weight_decay", lookup(sc, gp + "weight_decay"));
        g.lr_scale = parse_rate(gp + "lr_scale", lookup(sc, gp + "lr_scale"));
        old_options.push_back(option_values(gi));
        std::vector<std::pair<std::string, double>> opts;
        for (const auto& kv : old_options.back())
            opts.emplace_back(kv.first, detail::parse_double(gp + kv.first, lookup(sc, gp + kv.first)));
        new_options.push_back(opts);
    }
    auto set_options = [this](const std::vector<std::vector<std::pair<std::string, double>>>& all) {
        for (size_t gi = 0; gi < all.size(); ++gi)
            for (const auto& kv : all[gi]) set_option_value(gi, kv.first, kv.second);
    };
    try {
        // Buffer names depend on the options (amsgrad adds max_exp_avg_sq), so apply them first.
        set_options(new_options);
        for (size_t gi = 0; gi < groups.size(); ++gi) check_group_options(gi);
        for (size_t gi = 0; gi < groups.size(); ++gi) {
            const ParamGroup& g = groups[gi];
            const auto names = buffer_names(gi);
            for (size_t pi = 0; pi < g.params.size(); ++pi) {
                ParamState st;
                const std::string pp = prefix + g.names[pi] + ".";
                auto it = sc.find(pp + "step");
                if (it != sc.end()) {
                    st.initialized = true;
                    st.step = parse_int(it->first, it->second);
                    for (const auto& b : names) {
                        auto t = tensors.find(pp + b);
                        CNX_CHECK(t != tensors.end(), type(), ": state of '", g.names[pi], "' lacks tensor '", pp + b,
                                  "'");
                        const Tensor& src = *t->second;
                        CNX_CHECK(src.defined() && src.shape() == g.params[pi].shape(), type(), ": tensor '", pp + b,
                                  "' is ", src.str(), " but parameter '", g.names[pi], "' is ", g.params[pi].str());
                        st.buffers.emplace_back(b, src.to(g.params[pi].dtype()));
                    }
                }
                new_state[gi].push_back(std::move(st));
            }
        }
    } catch (...) {
        set_options(old_options);
        throw;
    }
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        groups_[gi].name = groups[gi].name;
        groups_[gi].lr = groups[gi].lr;
        groups_[gi].initial_lr = groups[gi].initial_lr;
        groups_[gi].weight_decay = groups[gi].weight_decay;
        groups_[gi].lr_scale = groups[gi].lr_scale;
    }
    state_ = std::move(new_state);
}

}  // namespace cnx::optim
