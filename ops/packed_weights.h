#pragma once
// Packed weights for inference, the counterpart of oneDNN's weight prepacking in PyTorch's
// inference paths.
//
// The AVX-512 GEMM kernels (ops/gemm.h) copy the B operand into panels before multiplying. Under
// bf16 they also convert it. In a layer that is x · W^T, B is the weight. With few rows (a batch
// of one image: 49 rows in ConvNeXt-T's last stage) each weight element takes part in so little
// arithmetic that packing it costs as much as the product. While a PackedWeightsScope is alive, a
// GEMM whose B lies inside one of the scope's tensors packs it once and reuses the packed copy in
// every later call with the same layout.
//
//   PackedWeightsScope packed(model->parameters());   // the weights must not change meanwhile
//   for (...) model->forward(batch);                   // the first call packs, the rest reuse
//
// The contract: nothing writes to the registered tensors while the scope is alive (no optimiser
// step, no load_state_dict). predict, eval, gradcam and `bench --mode infer` hold one; training
// never does. Results are identical to the bit with and without the scope (the same panels, only
// made once). The packed copies take about the weights' size again (half of it in bf16) and are
// freed with the scope.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace cnx {

class PackedWeightsScope {
public:
    explicit PackedWeightsScope(const std::vector<Tensor>& weights);
    ~PackedWeightsScope();
    PackedWeightsScope(const PackedWeightsScope&) = delete;
    PackedWeightsScope& operator=(const PackedWeightsScope&) = delete;

private:
    uint64_t id_;
};

struct PackedWeightsStats {
    int64_t entries = 0, bytes = 0;  // packed copies held now
    int64_t hits = 0, misses = 0;    // since the process started
};
PackedWeightsStats packed_weights_stats();

// For the GEMM kernels (ops/kernels/gemm_avx512_impl.h).
namespace packed_weights {
struct Key {
    const void* b;
    int64_t ldb, K, N, kc_blk;
    bool tb, b_bf16;
    int kernel;  // which kernel's panel format
    bool operator<(const Key& o) const;
};
// Whether [p, p + bytes) lies inside a tensor of a live scope (false when there is none).
bool covers(const void* p, int64_t bytes);
// The packed copy for `key`; on a miss, a new buffer of `bytes` that `fill` packs first. Safe to
// call from several threads; null only when the scope ended meanwhile (then pack as usual).
void* find_or_pack(const Key& key, size_t bytes, const std::function<void(void*)>& fill);
}  // namespace packed_weights

}  // namespace cnx
