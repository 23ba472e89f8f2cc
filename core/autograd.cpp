#include "core/autograd.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace cnx {
namespace autograd {
namespace {
thread_local bool g_grad_enabled = true;
bool g_anomaly = false;
bool g_profiling = false;
thread_local GradReadyHook g_grad_ready;
std::map<std::string, OpProfile> g_profile;
std::chrono::steady_clock::time_point g_last_mark;

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

template <class T>
bool all_finite(const T* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(p[i])) return false;
    return true;
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }
bool anomaly_enabled() { return g_anomaly; }
void set_anomaly_enabled(bool on) { g_anomaly = on; }

bool needs_grad(const std::vector<Tensor>& inputs) {
    if (!g_grad_enabled) return false;
    for (auto& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}
bool needs_grad(std::initializer_list<Tensor> inputs) { return needs_grad(std::vector<Tensor>(inputs)); }

void set_profiling(bool on) {
    g_profiling = on;
    g_last_mark = std::chrono::steady_clock::now();
}
bool profiling() { return g_profiling; }
void profile_mark() { g_last_mark = std::chrono::steady_clock::now(); }
void profile_reset() { g_profile.clear(); }
std::vector<OpProfile> profile_report() {
    std::vector<OpProfile> out;
    for (auto& kv : g_profile) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OpProfile& a, const OpProfile& b) {
        return a.forward_s + a.backward_s > b.forward_s + b.backward_s;
    });
    return out;
}

void profile_forward(const char* name) {
    if (!g_profiling) return;
    OpProfile& p = g_profile[name];
    p.name = name;
    p.forward_s += seconds_since(g_last_mark);
    p.forward_calls++;
    g_last_mark = std::chrono::steady_clock::now();
}

bool records(const char* name, const std::vector<Tensor>& inputs) {
    if (needs_grad(inputs)) return true;
    profile_forward(name);
    return false;
}
bool records(const char* name, std::initializer_list<Tensor> inputs) {
    return records(name, std::vector<Tensor>(inputs));
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
    profile_forward(name);
    if (g_anomaly) {
        bool ok = true;
        CNX_DISPATCH(out.dtype(), name, { ok = all_finite(out.data<scalar_t>(), out.numel()); });
        CNX_CHECK(ok, "anomaly: op '", name, "' produced a non-finite value in its output ", out.str());
    }
    auto node = std::make_shared<Node>();
    node->name = name;
    node->backward = std::move(fn);
    for (auto& t : inputs) {
        Edge e;
        if (t.defined() && t.requires_grad()) {
            if (t.grad_fn())
                e.node = t.grad_fn();
            else
                e.leaf = t.impl_ptr();
        }
        node->inputs.push_back(e);
        node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    }
    out.set_grad_fn(node);
    if (g_profiling) g_last_mark = std::chrono::steady_clock::now();
}

void offer_regenerate(const Tensor& out, std::function<Tensor()> fn) {
    if (out.defined() && out.grad_fn()) out.grad_fn()->regenerate = std::move(fn);
}

namespace {

// True when nothing else can see `t`'s memory: no other handle to the tensor or its storage. A
// gradient that is ours alone may become the accumulator or be added into without a copy.
bool sole_owner(const std::shared_ptr<TensorImpl>& t) {
    return t.use_count() == 1 && t->storage.use_count() == 1 && t->offset == 0 && !t->grad_fn;
}

// Leaf gradients persist across backward calls and are accumulated in place. The first one is
// taken as is when nothing else holds it, else copied (a backward may hand the same tensor to
// several inputs, or pass its own input gradient through).
void accumulate_leaf(std::shared_ptr<TensorImpl>& slot, Tensor&& g) {
    if (!slot) {
        std::shared_ptr<TensorImpl> taken = g.impl_ptr();
        g = Tensor();
        slot = sole_owner(taken) ? std::move(taken) : Tensor(taken).clone().impl_ptr();
        return;
    }
    Tensor dst(slot);
    add_inplace(dst, g);
}

// Gradients flowing between nodes live for one backward: the first is taken as is; a second one
// is added into it when the first is ours alone, else into a fresh copy (never into a tensor
// that may be shared).
void accumulate_node(std::shared_ptr<TensorImpl>& slot, Tensor&& g) {
    if (!slot) {
        slot = g.impl_ptr();
        return;
    }
    if (sole_owner(slot)) {
        Tensor sum(slot);
        add_inplace(sum, g);
        return;
    }
    Tensor sum = Tensor(slot).clone();
    add_inplace(sum, g);
    slot = sum.impl_ptr();
}

}  // namespace

GradReadyScope::GradReadyScope(GradReadyHook hook) : previous_(std::move(g_grad_ready)) {
    g_grad_ready = std::move(hook);
}
GradReadyScope::~GradReadyScope() { g_grad_ready = std::move(previous_); }

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
    CNX_CHECK(root.defined(), "backward: undefined tensor");
    CNX_CHECK(root.requires_grad(), "backward: tensor ", root.str(), " does not require grad");
    CNX_CHECK(grad.shape() == root.shape(), "backward: gradient shape ", shape_str(grad.shape()),
              " does not match output shape ", shape_str(root.shape()));
    NoGradGuard no_grad;
    if (!root.grad_fn()) {  // a leaf: its gradient is the seed
        std::shared_ptr<TensorImpl> slot = root.impl()->grad;
        accumulate_leaf(slot, grad.to(root.dtype()));  // a temporary: copied unless `to` made a new tensor
        root.impl()->grad = slot;
        if (g_grad_ready) g_grad_ready(root.impl_ptr());
        return;
    }
    // Topological order by iterative DFS (deep networks would overflow a recursive one).
    std::vector<Node*> order;
    {
        std::unordered_set<Node*> seen;
        std::vector<std::pair<Node*, size_t>> stack;
        Node* r = root.grad_fn().get();
        stack.push_back({r, 0});
        seen.insert(r);
        while (!stack.empty()) {
            auto& [n, i] = stack.back();
            if (i < n->inputs.size()) {
                Node* child = n->inputs[i++].node.get();
                if (child && seen.insert(child).second) stack.push_back({child, 0});
            } else {
                order.push_back(n);
                stack.pop_back();
            }
        }
    }
    // For the grad-ready hook: how many edges still lead into each leaf. A node that no
    // gradient reaches still settles its edges, so every leaf is reported exactly once.
    std::unordered_map<TensorImpl*, int> leaf_edges_left;
    const GradReadyHook hook = g_grad_ready;  // a hook that opens another scope does not affect this backward
    if (hook)
        for (Node* n : order)
            for (const Edge& e : n->inputs)
                if (e.leaf) leaf_edges_left[e.leaf.get()]++;
    auto settle_leaf_edges = [&](Node* n) {
        if (!hook) return;
        for (const Edge& e : n->inputs)
            if (e.leaf && --leaf_edges_left[e.leaf.get()] == 0) hook(e.leaf);
    };
    std::unordered_map<Node*, std::shared_ptr<TensorImpl>> grads;
    grads[root.grad_fn().get()] = grad.to(root.dtype()).impl_ptr();
    // `order` is post-order (inputs before users); walk it backwards.
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        Node* n = *it;
        auto git = grads.find(n);
        if (git == grads.end()) {  // no gradient reached this node
            settle_leaf_edges(n);
            continue;
        }
        Tensor g(git->second);
        grads.erase(git);
        // The gradient of this node's output is complete here (every user has run): retained
        // outputs accumulate a copy (g itself flows on into the inputs' gradients).
        for (const auto& weak : n->retained)
            if (std::shared_ptr<TensorImpl> out = weak.lock()) accumulate_leaf(out->grad, Tensor(g).clone());
        CNX_CHECK(n->backward, "backward: the graph through '", n->name,
                  "' was already freed; pass retain_graph=true to backward twice");
        auto t0 = std::chrono::steady_clock::now();
        std::vector<Tensor> in_grads = n->backward(g);
        if (g_profiling) {
            OpProfile& p = g_profile[n->name];
            p.name = n->name;
            p.backward_s += seconds_since(t0);
            p.backward_calls++;
        }
        CNX_CHECK(in_grads.size() == n->inputs.size(), "backward of '", n->name, "' returned ",
                  in_grads.size(), " gradients for ", n->inputs.size(), " inputs");
        if (!retain_graph) n->release();
        for (size_t i = 0; i < n->inputs.size(); ++i) {
            const Edge& e = n->inputs[i];
            Tensor& gi = in_grads[i];
            if (!e.valid() || !gi.defined()) continue;
            CNX_CHECK(gi.shape() == n->input_shapes[i], "backward of '", n->name, "': gradient ", i, " has shape ",
                      shape_str(gi.shape()), ", input had ", shape_str(n->input_shapes[i]));
            if (e.node) {
                accumulate_node(grads[e.node.get()], std::move(gi));
            } else {
                accumulate_leaf(e.leaf->grad, std::move(gi));
            }
        }
        settle_leaf_edges(n);
    }
    if (!retain_graph) {
        // Cut the root's history so saved tensors and the graph are freed now. A released
        // stand-in keeps the root an op output, so a second backward says the graph was freed
        // (not "does not require grad").
        auto freed = std::make_shared<Node>();
        freed->name = root.grad_fn()->name;
        const_cast<Tensor&>(root).set_grad_fn(freed);
    }
}

}  // namespace autograd
}  // namespace cnx
