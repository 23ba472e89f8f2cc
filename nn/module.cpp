#include "nn/module.h"

#include <set>
#include <sstream>

#include "core/autograd.h"

namespace cnx::nn {
namespace {

void check_name(const std::string& name, const char* what, const std::string& type) {
    CNX_CHECK(!name.empty(), type, ": ", what, " name is empty");
    CNX_CHECK(name.find('.') == std::string::npos, type, ": ", what, " name '", name, "' contains a dot");
}

template <class V, class K>
auto find_entry(V& entries, const K& name) -> decltype(entries.begin()) {
    for (auto it = entries.begin(); it != entries.end(); ++it)
        if (it->first == name) return it;
    return entries.end();
}

}  // namespace

bool same_up_to_unit_dims(const Shape& a, const Shape& b) {
    if (a == b) return true;
    Shape sa, sb;
    for (auto d : a)
        if (d != 1) sa.push_back(d);
    for (auto d : b)
        if (d != 1) sb.push_back(d);
    return sa == sb;
}

std::string LoadReport::str() const {
    std::ostringstream os;
    for (auto& k : missing) os << "\n  missing key: " << k;
    for (auto& k : unexpected) os << "\n  unexpected key: " << k;
    for (auto& m : mismatched)
        os << "\n  shape mismatch for " << m.name << ": module has " << shape_str(m.expected) << ", state dict has "
           << shape_str(m.got);
    return os.str();
}

Module::~Module() {
    for (auto& [n, c] : children_)
        if (c->parent_ == this) c->parent_ = nullptr;
}

std::string Module::path_prefix() const {
    return parent_ ? parent_->path_prefix() + local_name_ + "." : std::string();
}

Tensor Module::forward(const Tensor&) { fail(type_name_, ": this module has no single-tensor forward"); }

Tensor Module::operator()(const Tensor& x) {
    Tensor y = forward(x);
    if (!forward_hooks_.empty()) {
        auto hooks = forward_hooks_;  // a hook may remove itself
        for (auto& [handle, hook] : hooks) hook(*this, x, y);
    }
    return y;
}

int Module::register_forward_hook(ForwardHook hook) {
    CNX_CHECK(hook != nullptr, type_name_, ": forward hook is empty");
    forward_hooks_.emplace_back(next_hook_, std::move(hook));
    return next_hook_++;
}

void Module::remove_forward_hook(int handle) {
    auto it = find_entry(forward_hooks_, handle);
    CNX_CHECK(it != forward_hooks_.end(), type_name_, ": no forward hook with handle ", handle);
    forward_hooks_.erase(it);
}

Tensor Module::register_parameter(const std::string& name, Tensor t, const ParamOptions& options) {
    check_name(name, "parameter", type_name_);
    CNX_CHECK(t.defined(), type_name_, ": parameter '", name, "' is undefined");
    CNX_CHECK(find_entry(children_, name) == children_.end(), type_name_, ": '", name, "' is already a submodule");
    // A parameter is a leaf of its own, never a view into an op's history.
    if (!t.is_leaf()) t = t.detach();
    t.requires_grad_(options.requires_grad());
    t.set_name(path_prefix() + name);
    t.impl()->param.no_weight_decay = options.no_weight_decay();
    t.impl()->param.layer_id = layer_id();
    auto it = find_entry(params_, name);
    if (it != params_.end())
        it->second = t;
    else
        params_.emplace_back(name, t);
    for (auto& a : options.aliases()) add_alias(name, a);
    return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, const Aliases& aliases) {
    check_name(name, "buffer", type_name_);
    CNX_CHECK(t.defined(), type_name_, ": buffer '", name, "' is undefined");
    CNX_CHECK(find_entry(children_, name) == children_.end(), type_name_, ": '", name, "' is already a submodule");
    t.set_name(path_prefix() + name);
    auto it = find_entry(buffers_, name);
    if (it != buffers_.end())
        it->second = t;
    else
        buffers_.emplace_back(name, t);
    for (auto& a : aliases) add_alias(name, a);
    return t;
}

void Module::add_alias(const std::string& local_name, const Alias& alias) {
    CNX_CHECK(find_entry(params_, local_name) != params_.end() || find_entry(buffers_, local_name) != buffers_.end() ||
                  find_entry(children_, local_name) != children_.end(),
              type_name_, ": alias for '", local_name, "', which is not registered here");
    CNX_CHECK(!alias.style.empty(), type_name_, ": alias '", alias.name, "' for '", local_name, "' names no style");
    const bool is_module = find_entry(children_, local_name) != children_.end();
    CNX_CHECK(is_module || !alias.name.empty(), type_name_, ": the ", alias.style, " alias of '", local_name,
              "' is empty (only a submodule can be transparent)");
    CNX_CHECK(alias.shape.empty() || !is_module, type_name_, ": submodule '", local_name,
              "' cannot have an alias shape");
    CNX_CHECK(alias.name.empty() || (alias.name.front() != '.' && alias.name.back() != '.' &&
                                     alias.name.find("..") == std::string::npos),
              type_name_, ": alias '", alias.name, "' for '", local_name, "' has an empty path segment");
    for (auto& [n, a] : aliases_)
        if (n == local_name && a.style == alias.style) {
            a = alias;
            return;
        }
    aliases_.emplace_back(local_name, alias);
}

const Alias* Module::find_alias(const std::string& local_name, const std::string& style) const {
    for (auto& [n, a] : aliases_)
        if (n == local_name && a.style == style) return &a;
    return nullptr;
}

namespace {
std::string join_path(const std::string& a, const std::string& b) {
    if (a.empty()) return b;
    if (b.empty()) return a;
    return a + "." + b;
}
}  // namespace

void Module::collect_names(const std::string& style, const std::string& prefix, const std::string& styled_prefix,
                           std::vector<StateName>& out) const {
    auto add = [&](const NamedTensors& entries) {
        for (auto& [n, t] : entries) {
            const Alias* a = find_alias(n, style);
            StateName s{prefix + n, join_path(styled_prefix, a ? a->name : n), t.shape(), t.shape()};
            if (a && !a->shape.empty()) s.styled_shape = a->shape;
            out.push_back(std::move(s));
        }
    };
    add(params_);
    add(buffers_);
    for (auto& [n, c] : children_) {
        const Alias* a = find_alias(n, style);
        c->collect_names(style, prefix + n + ".", join_path(styled_prefix, a ? a->name : n), out);
    }
}

std::vector<StateName> Module::state_dict_names(const std::string& style) const {
    std::vector<StateName> out;
    collect_names(style, "", "", out);
    return out;
}

std::vector<std::string> Module::naming_styles() const {
    std::set<std::string> styles;
    for (auto& [n, a] : aliases_) styles.insert(a.style);
    for (auto& [n, c] : children_)
        for (auto& s : c->naming_styles()) styles.insert(s);
    return {styles.begin(), styles.end()};
}

int Module::layer_id() const {
    for (const Module* m = this; m; m = m->parent_)
        if (m->layer_id_ >= 0) return m->layer_id_;
    return -1;
}

void Module::set_layer_id(int id) {
    CNX_CHECK(id >= 0, type_name_, ": layer id must be >= 0, got ", id);
    layer_id_ = id;
    stamp_layer_ids(id);
}

void Module::stamp_layer_ids(int inherited) {
    const int own = layer_id_ >= 0 ? layer_id_ : inherited;
    for (auto& [n, t] : params_) t.impl()->param.layer_id = own;
    for (auto& [n, c] : children_) c->stamp_layer_ids(own);
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
    check_name(name, "submodule", type_name_);
    CNX_CHECK(m != nullptr, type_name_, ": submodule '", name, "' is null");
    CNX_CHECK(find_entry(params_, name) == params_.end() && find_entry(buffers_, name) == buffers_.end(), type_name_,
              ": '", name, "' is already a parameter or buffer");
    CNX_CHECK(m.get() != this, type_name_, ": a module cannot be its own submodule");
    m->parent_ = this;
    m->local_name_ = name;
    m->rename_tensors(path_prefix() + name + ".");
    m->stamp_layer_ids(layer_id());
    auto it = find_entry(children_, name);
    if (it != children_.end())
        it->second = std::move(m);
    else
        children_.emplace_back(name, std::move(m));
}

void Module::rename_tensors(const std::string& prefix) {
    NamedTensors all;
    collect(prefix, true, true, true, all);
    for (auto& [n, t] : all) t.set_name(n);
}

void Module::collect(const std::string& prefix, bool params, bool buffers, bool recurse, NamedTensors& out) const {
    if (params)
        for (auto& [n, t] : params_) out.emplace_back(prefix + n, t);
    if (buffers)
        for (auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
    if (!recurse) return;
    for (auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers, true, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
    NamedTensors out;
    collect("", true, false, recurse, out);
    return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const { return tensors_of(named_parameters(recurse)); }

NamedTensors Module::named_buffers(bool recurse) const {
    NamedTensors out;
    collect("", false, true, recurse, out);
    return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const { return tensors_of(named_buffers(recurse)); }

std::vector<std::shared_ptr<Module>> Module::children() const {
    std::vector<std::shared_ptr<Module>> out;
    for (auto& [n, c] : children_) out.push_back(c);
    return out;
}

void Module::apply(const std::function<void(Module&)>& fn) {
    for (auto& [n, c] : children_) c->apply(fn);
    fn(*this);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
    std::vector<std::pair<std::string, Module*>> out;
    out.emplace_back("", this);
    for (auto& [n, c] : children_)
        for (auto& [sub, m] : c->named_modules()) out.emplace_back(sub.empty() ? n : n + "." + sub, m);
    return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
    int64_t n = 0;
    for (auto& [name, t] : named_parameters())
        if (!trainable_only || t.requires_grad()) n += t.numel();
    return n;
}

Tensor Module::find(const std::string& dotted_name) const {
    for (auto& [n, t] : state_dict())
        if (n == dotted_name) return t;
    return Tensor();
}

void Module::train(bool on) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
    for (auto& [n, t] : named_parameters()) t.zero_grad();
}

void Module::collect_state(const std::string& prefix, NamedTensors& out) const {
    collect(prefix, true, true, false, out);
    for (auto& [n, c] : children_) c->collect_state(prefix + n + ".", out);
}

NamedTensors Module::state_dict() const {
    NamedTensors out;
    collect_state("", out);
    return out;
}

LoadReport Module::load_state_dict(const NamedTensors& state, bool strict) {
    std::map<std::string, Tensor> given;
    for (auto& [n, t] : state) {
        CNX_CHECK(given.count(n) == 0, "load_state_dict: key '", n, "' appears twice");
        given.emplace(n, t);
    }
    return load_state_dict(given, strict);
}

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
    LoadReport report;
    NamedTensors own = state_dict();
    std::set<std::string> own_names;
    std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
    for (auto& [n, dst] : own) {
        own_names.insert(n);
        auto it = state.find(n);
        if (it == state.end()) {
            report.missing.push_back(n);
            continue;
        }
        const Tensor& src = it->second;
        CNX_CHECK(src.defined(), "load_state_dict: value for '", n, "' is undefined");
        if (!same_up_to_unit_dims(src.shape(), dst.shape())) {
            report.mismatched.push_back({n, dst.shape(), src.shape()});
            continue;
        }
        copies.emplace_back(dst, src);
    }
    for (auto& [n, t] : state)
        if (!own_names.count(n)) report.unexpected.push_back(n);
    // Validate everything before touching anything, so a failed strict load leaves the model intact.
    if (strict && !report.ok())
        fail("load_state_dict (", type_name_, "): the state dict does not match the model:", report.str());
    NoGradGuard no_grad;
    for (auto& [dst, src] : copies) {
        Tensor d = dst;
        copy_(d, src);
    }
    return report;
}

Module& Module::to(DType dtype) {
    NamedTensors all;
    collect("", true, true, true, all);
    for (auto& [n, t] : all) {
        if (t.dtype() == dtype) continue;
        // Swap the converted storage into the shared impl, so every handle (the layer's member,
        // an optimiser's list) sees the new dtype.
        Tensor c = t.to(dtype);
        TensorImpl* impl = t.impl();
        impl->storage = c.impl()->storage;
        impl->offset = 0;
        impl->dtype = dtype;
        impl->grad.reset();
    }
    return *this;
}

}  // namespace cnx::nn
