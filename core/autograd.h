#pragma once
// Define-by-run autograd. An op whose inputs require grad records a Node holding its backward
// closure (which owns the saved tensors) and one edge per input. backward() orders the graph
// topologically, runs each closure once, accumulates into leaves' .grad and frees the closures.
//
// Writing an op's autograd part:
//   Tensor out = ...forward...;
//   if (autograd::records("mul", {a, b}))
//       autograd::record("mul", out, {a, b}, [a, b](const Tensor& g) -> std::vector<Tensor> {
//           return {mul_nograd(g, b), mul_nograd(g, a)};   // undefined Tensor = no gradient
//       });
// Never capture `out` itself in the closure (it would own its own node): capture out.detach().
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cnx {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Edge {
    std::shared_ptr<Node> node;        // input produced by an op
    std::shared_ptr<TensorImpl> leaf;  // or a leaf that requires grad
    bool valid() const { return node || leaf; }
};

struct Node {
    std::string name;
    std::vector<Edge> inputs;
    std::vector<Shape> input_shapes;
    BackwardFn backward;
    // Op outputs whose .grad backward() fills in (Tensor::retain_grad). Weak: a node never keeps
    // its output alive (the output owns the node).
    std::vector<std::weak_ptr<TensorImpl>> retained;
    // Computes the op's output again from what `backward` keeps anyway (autograd::offer_regenerate):
    // set only by ops whose output is cheap to recompute.
    std::function<Tensor()> regenerate;
    void release() {
        backward = nullptr;
        regenerate = nullptr;
    }
};

namespace autograd {

bool grad_enabled();
void set_grad_enabled(bool on);

// True when recording is on and any defined input requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// needs_grad, asked once the op's forward is done. When it is false the op records nothing, and
// (when profiling) its forward time is charged to `name` here instead of in record(), so that
// inference and no_grad forwards show in the per-op profile too.
bool records(const char* name, std::initializer_list<Tensor> inputs);
bool records(const char* name, const std::vector<Tensor>& inputs);
// That charge alone, for an op that found out otherwise that it records nothing.
void profile_forward(const char* name);

// Attaches a node to `out` (which must have been created by the op, with no history).
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);

// Lets consumers of `out` (an output record() just attached a node to) keep `fn` instead of the
// tensor: fn must compute the same values again from what the op's backward keeps anyway, and stay
// valid until that backward has run. save_for_backward (ops/saved.h) takes it up under
// Recompute::Cheap. A no-op when `out` has no node.
void offer_regenerate(const Tensor& out, std::function<Tensor()> fn);
// Runs backward from `root` with gradient `grad` (same shape as root).
void backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// While a GradReadyScope is alive on this thread, backward() calls its hook for every leaf of the
// graph as soon as the last gradient that leaf will receive in this backward has been added to
// its .grad (which may still be undefined if none reached it), in the order the leaves finish.
// Data-parallel training uses it to start reducing a bucket of gradients while the rest of
// backward runs.
using GradReadyHook = std::function<void(const std::shared_ptr<TensorImpl>& leaf)>;
class GradReadyScope {
public:
    explicit GradReadyScope(GradReadyHook hook);
    ~GradReadyScope();
    GradReadyScope(const GradReadyScope&) = delete;
    GradReadyScope& operator=(const GradReadyScope&) = delete;

private:
    GradReadyHook previous_;
};

// Anomaly mode: after each recorded op, check the output for non-finite values and throw an
// error naming the op. Off by default (it costs a pass over every output).
bool anomaly_enabled();
void set_anomaly_enabled(bool on);

// Per-op profile. Forward time of an op is measured as the time since the previous op finished
// (record() or records()) or the last profile_mark(), which in a sequential forward is the op's
// own time without any instrumentation inside the ops; backward time is each node's closure,
// timed by the engine.
struct OpProfile {
    std::string name;
    double forward_s = 0, backward_s = 0;
    int64_t forward_calls = 0, backward_calls = 0;
};
void set_profiling(bool on);
bool profiling();
void profile_mark();   // start of a forward pass: time before this is not charged to any op
void profile_reset();
std::vector<OpProfile> profile_report();  // sorted by total time, descending

}  // namespace autograd

// Disables recording in a scope: inference, optimiser updates, gradcheck's numeric side.
class NoGradGuard {
public:
    NoGradGuard() : prev_(autograd::grad_enabled()) { autograd::set_grad_enabled(false); }
    ~NoGradGuard() { autograd::set_grad_enabled(prev_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool prev_;
};

}  // namespace cnx
