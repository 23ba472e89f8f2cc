#pragma once
// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization") with PyTorch 1.13's update,
// operation for operation, per parameter:
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  (amsgrad: vmax = max(vmax, v))
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p -= (lr / (1 - b1^t)) * m / denom
// where lr is the group's lr times its lr_scale and t the parameter's own step count. Float32
// parameters are updated in float32 (like PyTorch), float64 ones in float64.
#include "optim/optimizer.h"

namespace cnx::optim {

struct AdamWOptions {
    AdamWOptions(double lr = 1e-3) : lr_(lr) {}  // NOLINT: implicit, like libtorch
    auto betas(const std::pair<double, double>& b) -> AdamWOptions& {
        beta1_ = b.first;
        beta2_ = b.second;
        return *this;
    }
    std::pair<double, double> betas() const { return {beta1_, beta2_}; }
    double beta1() const { return beta1_; }
    double beta2() const { return beta2_; }

    CNX_OPTIM_ARG(double, lr);
    CNX_OPTIM_ARG(double, eps) = 1e-8;
    CNX_OPTIM_ARG(double, weight_decay) = 1e-2;
    CNX_OPTIM_ARG(bool, amsgrad) = false;

private:
    double beta1_ = 0.9, beta2_ = 0.999;
};

class AdamW : public OptimizerWithOptions<AdamWOptions> {
public:
    // Every group takes the defaults' lr / weight_decay unless it sets its own; betas, eps and
    // amsgrad come from the defaults and can be changed per group with options(i).
    AdamW(std::vector<ParamGroup> groups, AdamWOptions defaults = {});
    AdamW(const NamedTensors& named_params, AdamWOptions defaults = {})
        : AdamW(one_group(named_params), std::move(defaults)) {}
    const char* type() const override { return "AdamW"; }

protected:
    void update_param(const ParamGroup& group, const AdamWOptions& o, Tensor& param, const Tensor& grad,
                      ParamState& st) override;
    std::vector<std::string> buffer_names(size_t group_index) const override;
    std::vector<std::pair<std::string, double>> option_values(size_t group_index) const override;
    void set_option_value(size_t group_index, const std::string& key, double value) override;
};

}  // namespace cnx::optim
