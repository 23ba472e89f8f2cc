// linear / matmul, conv2d (patchify, im2col, grouped, depthwise dispatch) and depthwise_conv2d:
// gradcheck in float64 on small odd shapes, optimised forward vs the naive ref:: loops, adjoint
// identities for the backward kernels at ConvNeXt-like sizes, float32 vs float64, error messages.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "ops/conv2d.h"
#include "ops/depthwise_conv2d.h"
#include "ops/linear.h"

using namespace cnx;

namespace {

Tensor rnd(const Shape& s, DType d = DType::F64) { return randn(s, d); }

// max |a - b| / max(|b|, 1)
double max_rel_diff(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    auto va = a.to_vector(), vb = b.to_vector();
    double worst = 0;
    for (size_t i = 0; i < va.size(); ++i)
        worst = std::max(worst, std::fabs(va[i] - vb[i]) / std::max(std::fabs(vb[i]), 1.0));
    return worst;
}

double dot(const Tensor& a, const Tensor& b) {
    auto va = a.to_vector(), vb = b.to_vector();
    REQUIRE(va.size() == vb.size());
    double s = 0;
    for (size_t i = 0; i < va.size(); ++i) s += va[i] * vb[i];
    return s;
}

void require_gradcheck(const TensorFn& fn, const std::vector<Tensor>& inputs) {
    GradcheckResult r = gradcheck(fn, inputs);
    INFO("max_rel_err " << r.max_rel_err << " at " << r.worst);
    REQUIRE(r.pass);
    REQUIRE(r.max_rel_err <= 1e-6);
}

TensorFn conv_fn(int stride, int pad, int groups) {
    return [=](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], stride, pad, groups); };
}
TensorFn ref_conv_fn(int stride, int pad, int groups) {
    return [=](const std::vector<Tensor>& in) { return ref::conv2d(in[0], in[1], in[2], stride, pad, groups); };
}
TensorFn dw_fn(int stride, int pad) {
    return [=](const std::vector<Tensor>& in) { return depthwise_conv2d(in[0], in[1], in[2], stride, pad); };
}
TensorFn ref_dw_fn(int stride, int pad) {
    return [=](const std::vector<Tensor>& in) { return ref::depthwise_conv2d(in[0], in[1], in[2], stride, pad); };
}

// Optimised forward against the reference in float64 and float32.
void require_matches_ref(const TensorFn& fast, const TensorFn& slow, const std::vector<Tensor>& in64) {
    NoGradGuard ng;
    REQUIRE(max_rel_diff(fast(in64), slow(in64)) <= 1e-12);
    std::vector<Tensor> in32;
    for (auto& t : in64) in32.push_back(t.defined() ? t.to(DType::F32) : Tensor());
    REQUIRE(max_rel_diff(fast(in32), slow(in32)) <= 2e-5);
}

// Backward at sizes gradcheck cannot afford, through the adjoint identities of a map that is
// linear in x (bias undefined) and in w:  <f(u, w), v> = <u, dx(v)>  and  <f(x, u), v> = <u, dw(v)>,
// with the left sides computed by the naive reference forward.
void require_adjoint(const TensorFn& fast, const TensorFn& slow, const Tensor& x, const Tensor& w) {
    Tensor xg = x.clone().requires_grad_(), wg = w.clone().requires_grad_();
    Tensor y = fast({xg, wg, Tensor()});
    Tensor v = rnd(y.shape());
    y.backward(v);
    Tensor ux = rnd(x.shape()), uw = rnd(w.shape());
    NoGradGuard ng;
    const double lx = dot(slow({ux, w, Tensor()}), v), rx = dot(ux, xg.grad());
    const double lw = dot(slow({x, uw, Tensor()}), v), rw = dot(uw, wg.grad());
    REQUIRE(std::fabs(lx - rx) <= 1e-10 * std::max(1.0, std::fabs(lx)));
    REQUIRE(std::fabs(lw - rw) <= 1e-10 * std::max(1.0, std::fabs(lw)));
}

}  // namespace

TEST_CASE("matmul and linear: gradcheck", "[linear]") {
    default_generator().manual_seed(1);
    auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
    auto lin = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
    require_gradcheck(mm, {rnd({2, 3, 5}), rnd({5, 7})});
    require_gradcheck(mm, {rnd({3, 4}), rnd({4, 1})});
    require_gradcheck(mm, {rnd({5}), rnd({5, 3})});
    require_gradcheck(lin, {rnd({2, 3, 5}), rnd({7, 5}), rnd({7})});
    require_gradcheck(lin, {rnd({3, 2, 3, 9}), rnd({4, 9}), Tensor()});
    require_gradcheck(lin, {rnd({6}), rnd({3, 6}), rnd({3})});
}

TEST_CASE("matmul and linear: values and float32", "[linear]") {
    default_generator().manual_seed(2);
    Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
    Tensor b = from_vector({1, 0, 0, 1, 1, 1}, {3, 2}, DType::F64);
    REQUIRE(matmul(a, b).to_vector() == std::vector<double>{4, 5, 10, 11});
    Tensor w = from_vector({1, 0, 1, 0, 1, 0}, {2, 3}, DType::F64);  // rows: x0 + x2, x1
    Tensor bias = from_vector({10, 20}, {2}, DType::F64);
    REQUIRE(linear(a, w, bias).to_vector() == std::vector<double>{14, 22, 20, 25});
    auto lin = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
    REQUIRE(forward_f32_vs_f64(lin, {rnd({4, 5, 48}), rnd({33, 48}), rnd({33})}) <= 1e-5);
    auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
    REQUIRE(forward_f32_vs_f64(mm, {rnd({2, 7, 40}), rnd({40, 9})}) <= 1e-5);
}

TEST_CASE("linear: only inputs that require grad get one", "[linear]") {
    default_generator().manual_seed(3);
    Tensor x = rnd({4, 6}, DType::F32), w = rnd({3, 6}, DType::F32).requires_grad_(), b = rnd({3}, DType::F32);
    Tensor y = linear(x, w, b);
    y.backward(ones(y.shape()));
    REQUIRE(w.grad().defined());
    REQUIRE_FALSE(x.grad().defined());
    REQUIRE_FALSE(b.grad().defined());
}

TEST_CASE("conv2d: gradcheck", "[conv2d]") {
    default_generator().manual_seed(4);
    SECTION("patchify 4x4/4, odd W (trailing column ignored), bias") {
        require_gradcheck(conv_fn(4, 0, 1), {rnd({2, 8, 9, 3}), rnd({5, 3, 4, 4}), rnd({5})});
    }
    SECTION("patchify 2x2/2, odd H and W, no bias") {
        require_gradcheck(conv_fn(2, 0, 1), {rnd({2, 5, 7, 6}), rnd({4, 6, 2, 2}), Tensor()});
    }
    SECTION("1x1 (patchify without a copy)") {
        require_gradcheck(conv_fn(1, 0, 1), {rnd({2, 3, 5, 7}), rnd({5, 7, 1, 1}), rnd({5})});
    }
    SECTION("im2col 3x3 pad 1") {
        require_gradcheck(conv_fn(1, 1, 1), {rnd({2, 5, 7, 3}), rnd({4, 3, 3, 3}), rnd({4})});
    }
    SECTION("im2col 3x3 stride 2 pad 1, no bias") {
        require_gradcheck(conv_fn(2, 1, 1), {rnd({1, 7, 5, 4}), rnd({6, 4, 3, 3}), Tensor()});
    }
    SECTION("im2col 7x7 pad 3") {
        require_gradcheck(conv_fn(1, 3, 1), {rnd({1, 7, 6, 3}), rnd({2, 3, 7, 7}), rnd({2})});
    }
    SECTION("groups 2, stride 2, pad 1") {
        require_gradcheck(conv_fn(2, 1, 2), {rnd({2, 5, 6, 6}), rnd({4, 3, 3, 3}), rnd({4})});
    }
    SECTION("groups 3, 3x2 kernel, pad 1") {
        require_gradcheck(conv_fn(1, 1, 3), {rnd({1, 6, 5, 6}), rnd({9, 2, 3, 2}), Tensor()});
    }
    SECTION("kernel == stride but padded goes through im2col") {
        require_gradcheck(conv_fn(2, 1, 1), {rnd({1, 5, 4, 3}), rnd({3, 3, 2, 2}), rnd({3})});
    }
    SECTION("groups == C dispatches to depthwise") {
        require_gradcheck(conv_fn(1, 3, 5), {rnd({1, 7, 6, 5}), rnd({5, 1, 7, 7}), rnd({5})});
    }
}

TEST_CASE("conv2d: optimised forward matches the reference", "[conv2d]") {
    default_generator().manual_seed(5);
    SECTION("patchify stem 4x4/4") {
        require_matches_ref(conv_fn(4, 0, 1), ref_conv_fn(4, 0, 1),
                            {rnd({2, 18, 17, 3}), rnd({24, 3, 4, 4}), rnd({24})});
    }
    SECTION("patchify downsample 2x2/2") {
        require_matches_ref(conv_fn(2, 0, 1), ref_conv_fn(2, 0, 1),
                            {rnd({2, 9, 10, 20}), rnd({40, 20, 2, 2}), Tensor()});
    }
    SECTION("1x1") {
        require_matches_ref(conv_fn(1, 0, 1), ref_conv_fn(1, 0, 1),
                            {rnd({2, 5, 6, 20}), rnd({13, 20, 1, 1}), rnd({13})});
    }
    SECTION("im2col 3x3/2 pad 1") {
        require_matches_ref(conv_fn(2, 1, 1), ref_conv_fn(2, 1, 1),
                            {rnd({2, 11, 9, 10}), rnd({12, 10, 3, 3}), rnd({12})});
    }
    SECTION("im2col 5x5 pad 2 groups 4") {
        require_matches_ref(conv_fn(1, 2, 4), ref_conv_fn(1, 2, 4), {rnd({1, 9, 8, 12}), rnd({8, 3, 5, 5}), rnd({8})});
    }
    SECTION("depthwise through conv2d") {
        require_matches_ref(conv_fn(1, 3, 24), ref_conv_fn(1, 3, 24),
                            {rnd({2, 10, 9, 24}), rnd({24, 1, 7, 7}), rnd({24})});
    }
}

TEST_CASE("conv2d: backward adjoint at larger sizes", "[conv2d]") {
    default_generator().manual_seed(6);
    require_adjoint(conv_fn(4, 0, 1), ref_conv_fn(4, 0, 1), rnd({2, 18, 17, 3}), rnd({24, 3, 4, 4}));
    require_adjoint(conv_fn(2, 0, 1), ref_conv_fn(2, 0, 1), rnd({2, 9, 10, 20}), rnd({40, 20, 2, 2}));
    require_adjoint(conv_fn(1, 0, 1), ref_conv_fn(1, 0, 1), rnd({2, 5, 6, 20}), rnd({13, 20, 1, 1}));
    require_adjoint(conv_fn(2, 1, 1), ref_conv_fn(2, 1, 1), rnd({2, 11, 9, 10}), rnd({12, 10, 3, 3}));
    require_adjoint(conv_fn(2, 2, 4), ref_conv_fn(2, 2, 4), rnd({1, 9, 8, 12}), rnd({8, 3, 5, 5}));
}

// The 2x2 downsample's weight repack has a vector path in float32 when Cin is a multiple of 16
// (ConvNeXt's 96, 192, 384), forward [Cin, 4] -> [4, Cin] and backward the other way: checked
// against the float64 route, which takes the element loop.
TEST_CASE("conv2d: 2x2 downsample in float32 at vector channel counts", "[conv2d]") {
    default_generator().manual_seed(61);
    for (int64_t cin : {16, 48, 40}) {
        INFO("Cin " << cin);
        Tensor x = rnd({2, 6, 7, cin}), w = rnd({24, cin, 2, 2}), b = rnd({24});
        require_matches_ref(conv_fn(2, 0, 1), ref_conv_fn(2, 0, 1), {x, w, b});
        Tensor x32 = x.to(DType::F32).requires_grad_(), w32 = w.to(DType::F32).requires_grad_();
        Tensor x64 = x.clone().requires_grad_(), w64 = w.clone().requires_grad_();
        Tensor v = rnd({2, 3, 3, 24});
        conv2d(x32, w32, Tensor(), 2, 0, 1).backward(v.to(DType::F32));
        conv2d(x64, w64, Tensor(), 2, 0, 1).backward(v);
        REQUIRE(max_rel_diff(w32.grad(), w64.grad()) <= 2e-5);
        REQUIRE(max_rel_diff(x32.grad(), x64.grad()) <= 2e-5);
    }
}

TEST_CASE("conv2d: skips gradients nobody asked for", "[conv2d]") {
    default_generator().manual_seed(7);
    Tensor x = rnd({2, 8, 8, 3}, DType::F32);  // the stem's image: no dx
    Tensor w = rnd({6, 3, 4, 4}, DType::F32).requires_grad_(), b = rnd({6}, DType::F32).requires_grad_();
    Tensor y = conv2d(x, w, b, 4, 0, 1);
    y.backward(ones(y.shape()));
    REQUIRE(w.grad().defined());
    REQUIRE(b.grad().defined());
    REQUIRE_FALSE(x.grad().defined());
    // db = column sums of dy = N*Ho*Wo
    for (double v : b.grad().to_vector()) REQUIRE(v == 8.0);
}

TEST_CASE("depthwise_conv2d: gradcheck", "[depthwise]") {
    default_generator().manual_seed(8);
    SECTION("7x7 pad 3 (ConvNeXt), odd H and W, batch 2, bias") {
        require_gradcheck(dw_fn(1, 3), {rnd({2, 9, 7, 5}), rnd({5, 1, 7, 7}), rnd({5})});
    }
    SECTION("7x7 pad 3, 9 channels (a vector tile plus a channel tail in float64)") {
        require_gradcheck(dw_fn(1, 3), {rnd({1, 5, 9, 9}), rnd({9, 1, 7, 7}), rnd({9})});
    }
    SECTION("3x3 stride 2 pad 1, 11 channels, no bias") {
        require_gradcheck(dw_fn(2, 1), {rnd({2, 7, 6, 11}), rnd({11, 1, 3, 3}), Tensor()});
    }
    SECTION("5x5 no padding, kernel as large as the input") {
        require_gradcheck(dw_fn(1, 0), {rnd({1, 5, 6, 3}), rnd({3, 1, 5, 5}), rnd({3})});
    }
    SECTION("padding larger than k - 1") {
        require_gradcheck(dw_fn(1, 3), {rnd({1, 4, 5, 3}), rnd({3, 1, 3, 3}), rnd({3})});
    }
    SECTION("3x3 stride 3 pad 1") { require_gradcheck(dw_fn(3, 1), {rnd({2, 8, 7, 4}), rnd({4, 1, 3, 3}), rnd({4})}); }
}

TEST_CASE("depthwise_conv2d: optimised forward matches the reference", "[depthwise]") {
    default_generator().manual_seed(9);
    require_matches_ref(dw_fn(1, 3), ref_dw_fn(1, 3), {rnd({2, 14, 13, 40}), rnd({40, 1, 7, 7}), rnd({40})});
    require_matches_ref(dw_fn(1, 3), ref_dw_fn(1, 3), {rnd({1, 9, 23, 96}), rnd({96, 1, 7, 7}), Tensor()});
    require_matches_ref(dw_fn(2, 1), ref_dw_fn(2, 1), {rnd({2, 9, 12, 19}), rnd({19, 1, 3, 3}), rnd({19})});
    require_matches_ref(dw_fn(1, 0), ref_dw_fn(1, 0), {rnd({1, 3, 17, 35}), rnd({35, 1, 3, 5}), rnd({35})});
    // Border tiles (they skip the padding columns instead of copying a padded window): widths
    // narrower than the 7 taps (ConvNeXt-atto's last stages at 32x32 are 2x2 and 1x1), one tile
    // touching both borders, and a last tile of one column.
    for (int64_t w : {1, 2, 3, 8, 17})
        require_matches_ref(dw_fn(1, 3), ref_dw_fn(1, 3), {rnd({2, w, w, 24}), rnd({24, 1, 7, 7}), rnd({24})});
}

TEST_CASE("depthwise_conv2d: backward adjoint at larger sizes", "[depthwise]") {
    default_generator().manual_seed(10);
    require_adjoint(dw_fn(1, 3), ref_dw_fn(1, 3), rnd({2, 14, 13, 40}), rnd({40, 1, 7, 7}));
    require_adjoint(dw_fn(1, 3), ref_dw_fn(1, 3), rnd({1, 9, 23, 96}), rnd({96, 1, 7, 7}));
    require_adjoint(dw_fn(2, 1), ref_dw_fn(2, 1), rnd({2, 9, 12, 19}), rnd({19, 1, 3, 3}));
    require_adjoint(dw_fn(1, 0), ref_dw_fn(1, 0), rnd({1, 3, 17, 35}), rnd({35, 1, 3, 5}));
    require_adjoint(dw_fn(1, 3), ref_dw_fn(1, 3), rnd({1, 5, 9, 20}), rnd({20, 1, 3, 3}));  // padding > k - 1
    for (int64_t w : {1, 2, 8, 17}) require_adjoint(dw_fn(1, 3), ref_dw_fn(1, 3), rnd({2, w, w, 24}), rnd({24, 1, 7, 7}));
}

TEST_CASE("conv ops: float32 agrees with float64", "[conv2d][depthwise]") {
    default_generator().manual_seed(11);
    REQUIRE(forward_f32_vs_f64(conv_fn(4, 0, 1), {rnd({2, 16, 12, 3}), rnd({16, 3, 4, 4}), rnd({16})}) <= 1e-5);
    REQUIRE(forward_f32_vs_f64(conv_fn(2, 1, 2), {rnd({2, 9, 8, 8}), rnd({6, 4, 3, 3}), rnd({6})}) <= 1e-5);
    REQUIRE(forward_f32_vs_f64(dw_fn(1, 3), {rnd({2, 12, 11, 48}), rnd({48, 1, 7, 7}), rnd({48})}) <= 1e-5);
}

// The float32 backward has its own vector tiles (the depthwise weight gradient's explicit
// AVX-512 one among them); the float64 one, checked against finite differences, is the reference.
TEST_CASE("conv ops: float32 gradients agree with float64", "[conv2d][depthwise]") {
    default_generator().manual_seed(12);
    struct Case {
        TensorFn f;
        Shape x, w, b;
    };
    const std::vector<Case> cases = {
        {dw_fn(1, 3), {2, 12, 21, 48}, {48, 1, 7, 7}, {48}},  // interior and border tiles, 3 vectors
        {dw_fn(1, 3), {3, 7, 7, 40}, {40, 1, 7, 7}, {40}},    // one border tile, a half-vector tail
        {dw_fn(1, 3), {2, 3, 2, 16}, {16, 1, 7, 7}, {16}},    // widths 2 and 1: padding on both sides
        {dw_fn(1, 3), {2, 4, 1, 16}, {16, 1, 7, 7}, {16}},
        {dw_fn(1, 3), {1, 5, 10, 16}, {16, 1, 7, 7}, {16}},   // a tile past the right edge only
        {dw_fn(1, 1), {2, 9, 19, 32}, {32, 1, 3, 3}, {32}},
        {conv_fn(2, 0, 1), {2, 8, 6, 32}, {16, 32, 2, 2}, {16}},
    };
    for (size_t k = 0; k < cases.size(); ++k) {
        INFO("case " << k);
        const Case& c = cases[k];
        Tensor x = rnd(c.x), w = rnd(c.w), b = rnd(c.b);
        Tensor x64 = x.clone().requires_grad_(), w64 = w.clone().requires_grad_(), b64 = b.clone().requires_grad_();
        Tensor x32 = x.to(DType::F32).requires_grad_(), w32 = w.to(DType::F32).requires_grad_(),
               b32 = b.to(DType::F32).requires_grad_();
        Tensor y64 = c.f({x64, w64, b64});
        Tensor v = rnd(y64.shape());
        y64.backward(v);
        c.f({x32, w32, b32}).backward(v.to(DType::F32));
        REQUIRE(max_rel_diff(x32.grad(), x64.grad()) <= 1e-5);
        REQUIRE(max_rel_diff(w32.grad(), w64.grad()) <= 1e-5);
        REQUIRE(max_rel_diff(b32.grad(), b64.grad()) <= 1e-5);
    }
}

TEST_CASE("conv ops: shape and dtype errors name the op and the shapes", "[conv2d][depthwise][linear]") {
    Tensor x = zeros({1, 8, 8, 3});
    REQUIRE_THROWS_WITH(conv2d(zeros({8, 8, 3}), zeros({4, 3, 3, 3})),
                        Catch::Contains("conv2d") && Catch::Contains("float32[8,8,3]"));
    REQUIRE_THROWS_WITH(conv2d(x, zeros({4, 5, 3, 3})),
                        Catch::Contains("conv2d") && Catch::Contains("[1,8,8,3]") && Catch::Contains("[4,5,3,3]"));
    REQUIRE_THROWS_WITH(conv2d(x, zeros({4, 3, 3, 3}), zeros({5})),
                        Catch::Contains("bias [5]") && Catch::Contains("[4,3,3,3]"));
    REQUIRE_THROWS_WITH(conv2d(x, zeros({4, 3, 11, 11}), Tensor(), 1, 1),
                        Catch::Contains("kernel 11x11") && Catch::Contains("padded input 10x10"));
    REQUIRE_THROWS_WITH(conv2d(x, zeros({4, 3, 3, 3}, DType::F64)),
                        Catch::Contains("dtype mismatch") && Catch::Contains("float64[4,3,3,3]"));
    REQUIRE_THROWS_WITH(conv2d(zeros({1, 8, 8, 4}), zeros({6, 2, 3, 3}), Tensor(), 1, 0, 3),
                        Catch::Contains("groups=3"));
    REQUIRE_THROWS_WITH(depthwise_conv2d(x, zeros({4, 1, 7, 7}), Tensor(), 1, 3), Catch::Contains("depthwise_conv2d") &&
                                                                                      Catch::Contains("[1,8,8,3]") &&
                                                                                      Catch::Contains("[4,1,7,7]"));
    REQUIRE_THROWS_WITH(depthwise_conv2d(zeros({1, 3, 3, 2}), zeros({2, 1, 7, 7}), Tensor(), 1, 1),
                        Catch::Contains("kernel 7x7") && Catch::Contains("padded input 5x5"));
    REQUIRE_THROWS_WITH(linear(zeros({2, 5}), zeros({3, 4})),
                        Catch::Contains("linear") && Catch::Contains("[2,5]") && Catch::Contains("[3,4]"));
    REQUIRE_THROWS_WITH(linear(zeros({2, 4}), zeros({3, 4}), zeros({4})), Catch::Contains("bias [4]"));
    REQUIRE_THROWS_WITH(matmul(zeros({2, 3, 4}), zeros({5, 6})),
                        Catch::Contains("matmul") && Catch::Contains("[2,3,4]") && Catch::Contains("[5,6]"));
}
