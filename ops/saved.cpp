#include "ops/saved.h"

#include <atomic>

#include "ops/parallel.h"

namespace cnx {
namespace {

std::atomic<int64_t> g_bf16_tensors{0}, g_bf16_bytes{0}, g_kept_tensors{0}, g_kept_bytes{0};

// Conversions are memory-bound: a few elements per cycle, so split only large ones.
constexpr int64_t kConvertGrain = 1 << 16;

}  // namespace

Tensor to_bf16(const Tensor& f32) {
    CNX_CHECK(f32.defined() && f32.dtype() == DType::F32, "to_bf16: expected a float32 tensor, got ",
              f32.defined() ? f32.str() : "undefined");
    Tensor out = Tensor::empty(f32.shape(), DType::BF16);
    if (out.is_meta() || f32.is_meta()) return out;
    const float* s = f32.data<float>();
    BFloat16* d = out.data<BFloat16>();
    const int64_t n = f32.numel();
    parallel_range(n, n >= 4 * kConvertGrain ? kConvertGrain : n,
                   [&](int64_t i0, int64_t i1) { bf16_from_float(s + i0, d + i0, i1 - i0); });
    return out;
}

Tensor bf16_to_f32(const Tensor& bf16) {
    CNX_CHECK(bf16.defined() && bf16.dtype() == DType::BF16, "bf16_to_f32: expected a bfloat16 tensor, got ",
              bf16.defined() ? bf16.str() : "undefined");
    Tensor out = Tensor::empty(bf16.shape(), DType::F32);
    if (out.is_meta() || bf16.is_meta()) return out;
    const BFloat16* s = bf16.data<BFloat16>();
    float* d = out.data<float>();
    const int64_t n = bf16.numel();
    parallel_range(n, n >= 4 * kConvertGrain ? kConvertGrain : n,
                   [&](int64_t i0, int64_t i1) { bf16_to_float(s + i0, d + i0, i1 - i0); });
    return out;
}

Tensor SavedTensor::get() const {
    if (!rounded_ || !stored_.defined()) return stored_;
    return bf16_to_f32(stored_);
}

SavedTensor save_for_backward(const Tensor& t) {
    SavedTensor s;
    if (!t.defined()) return s;
    const bool parameter = t.is_leaf() && t.requires_grad();
    if (saves_bf16() && t.dtype() == DType::F32 && !parameter && !t.is_meta()) {
        s.stored_ = to_bf16(t);
        s.rounded_ = true;
        g_bf16_tensors.fetch_add(1, std::memory_order_relaxed);
        g_bf16_bytes.fetch_add((int64_t)s.stored_.nbytes(), std::memory_order_relaxed);
        return s;
    }
    s.stored_ = t.detach();
    if (!parameter && !t.is_meta()) {
        g_kept_tensors.fetch_add(1, std::memory_order_relaxed);
        g_kept_bytes.fetch_add((int64_t)t.nbytes(), std::memory_order_relaxed);
    }
    return s;
}

SavedTensor adopt_for_backward(const Tensor& t) {
    SavedTensor s;
    if (!t.defined()) return s;
    s.stored_ = t.detach();
    s.rounded_ = t.dtype() == DType::BF16;
    if (!t.is_meta()) {
        (s.rounded_ ? g_bf16_tensors : g_kept_tensors).fetch_add(1, std::memory_order_relaxed);
        (s.rounded_ ? g_bf16_bytes : g_kept_bytes).fetch_add((int64_t)t.nbytes(), std::memory_order_relaxed);
    }
    return s;
}

SavedStats saved_stats() {
    SavedStats s;
    s.bf16_tensors = g_bf16_tensors.load();
    s.bf16_bytes = g_bf16_bytes.load();
    s.kept_tensors = g_kept_tensors.load();
    s.kept_bytes = g_kept_bytes.load();
    return s;
}

void reset_saved_stats() {
    g_bf16_tensors = 0, g_bf16_bytes = 0, g_kept_tensors = 0, g_kept_bytes = 0;
}

}  // namespace cnx
