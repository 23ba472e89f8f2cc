#include "ops/saved.h"

#include <atomic>
#include <functional>

#include "core/autograd.h"
#include "core/error.h"

#include "ops/parallel.h"

namespace cnx {
namespace {

std::atomic<int64_t> g_bf16_tensors{0}, g_bf16_bytes{0}, g_kept_tensors{0}, g_kept_bytes{0};
std::atomic<int64_t> g_recomputed_tensors{0}, g_recomputed_bytes{0}, g_regenerations{0};
thread_local Recompute t_recompute = Recompute::Auto;

// Conversions are memory-bound: a few elements per cycle, so split only large ones.
constexpr int64_t kConvertGrain = 1 << 16;

}  // namespace

namespace {

// A copy of src (dtype From) in dtype To, converted element-wise by convert(src, dst, n) in
// parallel chunks.
template <class From, class To, class Convert>
Tensor converted(const char* what, const Tensor& src, Convert convert) {
    CNX_CHECK(src.defined() && src.dtype() == dtype_of<From>::value, what, ": expected a ",
              dtype_name(dtype_of<From>::value), " tensor, got ", src.defined() ? src.str() : "undefined");
    Tensor out = Tensor::empty(src.shape(), dtype_of<To>::value);
    if (out.is_meta() || src.is_meta()) return out;
    const From* s = src.data<From>();
    To* d = out.data<To>();
    const int64_t n = src.numel();
    parallel_range(n, n >= 4 * kConvertGrain ? kConvertGrain : n,
                   [&](int64_t i0, int64_t i1) { convert(s + i0, d + i0, i1 - i0); });
    return out;
}

}  // namespace

Tensor to_bf16(const Tensor& f32) {
    return converted<float, BFloat16>("to_bf16", f32,
                                      [](const float* s, BFloat16* d, int64_t n) { bf16_from_float(s, d, n); });
}

Tensor bf16_to_f32(const Tensor& bf16) {
    return converted<BFloat16, float>("bf16_to_f32", bf16,
                                      [](const BFloat16* s, float* d, int64_t n) { bf16_to_float(s, d, n); });
}

struct Regenerated {
    std::function<Tensor()> make;
    Shape shape;
    DType dtype;
    Tensor value;  // empty until the first stored()
};

const Tensor& SavedTensor::stored() const {
    if (!regen_) return stored_;
    Regenerated& r = *regen_;
    if (!r.value.defined()) {
        r.value = r.make();
        CNX_CHECK(r.value.shape() == r.shape && r.value.dtype() == r.dtype, "a regenerated activation is ",
                  r.value.str(), ", the one it stands for was ", shape_str(r.shape), " ", dtype_name(r.dtype));
        r.make = nullptr;  // what it captured is no longer needed here
        g_regenerations.fetch_add(1, std::memory_order_relaxed);
    }
    return r.value;
}

const Shape& SavedTensor::shape() const { return regen_ ? regen_->shape : stored_.shape(); }

DType SavedTensor::dtype() const {
    if (regen_) return regen_->dtype;
    return rounded_ ? DType::F32 : stored_.dtype();
}

Tensor SavedTensor::get() const {
    if (regen_) return stored();
    if (!rounded_ || !stored_.defined()) return stored_;
    return bf16_to_f32(stored_);
}

void set_recompute(Recompute r) { t_recompute = r; }
Recompute recompute_policy() { return t_recompute; }
bool recomputes_cheap() {
    return t_recompute == Recompute::Cheap || (t_recompute == Recompute::Auto && precision() == Precision::BF16);
}
const char* recompute_name(Recompute r) {
    return r == Recompute::Cheap ? "cheap" : r == Recompute::None ? "none" : "auto";
}
Recompute parse_recompute(const std::string& name) {
    if (name == "auto") return Recompute::Auto;
    if (name == "none") return Recompute::None;
    if (name == "cheap") return Recompute::Cheap;
    fail("unknown recompute policy '", name, "' (expected auto, none or cheap)");
}

SavedTensor save_for_backward(const Tensor& t) {
    SavedTensor s;
    if (!t.defined()) return s;
    const bool parameter = t.is_leaf() && t.requires_grad();
    if (!t.is_meta() && t.grad_fn() && t.grad_fn()->regenerate && recomputes_cheap()) {
        s.regen_ = std::make_shared<Regenerated>(Regenerated{t.grad_fn()->regenerate, t.shape(), t.dtype(), Tensor()});
        g_recomputed_tensors.fetch_add(1, std::memory_order_relaxed);
        g_recomputed_bytes.fetch_add((int64_t)t.nbytes(), std::memory_order_relaxed);
        return s;
    }
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
    s.recomputed_tensors = g_recomputed_tensors.load();
    s.recomputed_bytes = g_recomputed_bytes.load();
    s.regenerations = g_regenerations.load();
    return s;
}

void reset_saved_stats() {
    g_bf16_tensors = 0, g_bf16_bytes = 0, g_kept_tensors = 0, g_kept_bytes = 0;
    g_recomputed_tensors = 0, g_recomputed_bytes = 0, g_regenerations = 0;
}

}  // namespace cnx
