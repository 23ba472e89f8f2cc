// Recompute::Cheap (ops/saved.h): layer-norm and depthwise-conv outputs kept as their producers'
// regenerators instead of bytes. Float32 gradients must not change by a bit, bf16 ones only by
// bfloat16 rounding; each regenerator runs once, lazily, and the policy follows the precision.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/rng.h"
#include "models/convnext.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "ops/precision.h"
#include "ops/saved.h"
#include "precision_check.h"

using namespace cnx;

namespace {

using precision_check::rel_l2;
using precision_check::same_bits;

struct Step {
    NamedTensors grads;
    SavedStats saved;
};

// One forward and backward of a small model of `variant` (V1, or V2 with GRN), its gradients and
// what was saved for that backward.
Step step(const std::string& variant, Precision p, Recompute r, DType dtype = DType::F32) {
    PrecisionGuard pg(p);
    RecomputeGuard rg(r);
    Generator gen(5);
    auto model = precision_check::small_convnext(variant, &gen);
    model->to(dtype);
    model->train();
    Tensor x = randn({2, 64, 64, 3}, dtype, &gen);
    reset_saved_stats();
    Tensor loss = cross_entropy(model->forward(x), {4, 9});
    loss.backward();
    Step s;
    s.saved = saved_stats();
    for (auto& [name, t] : model->named_parameters()) s.grads.emplace_back(name, t.grad().clone());
    return s;
}

}  // namespace

TEST_CASE("recompute: float32 and float64 gradients are bit-identical, with less kept", "[recompute]") {
    const std::string variant = GENERATE(as<std::string>{}, "convnext_atto", "convnextv2_atto");
    const DType dtype = GENERATE(DType::F32, DType::F64);
    INFO(variant << " " << dtype_name(dtype));
    const Step kept = step(variant, Precision::FP32, Recompute::None, dtype);
    const Step lean = step(variant, Precision::FP32, Recompute::Cheap, dtype);
    REQUIRE(kept.saved.recomputed_tensors == 0);
    // every block's depthwise-conv and layer-norm outputs, the stem's and the downsamples' norms
    REQUIRE(lean.saved.recomputed_tensors >= 2 * 5 + 4);
    REQUIRE(lean.saved.kept_bytes + lean.saved.recomputed_bytes == kept.saved.kept_bytes);
    REQUIRE(lean.saved.regenerations == lean.saved.recomputed_tensors);  // each once
    REQUIRE(lean.grads.size() == kept.grads.size());
    for (size_t i = 0; i < kept.grads.size(); ++i) {
        INFO(kept.grads[i].first);
        CHECK(same_bits(lean.grads[i].second, kept.grads[i].second));
    }
}

TEST_CASE("recompute: under bf16 it keeps a third less and stays within bfloat16 error", "[recompute][bf16]") {
    const std::string variant = GENERATE(as<std::string>{}, "convnext_atto", "convnextv2_atto");
    INFO(variant);
    const Step kept = step(variant, Precision::BF16, Recompute::None);
    const Step lean = step(variant, Precision::BF16, Recompute::Cheap);
    const Step ref = step(variant, Precision::FP32, Recompute::None);
    REQUIRE(lean.saved.kept_tensors == 0);
    REQUIRE(lean.saved.bf16_bytes + lean.saved.recomputed_bytes / 2 == kept.saved.bf16_bytes);
    REQUIRE(lean.saved.bf16_bytes < 0.8 * kept.saved.bf16_bytes);
    REQUIRE(lean.saved.regenerations == lean.saved.recomputed_tensors);
    // regenerated from bfloat16-saved inputs: as far from float32 as keeping bfloat16 copies is
    const double err_kept = rel_l2(kept.grads, ref.grads), err_lean = rel_l2(lean.grads, ref.grads);
    INFO("kept " << err_kept << ", recomputed " << err_lean);
    CHECK(err_lean < 5e-2);
    CHECK(err_lean < 2 * err_kept + 1e-3);
    CHECK(rel_l2(lean.grads, kept.grads) < 5e-2);
}

TEST_CASE("recompute: a regenerator runs when the backward first reads it, once, shared", "[recompute]") {
    RecomputeGuard cheap(Recompute::Cheap);
    Generator gen(3);
    Tensor x = randn({2, 6, 5, 8}, DType::F32, &gen).requires_grad_();
    Tensor w = randn({8, 1, 7, 7}, DType::F32, &gen).requires_grad_();
    Tensor lw = randn({8}, DType::F32, &gen).requires_grad_(), lb = randn({8}, DType::F32, &gen).requires_grad_();
    Tensor fc = randn({3, 8}, DType::F32, &gen).requires_grad_();
    reset_saved_stats();
    Tensor y = depthwise_conv2d(x, w, Tensor(), 1, 3);
    Tensor u = layer_norm(y, lw, lb, 1e-6);
    Tensor out = linear(u, fc);
    // y is kept by layer norm as the conv's regenerator, u by linear as layer norm's
    REQUIRE(saved_stats().recomputed_tensors == 2);
    REQUIRE(saved_stats().recomputed_bytes == 2 * (int64_t)y.nbytes());
    REQUIRE(saved_stats().regenerations == 0);  // nothing computed again in the forward
    Tensor y_value = y.detach().clone(), u_value = u.detach().clone();
    y = Tensor(), u = Tensor();
    sum(out).backward();
    // u's regenerator read y through layer norm's saved tensor; layer norm's backward reused it
    CHECK(saved_stats().regenerations == 2);
    // against the same chain with everything kept
    Tensor gx = x.grad().clone(), gw = w.grad().clone(), glw = lw.grad().clone(), gfc = fc.grad().clone();
    for (Tensor* t : {&x, &w, &lw, &lb, &fc}) t->zero_grad();
    {
        RecomputeGuard none(Recompute::None);
        Tensor o2 = linear(layer_norm(depthwise_conv2d(x, w, Tensor(), 1, 3), lw, lb, 1e-6), fc);
        sum(o2).backward();
    }
    CHECK(same_bits(x.grad(), gx));
    CHECK(same_bits(w.grad(), gw));
    CHECK(same_bits(lw.grad(), glw));
    CHECK(same_bits(fc.grad(), gfc));
    (void)y_value, (void)u_value;
}

TEST_CASE("recompute: the policy follows the precision unless set, per thread", "[recompute]") {
    REQUIRE(recompute_policy() == Recompute::Auto);
    {
        PrecisionGuard p(Precision::FP32);
        CHECK_FALSE(recomputes_cheap());
        RecomputeGuard c(Recompute::Cheap);
        CHECK(recomputes_cheap());
    }
    {
        PrecisionGuard p(Precision::BF16);
        CHECK(recomputes_cheap());
        RecomputeGuard n(Recompute::None);
        CHECK_FALSE(recomputes_cheap());
    }
    REQUIRE(recompute_policy() == Recompute::Auto);
    CHECK(parse_recompute("cheap") == Recompute::Cheap);
    CHECK(parse_recompute("none") == Recompute::None);
    CHECK(parse_recompute("auto") == Recompute::Auto);
    CHECK(std::string(recompute_name(Recompute::Cheap)) == "cheap");
    CHECK_THROWS_WITH(parse_recompute("sometimes"), Catch::Contains("sometimes") && Catch::Contains("auto, none or cheap"));
    // leaves (parameters, inputs) have no producer to regenerate them: kept as ever
    RecomputeGuard c(Recompute::Cheap);
    Tensor leaf = randn({4, 4}).requires_grad_();
    reset_saved_stats();
    SavedTensor s = save_for_backward(leaf);
    CHECK_FALSE(s.is_recomputed());
    CHECK(saved_stats().recomputed_tensors == 0);
}
