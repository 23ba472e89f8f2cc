#pragma once
// Optimiser base: parameter groups, per-parameter state, zero_grad/step, and a state_dict made of
// named tensors plus a string map, so a training checkpoint can store it in a safetensors file
// (tensors as tensors, scalars in __metadata__).
//
// Depends only on Tensors and names (not on nn::Module), so raw tensors can be optimised too:
//   optim::AdamW opt(optim::get_params_groups(model.named_parameters(), 0.05),
//                    optim::AdamWOptions(5e-4).weight_decay(0.05));
//   opt.zero_grad(); loss.backward(); opt.step();
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/parallel.h"

namespace cnx::optim {

using cnx::NamedTensors;  // declared once, in core/tensor.h

// Builder-style option setters, like libtorch's TORCH_ARG: opts.lr(1e-3).weight_decay(0.05).
#define CNX_OPTIM_ARG(T, name)                              \
public:                                                     \
    auto name(const T& v)->decltype(*this) {                \
        name##_ = v;                                        \
        return *this;                                       \
    }                                                       \
    const T& name() const { return name##_; }               \
                                                            \
private:                                                    \
    T name##_

struct ParamGroup {
    std::string name;                   // "decay", "no_decay", "layer_3_decay", ...
    std::vector<Tensor> params;
    std::vector<std::string> names;     // one per param; empty: Tensor::name(), else "<group>.<i>"
    std::optional<double> lr;           // unset: the optimiser's default
    std::optional<double> weight_decay; // unset: the optimiser's default
    double lr_scale = 1.0;              // the update uses lr * lr_scale (layer-wise lr decay)
    // The group's lr when it joined the optimiser; LambdaLR sets lr = initial_lr * factor(step).
    std::optional<double> initial_lr;

    ParamGroup() = default;
    ParamGroup(std::vector<Tensor> p) : params(std::move(p)) {}  // NOLINT: implicit, like PyTorch
    double effective_lr() const { return lr.value_or(0.0) * lr_scale; }
};

// What state_dict() returns and load_state_dict() reads. Tensors are named
// "<prefix><param name>.<buffer>" (e.g. "optim.stages.0.0.dwconv.weight.exp_avg"); scalars hold
// per-parameter step counts ("<prefix><param name>.step") and group hyper-parameters
// ("<prefix>group.<i>.lr", ...). Doubles are written with 17 significant digits, so a
// save/load round trip is exact.
struct OptimizerState {
    NamedTensors tensors;
    std::map<std::string, std::string> scalars;
};

class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    virtual const char* type() const = 0;  // "AdamW", "SGD": checked on load

    // Drops every parameter's gradient (PyTorch's set_to_none=True default).
    void zero_grad();
    // One update of every parameter that requires grad and has a gradient; others are skipped.
    void step();

    void add_param_group(ParamGroup group);
    std::vector<ParamGroup>& param_groups() { return groups_; }
    const std::vector<ParamGroup>& param_groups() const { return groups_; }
    std::vector<Tensor> params() const;
    // Sets every group's lr (a schedule's value; each group still multiplies it by lr_scale).
    void set_lr(double lr);

    // Tensors share memory with the optimiser's buffers (like PyTorch): write them out before
    // the next step() if a snapshot is wanted.
    OptimizerState state_dict(const std::string& prefix = "optim.") const;
    // Checks type, group count and parameter names, restores hyper-parameters, step counts and
    // buffers (copied, converted to each parameter's dtype). Throws naming the missing key.
    void load_state_dict(const OptimizerState& state, const std::string& prefix = "optim.");

    // Number of steps taken by a parameter (0 before its first update).
    int64_t step_count(const std::string& param_name) const;

protected:
    struct ParamState {
        bool initialized = false;
        int64_t step = 0;
        NamedTensors buffers;  // "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"
        Tensor& buffer(const std::string& key);  // throws when missing
        Tensor* find(const std::string& key);    // nullptr when missing
    };

    Optimizer() = default;
    // Fills the group's unset lr / weight_decay from the optimiser defaults.
    virtual void apply_defaults(ParamGroup& group) const = 0;
    // Called after a group is added (subclasses keep their per-group options aligned).
    virtual void on_group_added(size_t /*group_index*/) {}
    // Updates one parameter in place; st.step is already incremented.
    virtual void update(size_t group_index, Tensor& param, const Tensor& grad, ParamState& st) = 0;
    // Buffers a parameter of this group keeps once initialised (for load_state_dict).
    virtual std::vector<std::string> buffer_names(size_t group_index) const = 0;
    // Optimiser-specific group options (betas, eps, momentum, ...) as numbers, for state_dict.
    virtual std::vector<std::pair<std::string, double>> option_values(size_t group_index) const = 0;
    virtual void set_option_value(size_t group_index, const std::string& key, double value) = 0;
    // Throws when the group's options are out of range; load_state_dict calls it before it
    // commits, so a corrupt checkpoint fails at load, not at the first step.
    virtual void check_group_options(size_t /*group_index*/) const {}

    std::vector<ParamGroup> groups_;
    std::vector<std::vector<ParamState>> state_;  // [group][param]
};

// One group of every parameter, named (what an optimiser built from named_parameters() holds).
inline std::vector<ParamGroup> one_group(const NamedTensors& named_params) {
    CNX_CHECK(!named_params.empty(), "optimizer: got an empty parameter list");
    ParamGroup g;
    for (const auto& kv : named_params) {
        g.names.push_back(kv.first);
        g.params.push_back(kv.second);
    }
    return {std::move(g)};
}

// What every optimiser with its own options type shares: the defaults, one Options per group
// (kept aligned as groups join), the lr / weight_decay fill-in, and the two constructors'
// argument checks. `check` throws for an out-of-range Options (the subclass's range checks); it
// runs on the defaults, before every update and on a loaded state.
template <class Options>
class OptimizerWithOptions : public Optimizer {
public:
    const Options& defaults() const { return defaults_; }
    // Per-group options beyond lr and weight decay (those live in the group's ParamGroup).
    Options& options(size_t group_index) {
        CNX_CHECK(group_index < options_.size(), type(), ": no param group ", group_index, " (have ",
                  options_.size(), ")");
        return options_[group_index];
    }

protected:
    OptimizerWithOptions(Options defaults, void (*check)(const Options&))
        : defaults_(std::move(defaults)), check_(check) {
        check_(defaults_);
    }
    // Called from the subclass's constructor body, where type() and the hooks are its own.
    void add_initial_groups(std::vector<ParamGroup> groups) {
        CNX_CHECK(!groups.empty(), type(), ": got an empty list of param groups");
        for (auto& g : groups) add_param_group(std::move(g));
    }
    void apply_defaults(ParamGroup& group) const override {
        if (!group.lr) group.lr = defaults_.lr();
        if (!group.weight_decay) group.weight_decay = defaults_.weight_decay();
    }
    void on_group_added(size_t group_index) override {
        options_.resize(group_index + 1, defaults_);
        options_[group_index] = defaults_;
    }
    void check_group_options(size_t group_index) const override { check_(options_[group_index]); }
    void update(size_t group_index, Tensor& param, const Tensor& grad, ParamState& st) final {
        check_(options_[group_index]);  // options(i) may have been changed since the last step
        update_param(groups_[group_index], options_[group_index], param, grad, st);
    }
    // One parameter's update with its group's options; st.step is already incremented.
    virtual void update_param(const ParamGroup& group, const Options& options, Tensor& param, const Tensor& grad,
                        ParamState& st) = 0;

    Options defaults_;
    void (*check_)(const Options&);
    std::vector<Options> options_;  // per group
};

namespace detail {
// x * y + z, fused when the CPU has FMA: PyTorch's vectorised add(a, b, alpha) is fmadd(b, alpha, a),
// so fusing here follows its rounding; without FMA hardware std::fma would be a slow libm call.
template <class T> inline T mul_add(T x, T y, T z) {
#ifdef __FMA__
    return std::fma(x, y, z);
#else
    return x * y + z;
#endif
}
// The update loops run on the thread pool of ops/parallel.h, like the kernels (one pool, no
// OpenMP barrier per parameter); loops shorter than this stay on the calling thread.
using ::cnx::kParallelMin;
std::string format_double(double v);
double parse_double(const std::string& key, const std::string& text);
}  // namespace detail

}  // namespace cnx::optim
