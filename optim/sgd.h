#pragma once
// SGD with momentum, dampening, Nesterov and (L2, coupled) weight decay, as PyTorch 1.13:
//   d = g + wd*p
//   buf = d (first step) | momentum*buf + (1-dampening)*d
//   d = nesterov ? d + momentum*buf : buf
//   p -= lr * d                      (lr = the group's lr times its lr_scale)
#include "optim/optimizer.h"

namespace cnx::optim {

struct SGDOptions {
    SGDOptions(double lr) : lr_(lr) {}  // NOLINT: implicit, like libtorch (lr has no default)
    CNX_OPTIM_ARG(double, lr);
    CNX_OPTIM_ARG(double, momentum) = 0;
    CNX_OPTIM_ARG(double, dampening) = 0;
    CNX_OPTIM_ARG(double, weight_decay) = 0;
    CNX_OPTIM_ARG(bool, nesterov) = false;
};

class SGD : public OptimizerWithOptions<SGDOptions> {
public:
    SGD(std::vector<ParamGroup> groups, SGDOptions defaults);
    SGD(const NamedTensors& named_params, SGDOptions defaults)
        : SGD(one_group(named_params), std::move(defaults)) {}
    const char* type() const override { return "SGD"; }

protected:
    void update_param(const ParamGroup& group, const SGDOptions& o, Tensor& param, const Tensor& grad,
                      ParamState& st) override;
    std::vector<std::string> buffer_names(size_t group_index) const override;
    std::vector<std::pair<std::string, double>> option_values(size_t group_index) const override;
    void set_option_value(size_t group_index, const std::string& key, double value) override;
};

}  // namespace cnx::optim
