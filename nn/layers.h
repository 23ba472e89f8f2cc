#pragma once
// Layers on NHWC activations with PyTorch's parameter names, shapes and default initialisation.
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/module.h"

namespace cnx::nn {

// y = x W^T + b over the last dimension: weight [out, in], bias [out]. On NHWC activations this
// is a 1x1 convolution.
class Linear : public Module {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;
    int64_t in_features, out_features;
    Tensor weight, bias;  // bias undefined when built without one
};

// NHWC input, weight in PyTorch's layout [out, in/groups, k, k].
class Conv2d : public Module {
public:
    Conv2d(int64_t in_channels, int64_t out_channels, int kernel_size, int stride = 1, int padding = 0,
           int groups = 1, bool bias = true, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;
    int64_t in_channels, out_channels;
    int kernel_size, stride, padding, groups;
    Tensor weight, bias;
};

// Normalises the last dimension (on NHWC this is also the "channels_first" LayerNorm of ConvNeXt).
class LayerNorm : public Module {
public:
    explicit LayerNorm(int64_t normalized_shape, double eps = 1e-5, bool elementwise_affine = true);
    Tensor forward(const Tensor& x) override;
    int64_t normalized_shape;
    double eps;
    Tensor weight, bias;  // undefined without elementwise_affine
};

// approximate: "none" (exact erf) or "tanh", as torch.nn.GELU.
class GELU : public Module {
public:
    explicit GELU(const std::string& approximate = "none");
    Tensor forward(const Tensor& x) override;
    bool tanh_approximation;
};

// Stochastic depth per sample; identity in eval mode or when p == 0. Draws from the default
// generator unless given one (which must outlive the module).
class DropPath : public Module {
public:
    explicit DropPath(double p = 0.0, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;
    double p;
    Generator* gen;
};

class Identity : public Module {
public:
    Identity() : Module("Identity") {}
    Tensor forward(const Tensor& x) override { return x; }
};

// Submodules named "0", "1", ... in insertion order; the shared part of Sequential and ModuleList.
class ModuleContainer : public Module {
public:
    void push_back(std::shared_ptr<Module> m, const Aliases& aliases = {});
    size_t size() const { return items_.size(); }
    const std::shared_ptr<Module>& operator[](size_t i) const;
    // Typed access: seq.get<Conv2d>(0). Throws when item i is of another type.
    template <class M> std::shared_ptr<M> get(size_t i) const {
        auto p = std::dynamic_pointer_cast<M>((*this)[i]);
        CNX_CHECK(p != nullptr, type_name(), ": item ", i, " is a ", (*this)[i]->type_name(),
                  ", not the requested type");
        return p;
    }
    auto begin() const { return items_.begin(); }
    auto end() const { return items_.end(); }

protected:
    explicit ModuleContainer(const char* type_name) : Module(type_name) {}
    std::vector<std::shared_ptr<Module>> items_;
};

// forward chains the children in order.
class Sequential : public ModuleContainer {
public:
    Sequential() : ModuleContainer("Sequential") {}
    Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
    Tensor forward(const Tensor& x) override;
};

// Holds submodules; no forward of its own (the owner indexes it).
class ModuleList : public ModuleContainer {
public:
    ModuleList() : ModuleContainer("ModuleList") {}
    ModuleList(std::initializer_list<std::shared_ptr<Module>> modules);
};

}  // namespace cnx::nn
