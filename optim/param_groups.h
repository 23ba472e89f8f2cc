#pragma once
// Parameter groups for fine-tuning ConvNeXt, as the reference training scripts build them:
// no weight decay on 1-D parameters (norms, layer-scale gamma), biases and parameters registered
// as no-decay (nn::ParamOptions::no_weight_decay), and optional layer-wise learning-rate decay
// (lr_scale = layer_decay^(num_layers + 1 - layer_id)).
//
// Layer ids come from the model: its constructor gives each module an id (nn::Module::set_layer_id)
// and every parameter carries its id, so model.named_parameters() brings them along. Parameters
// without one (a hand-made list of official names) get the id of their name.
#include <set>
#include <string>
#include <vector>

#include "nn/module.h"
#include "optim/optimizer.h"

namespace cnx::optim {

// The layer ids of ConvNeXt's optim_factory (get_num_layer_for_convnext, 12 layers), by position:
//   downsample layer of stage s (s = 0: the stem): 0 for s = 0, s + 1 for s = 1, 2, num_layers for 3;
//   block b of stage s: s + 1 for s = 0, 1; 3 + b / 3 for s = 2; num_layers for s = 3;
//   anything else (final norm, head): num_layers + 1.
int convnext_downsample_layer_id(int stage, int num_layers = 12);
int convnext_block_layer_id(int stage, int block, int num_layers = 12);
inline int convnext_head_layer_id(int num_layers = 12) { return num_layers + 1; }
// The same rule read from an official parameter name ("stages.2.14.dwconv.weight" -> 7), for
// names that carry no id; block numbers are read in full (stage 2 of convnext_base has 27 blocks).
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
// The model's parameters, with the layer ids and no-decay flags its modules declare. (Inline, so
// programs that use optim/ without nn/, like the fuzz harnesses, need not link nn/.)
inline std::vector<ParamGroup> get_params_groups(const nn::Module& model, const ParamGroupOptions& options) {
    return get_params_groups(model.named_parameters(), options);
}

}  // namespace cnx::optim
