#pragma once
// Module: the base of every layer and model, shaped like libtorch's C++ frontend.
//
//   struct MyNet : nn::Module {
//       std::shared_ptr<nn::Linear> fc;
//       Tensor scale;
//       MyNet() {
//           fc = register_module("fc", std::make_shared<nn::Linear>(8, 4));
//           scale = register_parameter("scale", ones({4}));
//       }
//       Tensor forward(const Tensor& x) override { return fc->forward(x) * scale; }
//   };
//
// Names and order follow PyTorch: a module's own parameters (registration order), then each
// child's, depth first, joined with dots ("stages.0.1.dwconv.weight"). state_dict() interleaves
// each module's parameters and buffers the same way PyTorch's does, so files written by either
// side list keys in the same order.
//
// A registered Tensor is a handle sharing its TensorImpl with the layer's member, so in-place
// changes (load_state_dict, to(DType), optimiser steps) are seen through both.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace cnx::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct ShapeMismatch {
    std::string name;
    Shape expected;  // the module's
    Shape got;       // the state dict's
};

// What load_state_dict found. With strict=false the mismatched entries are skipped (left at
// their current values), which is how a pretrained model is loaded under a new head.
struct LoadReport {
    std::vector<std::string> missing;     // in the module, not in the state dict
    std::vector<std::string> unexpected;  // in the state dict, not in the module
    std::vector<ShapeMismatch> mismatched;
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string str() const;  // one line per problem, for messages and logs
};

class Module {
public:
    explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
    virtual ~Module();
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // Single-tensor forward, so containers (Sequential) can chain any layer. Modules with other
    // signatures define their own and leave this one throwing.
    virtual Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }

    const std::string& type_name() const { return type_name_; }

    // Registration. The tensor becomes a leaf that requires grad (unless requires_grad is false)
    // and is named after its path; re-registering a name replaces the entry.
    Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
    Tensor register_buffer(const std::string& name, Tensor t);
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        add_child(name, m);
        return m;
    }

    NamedTensors named_parameters(bool recurse = true) const;
    std::vector<Tensor> parameters(bool recurse = true) const;
    NamedTensors named_buffers(bool recurse = true) const;
    std::vector<Tensor> buffers(bool recurse = true) const;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
    std::vector<std::shared_ptr<Module>> children() const;
    // This module (name "") and every descendant, depth first. Non-owning pointers, valid while
    // this module lives; usable inside a constructor (unlike shared_from_this).
    std::vector<std::pair<std::string, Module*>> named_modules();
    // Calls fn on every descendant, then on this module (torch.nn.Module.apply's order).
    void apply(const std::function<void(Module&)>& fn);
    int64_t num_parameters(bool trainable_only = false) const;

    // Looks a parameter or buffer up by dotted name; undefined Tensor if absent.
    Tensor find(const std::string& dotted_name) const;

    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }

    void zero_grad();  // drops every parameter's .grad (set_to_none, PyTorch's default)

    // Parameters and buffers in PyTorch's state_dict order. The tensors are the live ones
    // (no copy): clone them to keep a snapshot.
    NamedTensors state_dict() const;
    // Copies values in (converting dtype). strict: throws a cnx::Error listing every missing,
    // unexpected and mismatched key; otherwise loads what matches and reports the rest.
    LoadReport load_state_dict(const NamedTensors& state, bool strict = true);
    LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

    // Converts every parameter and buffer in place (e.g. to float64 for gradcheck); grads are dropped.
    Module& to(DType dtype);

protected:
    void add_child(const std::string& name, std::shared_ptr<Module> m);

private:
    void collect(const std::string& prefix, bool params, bool buffers, bool recurse, NamedTensors& out) const;
    void collect_state(const std::string& prefix, NamedTensors& out) const;
    // Tensor names are full paths from the root: registering a module (or a tensor into a module
    // that already sits in a tree, as when a ModuleList grows) names the tensors below it from
    // the chain of parents.
    std::string path_prefix() const;
    void rename_tensors(const std::string& prefix);

    std::string type_name_;
    Module* parent_ = nullptr;  // cleared when the parent dies; only used for naming
    std::string local_name_;
    bool training_ = true;
    NamedTensors params_;
    NamedTensors buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace cnx::nn
