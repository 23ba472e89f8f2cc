#include "models/convnext.h"

#include <sstream>

#include "nn/init.h"
#include "ops/drop_path.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
#include "ops/reduce.h"

namespace cnx::models {
namespace {

constexpr double kLayerNormEps = 1e-6;

struct Variant {
    const char* name;
    std::vector<int64_t> depths, dims;
};

const std::vector<Variant>& variants() {
    static const std::vector<Variant> v = {
        {"convnext_atto", {2, 2, 6, 2}, {40, 80, 160, 320}},
        {"convnext_femto", {2, 2, 6, 2}, {48, 96, 192, 384}},
        {"convnext_pico", {2, 2, 6, 2}, {64, 128, 256, 512}},
        {"convnext_nano", {2, 2, 8, 2}, {80, 160, 320, 640}},
        {"convnext_tiny", {3, 3, 9, 3}, {96, 192, 384, 768}},
        {"convnext_small", {3, 3, 27, 3}, {96, 192, 384, 768}},
        {"convnext_base", {3, 3, 27, 3}, {128, 256, 512, 1024}},
        {"convnext_large", {3, 3, 27, 3}, {192, 384, 768, 1536}},
        {"convnext_xlarge", {3, 3, 27, 3}, {256, 512, 1024, 2048}},
    };
    return v;
}

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

Block::Block(int64_t dim, double dp, double ls, Generator* gen) : Module("Block") {
    dwconv = register_module("dwconv", std::make_shared<nn::Conv2d>(dim, dim, 7, 1, 3, (int)dim, true, gen));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(dim, kLayerNormEps));
    pwconv1 = register_module("pwconv1", std::make_shared<nn::Linear>(dim, 4 * dim, true, gen));
    act = register_module("act", std::make_shared<nn::GELU>());
    pwconv2 = register_module("pwconv2", std::make_shared<nn::Linear>(4 * dim, dim, true, gen));
    if (ls > 0) gamma = register_parameter("gamma", full({dim}, ls));
    if (dp > 0)
        drop_path = register_module("drop_path", std::make_shared<nn::DropPath>(dp));
    else
        drop_path = register_module("drop_path", std::make_shared<nn::Identity>());
}

Tensor Block::forward(const Tensor& x) {
    Tensor y = norm->forward(dwconv->forward(x));
    // The MLP, layer scale and residual as one fused op (the same function, to float rounding, in
    // less time and memory) unless drop path is live or GELU is the tanh form.
    auto* dp = dynamic_cast<nn::DropPath*>(drop_path.get());
    const bool dropping = dp && dp->is_training() && dp->p > 0;
    if (!dropping && !act->tanh_approximation)
        return convnext_mlp(y, pwconv1->weight, pwconv1->bias, pwconv2->weight, pwconv2->bias, gamma, x);
    y = pwconv2->forward(act->forward(pwconv1->forward(y)));
    if (gamma.defined()) y = channel_scale(y, gamma);
    return add(x, drop_path->forward(y));
}

ConvNeXt::ConvNeXt(const ConvNeXtOptions& o, Generator* gen) : Module("ConvNeXt"), options_(o) {
    validate(o);
    const auto& d = o.dims;
    using Modules = std::initializer_list<std::shared_ptr<nn::Module>>;
    downsample_layers = register_module("downsample_layers", std::make_shared<nn::ModuleList>());
    downsample_layers->push_back(std::make_shared<nn::Sequential>(
        Modules{std::make_shared<nn::Conv2d>(o.in_chans, d[0], 4, 4, 0, 1, true, gen),
                std::make_shared<nn::LayerNorm>(d[0], kLayerNormEps)}));
    for (int i = 1; i < 4; ++i)
        downsample_layers->push_back(std::make_shared<nn::Sequential>(
            Modules{std::make_shared<nn::LayerNorm>(d[i - 1], kLayerNormEps),
                    std::make_shared<nn::Conv2d>(d[i - 1], d[i], 2, 2, 0, 1, true, gen)}));

    int64_t total = 0;
    for (auto n : o.depths) total += n;
    std::vector<double> rates = linspace_f32(o.drop_path_rate, total);
    stages = register_module("stages", std::make_shared<nn::ModuleList>());
    int64_t cur = 0;
    for (int i = 0; i < 4; ++i) {
        auto stage = std::make_shared<nn::Sequential>();
        for (int64_t j = 0; j < o.depths[i]; ++j)
            stage->push_back(std::make_shared<Block>(d[i], rates[cur + j], o.layer_scale_init_value, gen));
        cur += o.depths[i];
        stages->push_back(stage);
    }
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(d[3], kLayerNormEps));
    head = register_module("head", std::make_shared<nn::Linear>(d[3], o.num_classes, true, gen));

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
    if (o.head_init_scale != 1.0)
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
        y = stage_[i]->forward(downsample_[i]->forward(y));
        if (stage_outputs) stage_outputs->push_back(y);
    }
    return norm->forward(global_avg_pool(y));
}

Tensor ConvNeXt::forward(const Tensor& x) { return head->forward(forward_features(x)); }

int64_t ConvNeXt::macs(int64_t image_size) const { return model_cost(options_, image_size, image_size).macs; }

std::vector<std::string> model_names() {
    std::vector<std::string> out;
    for (auto& v : variants()) out.push_back(v.name);
    return out;
}

ConvNeXtOptions model_options(const std::string& name, ConvNeXtOptions base) {
    for (auto& v : variants())
        if (name == v.name) {
            base.depths = v.depths;
            base.dims = v.dims;
            return base;
        }
    std::ostringstream os;
    for (auto& v : variants()) os << (&v == &variants().front() ? "" : ", ") << v.name;
    fail("unknown model '", name, "'; valid names: ", os.str());
}

std::shared_ptr<ConvNeXt> create_model(const std::string& name, const ConvNeXtOptions& options, Generator* gen) {
    return std::make_shared<ConvNeXt>(model_options(name, options), gen);
}

std::vector<std::pair<std::string, Shape>> parameter_shapes(const ConvNeXtOptions& o) {
    validate(o);
    const auto& d = o.dims;
    std::vector<std::pair<std::string, Shape>> out;
    auto add = [&](const std::string& n, Shape s) { out.emplace_back(n, std::move(s)); };
    add("downsample_layers.0.0.weight", {d[0], o.in_chans, 4, 4});
    add("downsample_layers.0.0.bias", {d[0]});
    add("downsample_layers.0.1.weight", {d[0]});
    add("downsample_layers.0.1.bias", {d[0]});
    for (int i = 1; i < 4; ++i) {
        std::string p = "downsample_layers." + std::to_string(i) + ".";
        add(p + "0.weight", {d[i - 1]});
        add(p + "0.bias", {d[i - 1]});
        add(p + "1.weight", {d[i], d[i - 1], 2, 2});
        add(p + "1.bias", {d[i]});
    }
    for (int i = 0; i < 4; ++i)
        for (int64_t j = 0; j < o.depths[i]; ++j) {
            std::string p = "stages." + std::to_string(i) + "." + std::to_string(j) + ".";
            int64_t c = d[i];
            if (o.layer_scale_init_value > 0) add(p + "gamma", {c});
            add(p + "dwconv.weight", {c, 1, 7, 7});
            add(p + "dwconv.bias", {c});
            add(p + "norm.weight", {c});
            add(p + "norm.bias", {c});
            add(p + "pwconv1.weight", {4 * c, c});
            add(p + "pwconv1.bias", {4 * c});
            add(p + "pwconv2.weight", {c, 4 * c});
            add(p + "pwconv2.bias", {c});
        }
    add("norm.weight", {d[3]});
    add("norm.bias", {d[3]});
    add("head.weight", {o.num_classes, d[3]});
    add("head.bias", {o.num_classes});
    return out;
}

int64_t count_parameters(const ConvNeXtOptions& o) {
    int64_t n = 0;
    for (auto& [name, s] : parameter_shapes(o)) n += shape_numel(s);
    return n;
}

ModelCost model_cost(const ConvNeXtOptions& o, int64_t image_height, int64_t image_width) {
    validate(o);
    CNX_CHECK(image_height >= 32 && image_width >= 32, "model_cost: image ", image_height, "x", image_width,
              " is smaller than 32x32");
    const auto& d = o.dims;
    ModelCost cost;
    int64_t h = image_height / 4, w = image_width / 4;
    for (int i = 0; i < 4; ++i) {
        StageInfo s;
        s.depth = o.depths[i];
        s.dim = d[i];
        if (i == 0) {
            s.params = d[0] * o.in_chans * 16 + d[0] + 2 * d[0];
            s.macs = h * w * d[0] * o.in_chans * 16;
        } else {
            h /= 2;
            w /= 2;
            s.params = 2 * d[i - 1] + d[i] * d[i - 1] * 4 + d[i];
            s.macs = h * w * d[i] * d[i - 1] * 4;
        }
        int64_t c = d[i];
        int64_t block_params = 49 * c + c + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c) +
                               (o.layer_scale_init_value > 0 ? c : 0);
        int64_t block_macs = h * w * (49 * c + 8 * c * c);
        s.params += s.depth * block_params;
        s.macs += s.depth * block_macs;
        s.height = h;
        s.width = w;
        cost.params += s.params;
        cost.macs += s.macs;
        cost.stages.push_back(s);
    }
    cost.head_params = 2 * d[3] + d[3] * o.num_classes + o.num_classes;
    cost.head_macs = d[3] * o.num_classes;
    cost.params += cost.head_params;
    cost.macs += cost.head_macs;
    return cost;
}

}  // namespace cnx::models
