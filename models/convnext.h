#pragma once
// ConvNeXt ("A ConvNet for the 2020s", Liu et al. 2022) with the official parameter names and
// shapes, so official checkpoints load without conversion. Activations are NHWC throughout:
// the official channels_first LayerNorm and the permutes around the block's MLP disappear.
//
//   cnx::models::ConvNeXtOptions opts;
//   opts.num_classes = 5;
//   auto model = cnx::models::create_model("convnext_tiny", opts);
//   Tensor logits = model->forward(images);  // images NHWC [N, H, W, 3], H and W >= 32
//
// The module tree is the model's only description. Parameter shapes and counts come from
// named_parameters(), MACs and stage shapes from a shape-only forward (core/meta.h), the names
// other libraries use from the aliases each module declares where it is registered (io/key_names.h),
// and layer-decay ids from set_layer_id in the constructor (optim/param_groups.h).
//
// The stem, downsampling layers, final norm and head are shared by the ConvNeXt families; the
// blocks come from a BlockFactory, so a family with another block (ConvNeXt V2) registers its
// names with its own factory (models/registry.h) and reuses everything else.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/layers.h"

namespace cnx::models {

struct ConvNeXtOptions;

// What a block factory gets for each block of the stages.
struct BlockArgs {
    int64_t dim;                     // channels of the stage
    double drop_path;                // this block's stochastic-depth rate
    const ConvNeXtOptions& options;  // the whole model's options (layer scale, ...)
    Generator* gen;                  // for the block's own initialisation (null: the default one)
};
// Builds one block: NHWC [N, H, W, dim] in, the same shape out. Its parameters are named under
// "stages.<stage>.<index>.", and its aliases (see nn::Alias) continue the stage's, so the block
// declares the other styles' names of its own submodules and parameters.
using BlockFactory = std::function<std::shared_ptr<nn::Module>(const BlockArgs&)>;

struct ConvNeXtOptions {
    int64_t num_classes = 1000;
    int64_t in_chans = 3;
    std::vector<int64_t> depths{3, 3, 9, 3};
    std::vector<int64_t> dims{96, 192, 384, 768};
    double drop_path_rate = 0.0;          // stochastic depth, linear from 0 over all blocks
    double layer_scale_init_value = 1e-6; // gamma's initial value; <= 0: no gamma parameter
    double head_init_scale = 1.0;         // head weight and bias are multiplied by it after init
    BlockFactory block;                   // the family's block (set by model_options); empty: Block
};

// dwconv 7x7 -> LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C -> gamma -> drop path, + input.
class Block : public nn::Module {
public:
    Block(int64_t dim, double drop_path, double layer_scale_init_value, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;  // NHWC [N, H, W, dim]

    // Whether forward runs the MLP, layer scale and residual as the fused convnext_mlp op: only
    // when pwconv1, act and pwconv2 are exactly nn::Linear, exact-erf nn::GELU and nn::Linear
    // (a subclass runs its own forward), none has a forward hook, and drop path is inactive
    // (Identity, or DropPath in eval mode or at rate 0). Otherwise the ordinary ops run.
    bool mlp_fusable() const;

    std::shared_ptr<nn::Conv2d> dwconv;
    std::shared_ptr<nn::LayerNorm> norm;
    std::shared_ptr<nn::Linear> pwconv1;
    std::shared_ptr<nn::GELU> act;
    std::shared_ptr<nn::Linear> pwconv2;
    std::shared_ptr<nn::Module> drop_path;  // DropPath, or Identity when the rate is 0
    Tensor gamma;                           // [dim], undefined without layer scale
};

// The V1 block factory (what an empty ConvNeXtOptions::block means).
std::shared_ptr<nn::Module> make_block(const BlockArgs& args);

class ConvNeXt : public nn::Module {
public:
    // Weights: trunc_normal(std 0.02) for conv and linear weights, zero biases, LayerNorm 1/0,
    // drawn from gen (the default generator when null). In meta mode (core/meta.h) nothing is
    // allocated or drawn.
    explicit ConvNeXt(const ConvNeXtOptions& options = {}, Generator* gen = nullptr);

    Tensor forward(const Tensor& x) override;  // NHWC [N, H, W, in_chans] -> logits [N, num_classes]
    // Pooled and normalised features [N, dims[3]]; each stage's NHWC output appended to
    // stage_outputs when given.
    Tensor forward_features(const Tensor& x, std::vector<Tensor>* stage_outputs = nullptr);

    const ConvNeXtOptions& options() const { return options_; }
    // Conv + linear multiply-accumulates per image at a square input size (see model_cost).
    int64_t macs(int64_t image_size) const;

    std::shared_ptr<nn::ModuleList> downsample_layers;  // 4 Sequentials: stem, then 3 downsamples
    std::shared_ptr<nn::ModuleList> stages;             // 4 Sequentials of blocks
    std::shared_ptr<nn::LayerNorm> norm;
    std::shared_ptr<nn::Linear> head;

private:
    ConvNeXtOptions options_;
    std::vector<std::shared_ptr<nn::Sequential>> downsample_, stage_;  // typed views of the lists
};

// ---- figures from the tree: for `convnext info` and planning ----

// The model of these options built in meta mode: every parameter has its shape, none has storage.
std::shared_ptr<ConvNeXt> build_meta(const ConvNeXtOptions& options);

// Every parameter the model registers, name and shape, in state_dict order (from a meta build).
std::vector<std::pair<std::string, Shape>> parameter_shapes(const ConvNeXtOptions& options);
int64_t count_parameters(const ConvNeXtOptions& options);

struct StageInfo {
    int64_t depth = 0, dim = 0;
    int64_t height = 0, width = 0;  // NHWC output of the stage for one image
    int64_t params = 0;             // downsample layer + blocks of this stage
    int64_t macs = 0;               // of those layers
};
struct ModelCost {
    std::vector<StageInfo> stages;  // 4 entries
    int64_t params = 0;             // whole model
    int64_t macs = 0;               // conv + linear multiply-accumulates, one image, whole model
    int64_t head_params = 0, head_macs = 0;  // everything after the last stage (final norm + head)
};
// Per-image multiply-accumulates of every convolution and linear layer at the given input size
// (LayerNorm, GELU, pooling and additions are not counted), counted by a shape-only forward of
// one image through the model itself (core/meta.h): the model's own shapes, so patchify layers
// drop trailing rows/columns like the convolution does. Stage i holds downsample layer i.
ModelCost model_cost(const ConvNeXt& model, int64_t image_height, int64_t image_width);
ModelCost model_cost(const ConvNeXtOptions& options, int64_t image_height, int64_t image_width);

}  // namespace cnx::models

// The names: create_model, model_names, model_options, register_model.
#include "models/registry.h"
