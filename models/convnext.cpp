#include "models/convnext.h"

#include <typeinfo>

#include "core/autograd.h"
#include "core/meta.h"
#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
#include "ops/reduce.h"
#include "optim/param_groups.h"

namespace cnx::models {
namespace {

constexpr double kLayerNormEps = 1e-6;

void validate(const ConvNeXtOptions& o) {
    CNX_CHECK(o.depths.size() == 4 && o.dims.size() == 4, "ConvNeXt: depths and dims need 4 entries, got ",
              shape_str(o.depths), " and ", shape_str(o.dims));
    for (int i = 0; i < 4; ++i)
        CNX_CHECK(o.depths[i] >= 0 && o.dims[i] > 0, "ConvNeXt: invalid depths ", shape_str(o.depths), " or dims ",
                  shape_str(o.dims));
    CNX_CHECK(o.num_classes > 0, "ConvNeXt: num_classes must be positive, got ", o.num_classes);
    CNX_CHECK(o.in_chans > 0, "ConvNeXt: in_chans must be positive, got ", o.in_chans);
    CNX_CHECK(o.drop_path_rate >= 0 && o.drop_path_rate < 1, "ConvNeXt: drop_path_rate must be in [0, 1), got ",
              o.drop_path_rate);
}

// torch.linspace(0, rate, n) in float32 (the official model takes .item() of those), so the
// per-block rates match PyTorch's to the bit.
std::vector<double> linspace_f32(double end, int64_t n) {
    std::vector<double> out(n);
    if (n == 1) out[0] = 0.0;
    if (n <= 1) return out;
    float e = (float)end, step = e / (float)(n - 1);
    int64_t half = n / 2;
    for (int64_t i = 0; i < n; ++i) {
        float v = i < half ? step * (float)i : e - step * (float)(n - 1 - i);
        out[i] = (double)v;
    }
    return out;
}

}  // namespace

// The names timm (timm.models.convnext) and torchvision (torchvision.models.convnext) give each
// part, relative to the block: timm's ConvNeXtBlock has conv_dw, norm, mlp.fc1/act/fc2, gamma;
// torchvision's CNBlock has block = Sequential(dwconv, Permute, LayerNorm, Linear, GELU, Linear,
// Permute) and layer_scale stored [C, 1, 1].
Block::Block(int64_t dim, double dp, double ls, Generator* gen) : Module("Block") {
    dwconv = register_module("dwconv", std::make_shared<nn::Conv2d>(dim, dim, 7, 1, 3, (int)dim, true, gen),
                             {{"timm", "conv_dw"}, {"torchvision", "block.0"}});
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(dim, kLayerNormEps), {{"torchvision", "block.2"}});
    pwconv1 = register_module("pwconv1", std::make_shared<nn::Linear>(dim, 4 * dim, true, gen),
                              {{"timm", "mlp.fc1"}, {"torchvision", "block.3"}});
    act = register_module("act", std::make_shared<nn::GELU>(), {{"timm", "mlp.act"}, {"torchvision", "block.4"}});
    pwconv2 = register_module("pwconv2", std::make_shared<nn::Linear>(4 * dim, dim, true, gen),
                              {{"timm", "mlp.fc2"}, {"torchvision", "block.5"}});
    if (ls > 0)
        gamma = register_parameter("gamma", full({dim}, ls),
                                   nn::ParamOptions().alias("torchvision", "layer_scale", {dim, 1, 1}));
    std::shared_ptr<nn::Module> dp_module;
    if (dp > 0)
        dp_module = std::make_shared<nn::DropPath>(dp);
    else
        dp_module = std::make_shared<nn::Identity>();
    drop_path = register_module("drop_path", dp_module, {{"torchvision", "stochastic_depth"}});
}

bool Block::mlp_fusable() const {
    auto exactly = [](const nn::Module& m, const std::type_info& t) { return typeid(m) == t && !m.has_forward_hooks(); };
    if (!exactly(*pwconv1, typeid(nn::Linear)) || !exactly(*pwconv2, typeid(nn::Linear)) ||
        !exactly(*act, typeid(nn::GELU)) || act->tanh_approximation)
        return false;
    if (exactly(*drop_path, typeid(nn::Identity))) return true;
    if (!exactly(*drop_path, typeid(nn::DropPath))) return false;
    auto& dp = static_cast<const nn::DropPath&>(*drop_path);
    return !dp.is_training() || dp.p == 0;
}

Tensor Block::forward(const Tensor& x) {
    Tensor y = (*norm)((*dwconv)(x));
    // The MLP, layer scale and residual as one fused op: the same function, to float rounding,
    // in less time and memory.
    if (mlp_fusable())
        return convnext_mlp(y, pwconv1->weight, pwconv1->bias, pwconv2->weight, pwconv2->bias, gamma, x);
    y = (*pwconv2)((*act)((*pwconv1)(y)));
    if (gamma.defined()) y = channel_scale(y, gamma);
    return add(x, (*drop_path)(y));
}

std::shared_ptr<nn::Module> make_block(const BlockArgs& a) {
    return std::make_shared<Block>(a.dim, a.drop_path, a.options.layer_scale_init_value, a.gen);
}

// Other styles' names: timm's ConvNeXt has stem, stages.i.downsample, stages.i.blocks, head.norm,
// head.fc; torchvision's has features (stem, stage 0, downsample 1, stage 1, ... interleaved)
// and classifier = Sequential(LayerNorm2d, Flatten, Linear).
ConvNeXt::ConvNeXt(const ConvNeXtOptions& o, Generator* gen) : Module("ConvNeXt"), options_(o) {
    validate(o);
    const auto& d = o.dims;
    const BlockFactory block = o.block ? o.block : BlockFactory(make_block);
    using Modules = std::initializer_list<std::shared_ptr<nn::Module>>;
    // Layer ids for layer-wise lr decay: norm and head take the root's, the rest their own.
    set_layer_id(optim::convnext_head_layer_id());
    downsample_layers = register_module("downsample_layers", std::make_shared<nn::ModuleList>(),
                                        {{"timm", ""}, {"torchvision", ""}});
    stages = register_module("stages", std::make_shared<nn::ModuleList>(), {{"torchvision", ""}});
    int64_t total = 0;
    for (auto n : o.depths) total += n;
    std::vector<double> rates = linspace_f32(o.drop_path_rate, total);
    int64_t cur = 0;
    for (int i = 0; i < 4; ++i) {
        const std::string s = std::to_string(i);
        std::shared_ptr<nn::Sequential> down;
        if (i == 0)
            down = std::make_shared<nn::Sequential>(
                Modules{std::make_shared<nn::Conv2d>(o.in_chans, d[0], 4, 4, 0, 1, true, gen),
                        std::make_shared<nn::LayerNorm>(d[0], kLayerNormEps)});
        else
            down = std::make_shared<nn::Sequential>(
                Modules{std::make_shared<nn::LayerNorm>(d[i - 1], kLayerNormEps),
                        std::make_shared<nn::Conv2d>(d[i - 1], d[i], 2, 2, 0, 1, true, gen)});
        down->set_layer_id(optim::convnext_downsample_layer_id(i));
        downsample_layers->push_back(down, {{"timm", i == 0 ? "stem" : "stages." + s + ".downsample"},
                                            {"torchvision", "features." + std::to_string(2 * i)}});

        auto stage = std::make_shared<nn::Sequential>();
        for (int64_t j = 0; j < o.depths[i]; ++j) {
            std::shared_ptr<nn::Module> b = block(BlockArgs{d[i], rates[cur + j], o, gen});
            CNX_CHECK(b != nullptr, "ConvNeXt: the block factory returned no module for stage ", i, " block ", j);
            b->set_layer_id(optim::convnext_block_layer_id(i, (int)j));
            stage->push_back(b);
        }
        cur += o.depths[i];
        stages->push_back(stage, {{"timm", s + ".blocks"}, {"torchvision", "features." + std::to_string(2 * i + 1)}});
    }
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(d[3], kLayerNormEps),
                           {{"timm", "head.norm"}, {"torchvision", "classifier.0"}});
    head = register_module("head", std::make_shared<nn::Linear>(d[3], o.num_classes, true, gen),
                           {{"timm", "head.fc"}, {"torchvision", "classifier.2"}});

    for (int i = 0; i < 4; ++i) {
        downsample_.push_back(downsample_layers->get<nn::Sequential>(i));
        stage_.push_back(stages->get<nn::Sequential>(i));
    }

    // The official _init_weights, in module order: conv and linear weights trunc_normal(0.02), biases 0.
    for (auto& [name, m] : named_modules()) {
        Tensor w, b;
        if (auto c = dynamic_cast<nn::Conv2d*>(m)) {
            w = c->weight;
            b = c->bias;
        } else if (auto l = dynamic_cast<nn::Linear*>(m)) {
            w = l->weight;
            b = l->bias;
        } else {
            continue;
        }
        nn::init::trunc_normal_(w, 0.02, -2.0, 2.0, gen);
        if (b.defined()) nn::init::zeros_(b);
    }
    if (o.head_init_scale != 1.0 && !head->weight.is_meta())
        for (Tensor t : {head->weight, head->bias}) {
            float* p = t.data<float>();
            for (int64_t i = 0; i < t.numel(); ++i) p[i] = (float)(p[i] * o.head_init_scale);
        }
}

Tensor ConvNeXt::forward_features(const Tensor& x, std::vector<Tensor>* stage_outputs) {
    CNX_CHECK(x.dim() == 4 && x.size(3) == options_.in_chans, "ConvNeXt: input ", x.str(), " must be NHWC [N, H, W, ",
              options_.in_chans, "]");
    CNX_CHECK(x.size(1) >= 32 && x.size(2) >= 32, "ConvNeXt: input ", x.str(),
              " is smaller than 32x32 (the model downsamples by 32)");
    Tensor y = x;
    for (int i = 0; i < 4; ++i) {
        y = (*stage_[i])((*downsample_[i])(y));
        if (stage_outputs) stage_outputs->push_back(y);
    }
    return (*norm)(global_avg_pool(y));
}

Tensor ConvNeXt::forward(const Tensor& x) { return (*head)(forward_features(x)); }

int64_t ConvNeXt::macs(int64_t image_size) const { return model_cost(*this, image_size, image_size).macs; }

std::shared_ptr<ConvNeXt> build_meta(const ConvNeXtOptions& options) {
    MetaGuard meta;
    return std::make_shared<ConvNeXt>(options);
}

std::vector<std::pair<std::string, Shape>> parameter_shapes(const ConvNeXtOptions& options) {
    std::vector<std::pair<std::string, Shape>> out;
    for (auto& [name, t] : build_meta(options)->named_parameters()) out.emplace_back(name, t.shape());
    return out;
}

int64_t count_parameters(const ConvNeXtOptions& options) { return build_meta(options)->num_parameters(); }

namespace {
// Puts things back however the shape-only forward ends: the hooks it added, the training mode.
struct CostForwardScope {
    ConvNeXt& model;
    bool was_training;
    std::vector<std::pair<nn::Module*, int>> hooks;
    explicit CostForwardScope(ConvNeXt& m) : model(m), was_training(m.is_training()) { model.eval(); }
    ~CostForwardScope() {
        for (auto& [m, h] : hooks) m->remove_forward_hook(h);
        model.train(was_training);
    }
};
}  // namespace

ModelCost model_cost(const ConvNeXt& model_in, int64_t image_height, int64_t image_width) {
    CNX_CHECK(image_height >= 32 && image_width >= 32, "model_cost: image ", image_height, "x", image_width,
              " is smaller than 32x32");
    // A shape-only forward reads no parameter, and the scope restores the hooks and the mode
    // (eval, so drop path draws no random numbers), so the model is as it was.
    ConvNeXt& model = const_cast<ConvNeXt&>(model_in);
    ModelCost cost;
    MetaGuard meta;
    NoGradGuard no_grad;
    MacCounter macs;
    CostForwardScope scope(model);
    int64_t counted = 0;
    for (size_t i = 0; i < model.stages->size(); ++i) {
        nn::Module* stage = (*model.stages)[i].get();
        const int64_t params = (*model.downsample_layers)[i]->num_parameters() + stage->num_parameters();
        const int64_t depth = (int64_t)model.stages->get<nn::Sequential>(i)->size();
        int h = stage->register_forward_hook([&, params, depth](nn::Module&, const Tensor&, const Tensor& out) {
            StageInfo s;
            s.depth = depth;
            s.dim = out.size(3);
            s.height = out.size(1);
            s.width = out.size(2);
            s.params = params;
            s.macs = macs.total() - counted;
            counted = macs.total();
            cost.stages.push_back(s);
        });
        scope.hooks.emplace_back(stage, h);
    }
    model.forward(Tensor::empty({1, image_height, image_width, model.options().in_chans}));
    CNX_CHECK(cost.stages.size() == model.stages->size(), "model_cost: the forward passed ", cost.stages.size(),
              " of ", model.stages->size(), " stages");
    cost.params = model.num_parameters();
    cost.macs = macs.total();
    cost.head_params = cost.params;
    for (auto& s : cost.stages) cost.head_params -= s.params;
    cost.head_macs = cost.macs - counted;
    return cost;
}

ModelCost model_cost(const ConvNeXtOptions& options, int64_t image_height, int64_t image_width) {
    return model_cost(*build_meta(options), image_height, image_width);
}

}  // namespace cnx::models

CNX_MODEL_FAMILY(convnext) {
    registry.add_sizes("convnext_", {"atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge"},
                       cnx::models::make_block);
}
