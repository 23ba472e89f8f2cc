#pragma once
// Parameter groups for fine-tuning ConvNeXt, as the reference training scripts build them:
// no weight decay on 1-D parameters (norms, layer-scale gamma) and biases, and optional
// layer-wise learning-rate decay (lr_scale = layer_decay^(num_layers + 1 - layer_id)).
#include <set>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace cnx::optim {

// Layer id of a ConvNeXt parameter (ConvNeXt's optim_factory, 12 layers):
//   downsample_layers.0.* -> 0, downsample_layers.{1,2}.* -> stage + 1, downsample_layers.3.* -> 12,
//   stages.{0,1}.* -> stage + 1, stages.2.<b>.* -> 3 + b / 3, stages.3.* -> 12,
//   anything else (norm, head) -> num_layers + 1.
// Block numbers are parsed in full (stage 2 of convnext_base has 27 blocks).
int convnext_layer_id(const std::string& name, int num_layers = 12);

struct ParamGroupOptions {
    double weight_decay = 1e-5;        // the reference scripts' default
    double layer_decay = 1.0;          // 1.0: off (groups "decay" / "no_decay")
    int num_layers = 12;
    std::set<std::string> skip_list;   // names that also get no weight decay
};

// Frozen parameters (requires_grad false) are left out. With layer_decay == 1 the result is
// exactly two groups, "decay" then "no_decay" (either may be empty); otherwise groups are named
// "layer_<id>_decay" / "layer_<id>_no_decay" in order of first appearance, each with its lr_scale.
// The groups carry weight_decay but no lr: they take the optimiser's.
std::vector<ParamGroup> get_params_groups(const NamedTensors& named_params, const ParamGroupOptions& options);
std::vector<ParamGroup> get_params_groups(const NamedTensors& named_params, double weight_decay = 1e-5,
                                          double layer_decay = 1.0);

}  // namespace cnx::optim
