#pragma once
// The one way an op keeps an activation for its backward (torch.autograd.graph.saved_tensors_hooks,
// fixed to one policy): under Precision::BF16 (ops/precision.h) a float32 tensor is stored as a
// bfloat16 copy, rounded to nearest even, and the float32 original is no longer held by the graph
// -- so it is freed as soon as the forward moves on, and the graph keeps half the bytes. Otherwise
// (float32 precision, float64, meta tensors) the tensor is kept as it is, as x.detach() would.
//
//   SavedTensor sx = save_for_backward(x);                  // in the forward
//   autograd::record("my_op", out, {x}, [sx](const Tensor& g) -> std::vector<Tensor> {
//       Tensor x = sx.get();                                // float32 again (a converted copy)
//       ...
//   });
//
// A kernel that can read bfloat16 directly (and so skip the copy) takes sx.stored() when
// sx.is_bf16(): the fused MLPs (V1 and V2), linear, conv2d, layer norm, GRN, depthwise conv and
// GELU do.
//
// Recomputation (torch.utils.checkpoint, made selective): under Recompute::Cheap -- the default
// under Precision::BF16 -- an activation whose producer offered to compute it again from what its
// own backward keeps anyway (autograd::offer_regenerate: layer norm from its saved input and
// weights, depthwise conv from its saved input) is not kept at all. The saved tensor holds the
// producer's regenerator, and the first stored()/get() in the backward runs it once (the result is
// shared by every holder of that saved tensor and freed with the last one). In float32 and float64
// the regenerated values are bit-identical; from a bfloat16-saved input they carry that rounding,
// as a bfloat16 copy would. Like torch.utils.checkpoint it assumes the weights are not changed
// between the forward and its backward.
//
// Leaves that require grad (parameters) are kept as they are: they stay alive anyway, so a copy
// would add memory rather than save it, and weights stay exact. Save weights-like operands with
// .detach(), activations with save_for_backward.
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "ops/precision.h"

namespace cnx {

struct Regenerated;  // a regenerator and, once run, its result (ops/saved.cpp)

class SavedTensor {
public:
    SavedTensor() = default;
    bool defined() const { return stored_.defined() || regen_; }
    bool is_bf16() const { return rounded_; }  // stored as a rounded bfloat16 copy
    bool is_recomputed() const { return regen_ != nullptr; }  // kept as its producer's regenerator
    // As kept: bfloat16 when is_bf16(); when is_recomputed(), the regenerated tensor (computed on
    // the first call, in dtype()).
    const Tensor& stored() const;
    const Shape& shape() const;
    DType dtype() const;  // of the tensor saved
    Tensor get() const;   // in dtype(): a float32 copy of the bfloat16 one when is_bf16()

private:
    friend SavedTensor save_for_backward(const Tensor& t);
    friend SavedTensor adopt_for_backward(const Tensor& t);
    Tensor stored_;
    bool rounded_ = false;
    std::shared_ptr<Regenerated> regen_;
};

// Whether save_for_backward takes up the regenerators ops offer. Per thread, like the precision.
enum class Recompute {
    Auto,   // Cheap under Precision::BF16 (where memory is what the mode is for), None otherwise
    None,   // keep every activation (as fast as it gets)
    Cheap,  // recompute layer-norm and depthwise-conv outputs in the backward
};
void set_recompute(Recompute r);
Recompute recompute_policy();
bool recomputes_cheap();                                 // the policy, Auto resolved
const char* recompute_name(Recompute r);                 // "auto", "none", "cheap"
Recompute parse_recompute(const std::string& name);      // else cnx::Error
struct RecomputeGuard {
    explicit RecomputeGuard(Recompute r) : prev(recompute_policy()) { set_recompute(r); }
    ~RecomputeGuard() { set_recompute(prev); }
    RecomputeGuard(const RecomputeGuard&) = delete;
    RecomputeGuard& operator=(const RecomputeGuard&) = delete;
    Recompute prev;
};

SavedTensor save_for_backward(const Tensor& t);

// An activation an op's own kernel already wrote in the storage the policy asks for (a GEMM's
// bfloat16 output, ops/gemm.h's out_bf16): kept as it is, a bfloat16 tensor standing for the
// float32 one it rounds (get() widens it), and counted in saved_stats() like the rest.
SavedTensor adopt_for_backward(const Tensor& t);

// Counts of what save_for_backward kept since the last reset (all threads): benchmarks report
// which path ran.
struct SavedStats {
    int64_t bf16_tensors = 0, bf16_bytes = 0;  // stored rounded
    int64_t kept_tensors = 0, kept_bytes = 0;  // stored as they were (fp32 mode, float64); parameters not counted
    int64_t recomputed_tensors = 0, recomputed_bytes = 0;  // kept as regenerators (bytes: of the tensor not kept)
    int64_t regenerations = 0;                              // regenerators run (once per saved tensor at most)
};
SavedStats saved_stats();
void reset_saved_stats();

// Multi-threaded conversions (ops/parallel.h): a float32 tensor to a bfloat16 one (nearest even)
// and back; the same values as Tensor::to.
Tensor to_bf16(const Tensor& f32);
Tensor bf16_to_f32(const Tensor& bf16);

}  // namespace cnx
