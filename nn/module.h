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
//
// The tree is the one description of a model: besides names and shapes, each registration may
// declare the name the entry has in other libraries' naming styles (Alias: timm's "conv_dw" for
// "dwconv"), a parameter may be excluded from weight decay (ParamOptions::no_weight_decay), and a
// module may carry a layer id for layer-wise learning-rate decay (set_layer_id). io/key_names
// derives name maps from the aliases, optim/param_groups reads the flags and ids.
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace cnx::nn {

using cnx::NamedTensors;  // declared once, in core/tensor.h

// The name a parameter, buffer or submodule has in another naming style ("timm", "torchvision"),
// relative to its parent's name in that style. It may hold dots ("mlp.fc1": the style nests it
// deeper) or be empty (a submodule that is transparent in that style: its children's aliases
// continue the parent's path, which is how a flat list maps onto another library's tree). A
// parameter's alias may name the shape the style stores (timm keeps GRN's [1,1,1,C] as [C]).
struct Alias {
    Alias(std::string style_, std::string name_, Shape shape_ = {})
        : style(std::move(style_)), name(std::move(name_)), shape(std::move(shape_)) {}
    std::string style;
    std::string name;
    Shape shape;  // parameters and buffers only; empty: the tensor's own shape
};
using Aliases = std::vector<Alias>;

// How a parameter is registered: register_parameter("gamma", t, ParamOptions().no_weight_decay()).
// Implicit from a bool (requires_grad), so register_parameter(name, t, false) reads as before.
class ParamOptions {
public:
    ParamOptions(bool requires_grad = true) : requires_grad_(requires_grad) {}  // NOLINT: implicit
    ParamOptions& requires_grad(bool on) { requires_grad_ = on; return *this; }
    // Never weight-decayed, whatever its shape or name (parameter groups otherwise decay every
    // parameter of 2+ dimensions whose name does not end in ".bias").
    ParamOptions& no_weight_decay(bool on = true) { no_weight_decay_ = on; return *this; }
    ParamOptions& alias(std::string style, std::string name, Shape shape = {}) {
        aliases_.emplace_back(std::move(style), std::move(name), std::move(shape));
        return *this;
    }
    bool requires_grad() const { return requires_grad_; }
    bool no_weight_decay() const { return no_weight_decay_; }
    const Aliases& aliases() const { return aliases_; }

private:
    bool requires_grad_ = true;
    bool no_weight_decay_ = false;
    Aliases aliases_;
};

// A state_dict entry under its own name and under a naming style's (Module::state_dict_names).
struct StateName {
    std::string name;    // the module's own ("stages.0.0.dwconv.weight")
    std::string styled;  // the style's ("stages.0.blocks.0.conv_dw.weight")
    Shape shape;         // the module's
    Shape styled_shape;  // what the style stores
};

// Shapes that differ only by dimensions of size 1 ([C] and [C,1,1], [4C,C] and [4C,C,1,1]) hold
// the same values in the same order; other libraries store some parameters that way, and
// load_state_dict takes them.
bool same_up_to_unit_dims(const Shape& a, const Shape& b);

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
    // forward, then the forward hooks (as PyTorch's __call__: calling forward directly skips them).
    Tensor operator()(const Tensor& x);

    // Called after each operator() with the module, its input and its output. Returns a handle
    // for remove_forward_hook.
    using ForwardHook = std::function<void(Module& module, const Tensor& input, const Tensor& output)>;
    int register_forward_hook(ForwardHook hook);
    void remove_forward_hook(int handle);
    bool has_forward_hooks() const { return !forward_hooks_.empty(); }

    const std::string& type_name() const { return type_name_; }

    // Registration. The tensor becomes a leaf that requires grad (unless options say otherwise)
    // and is named after its path; re-registering a name replaces the entry. Aliases belong to
    // the name: a replacement keeps those declared before (new ones replace them per style).
    Tensor register_parameter(const std::string& name, Tensor t, const ParamOptions& options = {});
    Tensor register_buffer(const std::string& name, Tensor t, const Aliases& aliases = {});
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m, const Aliases& aliases = {}) {
        add_child(name, m);
        for (auto& a : aliases) add_alias(name, a);
        return m;
    }

    // Declares the name a parameter, buffer or submodule of this module has in a naming style
    // (replacing an earlier alias for the same style).
    void add_alias(const std::string& local_name, const Alias& alias);
    // Every state_dict entry with its name and shape in `style`; a style no alias mentions gives
    // the module's own names.
    std::vector<StateName> state_dict_names(const std::string& style) const;
    // The styles the aliases of this module and its descendants mention, sorted.
    std::vector<std::string> naming_styles() const;

    // Layer id for layer-wise lr decay of this module's parameters and of its descendants' that
    // have no id of their own. The id is also stamped on each parameter (Tensor's ParamAttributes),
    // so a plain named_parameters() list carries it to optim::get_params_groups.
    void set_layer_id(int id);
    int layer_id() const;  // its own, else the nearest ancestor's; -1 when none

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
    // Copies values in (converting dtype). A value whose shape differs from the module's only by
    // dimensions of size 1 ([C,1,1] for [C]) loads as if reshaped. strict: throws a cnx::Error
    // listing every missing, unexpected and mismatched key; otherwise loads what matches and
    // reports the rest.
    LoadReport load_state_dict(const NamedTensors& state, bool strict = true);
    LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
    // A braced list, load_state_dict({{"weight", w}}, false), as in the NamedTensors form (a
    // braced list would otherwise fit both forms above and not compile).
    LoadReport load_state_dict(std::initializer_list<std::pair<std::string, Tensor>> state, bool strict = true) {
        return load_state_dict(NamedTensors(state), strict);
    }

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
    void stamp_layer_ids(int inherited);
    void collect_names(const std::string& style, const std::string& prefix, const std::string& styled_prefix,
                       std::vector<StateName>& out) const;
    const Alias* find_alias(const std::string& local_name, const std::string& style) const;

    std::string type_name_;
    Module* parent_ = nullptr;  // cleared when the parent dies; only used for names and layer ids
    std::string local_name_;
    bool training_ = true;
    NamedTensors params_;
    NamedTensors buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    std::vector<std::pair<std::string, Alias>> aliases_;  // (local name, alias)
    int layer_id_ = -1;
    std::vector<std::pair<int, ForwardHook>> forward_hooks_;
    int next_hook_ = 0;
};

}  // namespace cnx::nn
