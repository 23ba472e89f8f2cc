#include "nn/layers.h"

#include "nn/init.h"
#include "ops/activation.h"
#include "ops/conv2d.h"
#include "ops/drop_path.h"
#include "ops/layer_norm.h"
#include "ops/linear.h"

namespace cnx::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator* gen)
    : Module("Linear"), in_features(in), out_features(out) {
    CNX_CHECK(in > 0 && out > 0, "Linear: features must be positive, got in ", in, ", out ", out);
    Tensor w = Tensor::empty({out, in});
    init::default_weight_init_(w, gen);
    weight = register_parameter("weight", w);
    if (with_bias) {
        Tensor b = Tensor::empty({out});
        init::default_bias_init_(b, in, gen);
        bias = register_parameter("bias", b);
    }
}

Tensor Linear::forward(const Tensor& x) {
    CNX_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "Linear(", in_features, " -> ", out_features,
              "): input ", x.str(), " must end in ", in_features);
    return linear(x, weight, bias);
}

Conv2d::Conv2d(int64_t in, int64_t out, int k, int s, int p, int g, bool with_bias, Generator* gen)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(k), stride(s), padding(p), groups(g) {
    CNX_CHECK(in > 0 && out > 0 && k > 0 && s > 0 && p >= 0 && g > 0, "Conv2d: invalid configuration in ", in,
              " out ", out, " kernel ", k, " stride ", s, " padding ", p, " groups ", g);
    CNX_CHECK(in % g == 0 && out % g == 0, "Conv2d: channels in ", in, " and out ", out,
              " must be divisible by groups ", g);
    Tensor w = Tensor::empty({out, in / g, k, k});
    init::default_weight_init_(w, gen);
    weight = register_parameter("weight", w);
    if (with_bias) {
        Tensor b = Tensor::empty({out});
        init::default_bias_init_(b, init::fan_in(w), gen);
        bias = register_parameter("bias", b);
    }
}

Tensor Conv2d::forward(const Tensor& x) {
    CNX_CHECK(x.dim() == 4 && x.size(3) == in_channels, "Conv2d(", in_channels, " -> ", out_channels,
              "): input ", x.str(), " must be NHWC with ", in_channels, " channels");
    return conv2d(x, weight, bias, stride, padding, groups);
}

LayerNorm::LayerNorm(int64_t c, double e, bool affine) : Module("LayerNorm"), normalized_shape(c), eps(e) {
    CNX_CHECK(c > 0, "LayerNorm: normalized_shape must be positive, got ", c);
    if (affine) {
        weight = register_parameter("weight", ones({c}));
        bias = register_parameter("bias", zeros({c}));
    }
}

Tensor LayerNorm::forward(const Tensor& x) {
    CNX_CHECK(x.dim() >= 1 && x.size(-1) == normalized_shape, "LayerNorm(", normalized_shape, "): input ",
              x.str(), " must end in ", normalized_shape);
    return layer_norm(x, weight, bias, eps);
}

GELU::GELU(const std::string& approximate) : Module("GELU") {
    CNX_CHECK(approximate == "none" || approximate == "tanh", "GELU: approximate must be 'none' or 'tanh', got '",
              approximate, "'");
    tanh_approximation = approximate == "tanh";
}

Tensor GELU::forward(const Tensor& x) { return gelu(x, tanh_approximation); }

DropPath::DropPath(double prob, Generator* g) : Module("DropPath"), p(prob), gen(g) {
    CNX_CHECK(prob >= 0 && prob < 1, "DropPath: probability must be in [0, 1), got ", prob);
}

Tensor DropPath::forward(const Tensor& x) { return drop_path(x, p, is_training(), gen); }

void ModuleContainer::push_back(std::shared_ptr<Module> m, const Aliases& aliases) {
    register_module(std::to_string(items_.size()), m, aliases);
    items_.push_back(std::move(m));
}

const std::shared_ptr<Module>& ModuleContainer::operator[](size_t i) const {
    CNX_CHECK(i < items_.size(), type_name(), ": index ", i, " out of range (size ", items_.size(), ")");
    return items_[i];
}

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) : ModuleContainer("Sequential") {
    for (auto& m : modules) push_back(m);
}

Tensor Sequential::forward(const Tensor& x) {
    Tensor y = x;
    for (auto& m : items_) y = (*m)(y);
    return y;
}

ModuleList::ModuleList(std::initializer_list<std::shared_ptr<Module>> modules) : ModuleContainer("ModuleList") {
    for (auto& m : modules) push_back(m);
}

}  // namespace cnx::nn
