#pragma once
// Shape-only execution and multiply-accumulate counting, like PyTorch's meta device and its
// FlopCounterMode.
//
// Meta mode (a MetaGuard alive on this thread): Tensor::empty and everything built on it create
// meta tensors, which have a shape and a dtype but no storage, and every kernel is skipped (the
// CNX_DISPATCH macro runs no body). Ops still check their inputs and compute their output shapes,
// so a model can be built and run forward without allocating a weight:
//
//   MetaGuard meta;
//   auto model = models::create_model("convnext_xlarge");     // parameters: shapes, no storage
//   MacCounter macs;
//   Tensor y = model->forward(Tensor::empty({1, 224, 224, 3}));  // y: meta [1, 1000]
//   macs.total();                                               // 60.9e9
//
// Reading the data of a meta tensor (data<T>(), item(), to_vector()) is an error. Initialisers
// and copies do nothing in meta mode.
//
// A MacCounter counts whether or not meta mode is on: linear, matmul, conv2d, depthwise conv2d
// and the fused ConvNeXt MLP add the multiply-accumulates of their forward (bias additions,
// normalisation and activations are not counted) to every counter alive on the calling thread.
#include <cstdint>
#include <map>
#include <string>

namespace cnx {

bool meta_mode();  // true while a MetaGuard(true) is the innermost guard on this thread

class MetaGuard {
public:
    explicit MetaGuard(bool on = true);
    ~MetaGuard();
    MetaGuard(const MetaGuard&) = delete;
    MetaGuard& operator=(const MetaGuard&) = delete;

private:
    bool previous_;
};

class MacCounter {
public:
    MacCounter();   // starts counting on this thread (counters nest: each one counts)
    ~MacCounter();  // stops
    MacCounter(const MacCounter&) = delete;
    MacCounter& operator=(const MacCounter&) = delete;

    int64_t total() const { return total_; }
    const std::map<std::string, int64_t>& by_op() const { return by_op_; }  // "linear", "conv2d", ...
    void reset();

private:
    friend void count_macs(const char* op, int64_t macs);
    MacCounter* outer_;
    int64_t total_ = 0;
    std::map<std::string, int64_t> by_op_;
};

// Called by ops at entry; a thread-local pointer test when no counter is alive.
void count_macs(const char* op, int64_t macs);

}  // namespace cnx
