// The primitives a new layer is composed from (level 1 of "Extending"): forward values against
// the C++ standard library, backward at the kinks and ties as PyTorch defines them, float64
// gradchecks, broadcasting (ranks, size-1 dims and scalars on either side), shape ops, error
// messages, and ConvNeXt V2's Global Response Normalization composed from them and gradchecked.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "op_check.h"

using namespace cnx;
using V = std::vector<Tensor>;

namespace {

Generator& gen() {
    static Generator g(20250301);
    return g;
}
Tensor rn(const Shape& s) { return randn(s, DType::F64, &gen()); }
Tensor pos(const Shape& s) { return add(rand(s, DType::F64, &gen()), 0.5); }  // [0.5, 1.5)

using op_check::grad_ok;
void f32_ok(const std::string& what, const TensorFn& fn, const V& inputs, double tol = 2e-6) {
    op_check::f32_ok(what, fn, inputs, tol);
}

// The gradient of sum(fn(x) * w) with respect to x, w = ones (or the given weights).
std::vector<double> grad_of(const std::function<Tensor(const Tensor&)>& fn, Tensor x, Tensor w = Tensor()) {
    x = x.clone();
    x.requires_grad_(true);
    Tensor y = fn(x);
    if (!w.defined()) w = ones(y.shape(), y.dtype());
    sum(mul(y, w)).backward();
    return x.grad().to_vector();
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST_CASE("unary primitives match the standard library, float64 and float32", "[primitives]") {
    const std::vector<double> any = {-3.5, -1.0, -0.25, 0.0, 0.3, 1.0, 2.75, 20.0};
    const std::vector<double> positive = {1e-3, 0.25, 1.0, 2.0, 7.5, 1e4};
    struct Case {
        const char* name;
        std::function<Tensor(const Tensor&)> op;
        std::function<double(double)> ref;
        const std::vector<double>* inputs;
    };
    const Case cases[] = {
        {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, &positive},
        {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double v) { return 1 / std::sqrt(v); }, &positive},
        {"pow 3", [](const Tensor& x) { return pow(x, 3.0); }, [](double v) { return std::pow(v, 3.0); }, &any},
        {"pow 0.5", [](const Tensor& x) { return pow(x, 0.5); }, [](double v) { return std::pow(v, 0.5); }, &positive},
        {"pow -2", [](const Tensor& x) { return pow(x, -2.0); }, [](double v) { return std::pow(v, -2.0); },
         &positive},
        {"exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }, &any},
        {"log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }, &positive},
        {"abs", [](const Tensor& x) { return abs(x); }, [](double v) { return std::fabs(v); }, &any},
        {"relu", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0.0; }, &any},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, &any},
        {"tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, &any},
        {"clamp", [](const Tensor& x) { return clamp(x, -1.0, 2.0); },
         [](double v) { return std::min(std::max(v, -1.0), 2.0); }, &any},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        const std::vector<double>& xs = *c.inputs;
        const int64_t n = (int64_t)xs.size();
        auto y64 = c.op(from_vector(xs, {n}, DType::F64)).to_vector();
        auto y32 = c.op(from_vector(xs, {n}, DType::F32)).to_vector();
        for (int64_t i = 0; i < n; ++i) {
            const double want = c.ref(xs[i]);
            CHECK(y64[i] == Approx(want).epsilon(1e-15).margin(1e-300));
            const double x32 = (double)(float)xs[i];
            CHECK(y32[i] == Approx(c.ref(x32)).epsilon(4e-7).margin(1e-30));
        }
    }
    // Saturation without overflow, and NaN passes through.
    auto s = sigmoid(from_vector({-1000, 1000}, {2}, DType::F32)).to_vector();
    CHECK(s == std::vector<double>{0, 1});
    for (auto op : {+[](const Tensor& x) { return relu(x); }, +[](const Tensor& x) { return clamp(x, 0, 1); },
                    +[](const Tensor& x) { return abs(x); }, +[](const Tensor& x) { return sqrt(x); }})
        CHECK(std::isnan(op(full({1}, kNaN, DType::F64)).item()));
    // One-sided clamp with infinite bounds; lo > hi gives hi everywhere, as torch.clamp.
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(clamp(from_vector({-5, 5}, {2}, DType::F64), -inf, 1.0).to_vector() == std::vector<double>{-5, 1});
    CHECK(clamp(from_vector({-5, 5}, {2}, DType::F64), 2.0, 1.0).to_vector() == std::vector<double>{1, 1});
    CHECK_THROWS_WITH(clamp(zeros({2}), kNaN, 1.0), Catch::Contains("clamp: bounds"));
}

TEST_CASE("unary backward at kinks and special points follows PyTorch", "[primitives]") {
    Tensor x = from_vector({-2, -0.0, 0.0, 0.5, 3}, {5}, DType::F64);
    CHECK(grad_of([](const Tensor& t) { return relu(t); }, x) == std::vector<double>{0, 0, 0, 1, 1});
    CHECK(grad_of([](const Tensor& t) { return abs(t); }, x) == std::vector<double>{-1, 0, 0, 1, 1});
    // clamp passes the gradient on the bounds themselves.
    Tensor c = from_vector({-1, -0.5, 0, 0.5, 1}, {5}, DType::F64);
    CHECK(grad_of([](const Tensor& t) { return clamp(t, -0.5, 0.5); }, c) == std::vector<double>{0, 1, 1, 1, 0});
    // pow with exponent 0: the gradient is 0 even at x = 0.
    CHECK(grad_of([](const Tensor& t) { return pow(t, 0.0); }, x) == std::vector<double>{0, 0, 0, 0, 0});
    auto g = grad_of([](const Tensor& t) { return pow(t, 2.0); }, x);
    CHECK(g == std::vector<double>{-4, 0, 0, 1, 6});
    // Derivatives by formula at one point each.
    Tensor p = from_vector({0.7}, {1}, DType::F64);
    CHECK(grad_of([](const Tensor& t) { return sqrt(t); }, p)[0] == Approx(0.5 / std::sqrt(0.7)).epsilon(1e-15));
    CHECK(grad_of([](const Tensor& t) { return rsqrt(t); }, p)[0] ==
          Approx(-0.5 * std::pow(0.7, -1.5)).epsilon(1e-14));
    CHECK(grad_of([](const Tensor& t) { return log(t); }, p)[0] == Approx(1 / 0.7).epsilon(1e-15));
    CHECK(grad_of([](const Tensor& t) { return exp(t); }, p)[0] == Approx(std::exp(0.7)).epsilon(1e-15));
    const double sg = 1 / (1 + std::exp(-0.7));
    CHECK(grad_of([](const Tensor& t) { return sigmoid(t); }, p)[0] == Approx(sg * (1 - sg)).epsilon(1e-14));
    CHECK(grad_of([](const Tensor& t) { return tanh(t); }, p)[0] ==
          Approx(1 - std::tanh(0.7) * std::tanh(0.7)).epsilon(1e-14));
}

TEST_CASE("gradcheck: every primitive on several shapes", "[primitives][gradcheck]") {
    for (const Shape& s : {Shape{7}, Shape{2, 3, 5}, Shape{2, 3, 1, 4}}) {
        const std::string n = shape_str(s);
        grad_ok("sqrt " + n, [](const V& x) { return sqrt(x[0]); }, {pos(s)});
        grad_ok("rsqrt " + n, [](const V& x) { return rsqrt(x[0]); }, {pos(s)});
        grad_ok("pow 2.5 " + n, [](const V& x) { return pow(x[0], 2.5); }, {pos(s)});
        grad_ok("pow 2 " + n, [](const V& x) { return pow(x[0], 2.0); }, {rn(s)});
        grad_ok("exp " + n, [](const V& x) { return exp(x[0]); }, {rn(s)});
        grad_ok("log " + n, [](const V& x) { return log(x[0]); }, {pos(s)});
        grad_ok("abs " + n, [](const V& x) { return abs(x[0]); }, {rn(s)});
        grad_ok("relu " + n, [](const V& x) { return relu(x[0]); }, {rn(s)});
        grad_ok("sigmoid " + n, [](const V& x) { return sigmoid(x[0]); }, {mul(rn(s), 3.0)});
        grad_ok("tanh " + n, [](const V& x) { return tanh(x[0]); }, {rn(s)});
        grad_ok("clamp " + n, [](const V& x) { return clamp(x[0], -0.3, 0.8); }, {rn(s)});
        for (int64_t d = 0; d < (int64_t)s.size(); ++d)
            for (bool keep : {false, true}) {
                const std::string m = n + " dim " + std::to_string(d) + (keep ? " keepdim" : "");
                grad_ok("amax " + m, [d, keep](const V& x) { return amax(x[0], {d}, keep); }, {rn(s)});
                grad_ok("amin " + m, [d, keep](const V& x) { return amin(x[0], {d}, keep); }, {rn(s)});
                if (s[d] > 1)  // (one element: the unbiased variance is 0 / 0)
                    grad_ok("var " + m, [d, keep](const V& x) { return var(x[0], {d}, keep); }, {rn(s)});
            }
        grad_ok("amax all " + n, [](const V& x) { return amax(x[0]); }, {rn(s)});
        grad_ok("var all, correction 0 " + n, [](const V& x) { return var(x[0], {}, false, 0); }, {rn(s)});
    }
    grad_ok("var dims {0,2} [3,4,5]", [](const V& x) { return var(x[0], {0, 2}); }, {rn({3, 4, 5})});
    grad_ok("amin dims {-1,0} [3,4,5]", [](const V& x) { return amin(x[0], {-1, 0}, true); }, {rn({3, 4, 5})});
    grad_ok("composed: log(1 + exp(x)) / sqrt(x^2 + 1)",
            [](const V& x) { return div(log(add(exp(x[0]), 1.0)), sqrt(add(pow(x[0], 2.0), 1.0))); }, {rn({4, 5})});
}

TEST_CASE("float32 forward of the primitives agrees with float64", "[primitives]") {
    Tensor x = rn({3, 5, 7}), p = pos({3, 5, 7}), w = rn({7});
    f32_ok("sqrt", [](const V& v) { return sqrt(v[0]); }, {p});
    f32_ok("rsqrt", [](const V& v) { return rsqrt(v[0]); }, {p});
    f32_ok("pow", [](const V& v) { return pow(v[0], 1.7); }, {p});
    f32_ok("exp", [](const V& v) { return exp(v[0]); }, {x});
    f32_ok("log", [](const V& v) { return log(v[0]); }, {p});
    f32_ok("sigmoid", [](const V& v) { return sigmoid(v[0]); }, {x});
    f32_ok("tanh", [](const V& v) { return tanh(v[0]); }, {x});
    f32_ok("maximum", [](const V& v) { return maximum(v[0], v[1]); }, {x, w});
    f32_ok("amax", [](const V& v) { return amax(v[0], {0, 2}); }, {x});
    f32_ok("var", [](const V& v) { return var(v[0], {1}, true); }, {x});
    f32_ok("expand", [](const V& v) { return expand(v[0], {2, 3, 5, 7}); }, {x});
    f32_ok("cat", [](const V& v) { return cat({v[0], v[0]}, 2); }, {x});
}

TEST_CASE("maximum and minimum: values, NaN, and the gradient split on ties", "[primitives]") {
    Tensor a = from_vector({1, 5, 3, kNaN}, {4}, DType::F64), b = from_vector({2, 4, 3, 0}, {4}, DType::F64);
    auto mx = maximum(a, b).to_vector(), mn = minimum(a, b).to_vector();
    CHECK(mx[0] == 2);
    CHECK(mx[1] == 5);
    CHECK(mx[2] == 3);
    CHECK(std::isnan(mx[3]));
    CHECK(mn[0] == 1);
    CHECK(mn[1] == 4);
    CHECK(std::isnan(mn[3]));
    CHECK(std::isnan(maximum(b, a).to_vector()[3]));  // NaN on either side
    Tensor ta = from_vector({1, 5, 3}, {3}, DType::F64).clone(), tb = from_vector({2, 4, 3}, {3}, DType::F64).clone();
    ta.requires_grad_(true);
    tb.requires_grad_(true);
    sum(maximum(ta, tb)).backward();
    CHECK(ta.grad().to_vector() == std::vector<double>{0, 1, 0.5});
    CHECK(tb.grad().to_vector() == std::vector<double>{1, 0, 0.5});
    ta.zero_grad();
    tb.zero_grad();
    sum(minimum(ta, tb)).backward();
    CHECK(ta.grad().to_vector() == std::vector<double>{1, 0, 0.5});
    CHECK(tb.grad().to_vector() == std::vector<double>{0, 1, 0.5});
    // Broadcast: a scalar threshold's gradient is the count of places it won.
    Tensor x = from_vector({-1, 0.5, 2, 0.5}, {2, 2}, DType::F64), t = full({}, 0.5, DType::F64);
    t.requires_grad_(true);
    sum(maximum(x, t)).backward();
    CHECK(t.grad().item() == 2.0);  // 1 where x = -1, 1/2 each at the two ties
}

TEST_CASE("amax, amin and var: values, ties, keepdim", "[primitives]") {
    Tensor r = from_vector({1, 7, 7, 2, -3, 0, 4, 4, 4, -1, 9, -2}, {2, 2, 3}, DType::F64);
    CHECK(amax(r).item() == 9);
    CHECK(amin(r).item() == -3);
    CHECK(amax(r, {2}).to_vector() == std::vector<double>{7, 2, 4, 9});
    CHECK(amin(r, {0, 2}, true).shape() == Shape{1, 2, 1});
    CHECK(amin(r, {0, 2}, true).to_vector() == std::vector<double>{1, -3});
    CHECK(amax(r, {-1, 1}).to_vector() == std::vector<double>{7, 9});
    CHECK(std::isnan(amax(from_vector({1, kNaN, 3}, {3}, DType::F64)).item()));
    // Ties share the gradient evenly: row 0 has 7 twice, row 2 has 4 three times.
    auto g = grad_of([](const Tensor& t) { return amax(t, {2}); }, r);
    CHECK(g == std::vector<double>{0, 0.5, 0.5, 1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0, 1, 0});
    auto gmin = grad_of([](const Tensor& t) { return amin(t); }, full({2, 2}, 3.0, DType::F64));
    CHECK(gmin == std::vector<double>{0.25, 0.25, 0.25, 0.25});

    // var against a direct computation, unbiased by default as torch.var.
    Tensor x = rn({4, 6, 5});
    auto xv = x.to_vector();
    auto v1 = var(x, {1}).to_vector(), v0 = var(x, {1}, true, 0).to_vector();
    CHECK(var(x, {1}, true).shape() == Shape{4, 1, 5});
    for (int a = 0; a < 4; ++a)
        for (int c = 0; c < 5; ++c) {
            double m = 0, ss = 0;
            for (int k = 0; k < 6; ++k) m += xv[(a * 6 + k) * 5 + c] / 6;
            for (int k = 0; k < 6; ++k) ss += (xv[(a * 6 + k) * 5 + c] - m) * (xv[(a * 6 + k) * 5 + c] - m);
            CHECK(v1[a * 5 + c] == Approx(ss / 5).epsilon(1e-13));
            CHECK(v0[a * 5 + c] == Approx(ss / 6).epsilon(1e-13));
        }
    // Large offset: two passes keep the variance that E[x^2] - E[x]^2 would lose in float.
    Tensor off = add(mul(randn({1000}, DType::F32, &gen()), 0.01), 1000.0);
    CHECK(var(off).item() == Approx(var(off.to(DType::F64)).item()).epsilon(1e-3));
    // One element, unbiased: NaN (0 / 0), as torch.var.
    CHECK(std::isnan(var(full({1}, 2.0, DType::F64)).item()));
    CHECK_THROWS_WITH(amax(zeros({3, 0}), {1}), "amax: cannot reduce over an empty dim of float32[3,0]");
    CHECK_THROWS_WITH(var(zeros({3, 2}), {2}), Catch::Contains("var: dim 2 out of range"));
}

TEST_CASE("broadcasting: ranks, size-1 dims on both sides, scalars on both sides", "[primitives][broadcast]") {
    // Every output element checked against the NumPy rule, by index arithmetic.
    struct Case {
        Shape a, b, out;
    };
    const Case cases[] = {
        {{2, 3, 4}, {4}, {2, 3, 4}},      {{4}, {2, 3, 4}, {2, 3, 4}},       {{2, 1, 4}, {3, 1}, {2, 3, 4}},
        {{3, 1}, {1, 5}, {3, 5}},         {{}, {2, 3}, {2, 3}},              {{2, 3}, {}, {2, 3}},
        {{1, 1}, {3, 2}, {3, 2}},         {{5, 1, 1, 2}, {1, 3, 2}, {5, 1, 3, 2}}, {{2, 0, 3}, {1, 3}, {2, 0, 3}},
    };
    auto index_of = [](const Shape& s, const Shape& out, int64_t flat) {
        // Position in s of output element `flat` (s right-aligned, size-1 dims repeated).
        int64_t idx = 0, stride = 1;
        for (int64_t k = (int64_t)out.size() - 1, j = (int64_t)s.size() - 1; j >= 0; --k, --j) {
            const int64_t coord = (flat / shape_numel(Shape(out.begin() + k + 1, out.end()))) % out[k];
            idx += (s[j] == 1 ? 0 : coord) * stride;
            stride *= s[j];
        }
        return idx;
    };
    for (const Case& c : cases) {
        INFO(shape_str(c.a) << " op " << shape_str(c.b));
        Tensor a = rn(c.a), b = pos(c.b);
        CHECK(broadcast_shapes(c.a, c.b) == c.out);
        auto av = a.to_vector(), bv = b.to_vector();
        struct Op {
            std::function<Tensor(const Tensor&, const Tensor&)> f;
            std::function<double(double, double)> ref;
        };
        const Op ops[] = {
            {[](const Tensor& x, const Tensor& y) { return x + y; }, [](double x, double y) { return x + y; }},
            {[](const Tensor& x, const Tensor& y) { return x - y; }, [](double x, double y) { return x - y; }},
            {[](const Tensor& x, const Tensor& y) { return x * y; }, [](double x, double y) { return x * y; }},
            {[](const Tensor& x, const Tensor& y) { return x / y; }, [](double x, double y) { return x / y; }},
            {[](const Tensor& x, const Tensor& y) { return maximum(x, y); },
             [](double x, double y) { return std::max(x, y); }},
            {[](const Tensor& x, const Tensor& y) { return minimum(x, y); },
             [](double x, double y) { return std::min(x, y); }},
        };
        for (const Op& op : ops) {
            Tensor y = op.f(a, b);
            REQUIRE(y.shape() == c.out);
            auto yv = y.to_vector();
            for (int64_t i = 0; i < (int64_t)yv.size(); ++i)
                CHECK(yv[i] == op.ref(av[index_of(c.a, c.out, i)], bv[index_of(c.b, c.out, i)]));
        }
        if (shape_numel(c.out) > 0)
            grad_ok("maximum " + shape_str(c.a) + " " + shape_str(c.b),
                    [](const V& x) { return maximum(x[0], x[1]); }, {a, rn(c.b)});
    }
    // Scalars on either side: the same values as the rank-0 tensor form, to the bit.
    Tensor x = pos({3, 4});
    Tensor s2 = full({}, 2.0, DType::F64), s1 = full({}, 1.0, DType::F64);
    auto same = [](const Tensor& p, const Tensor& q) { return p.to_vector() == q.to_vector(); };
    CHECK(same(add(x, 2.0), add(x, s2)));
    CHECK(same(add(2.0, x), add(s2, x)));
    CHECK(same(x + 2.0, 2.0 + x));
    CHECK(same(sub(x, 2.0), sub(x, s2)));
    CHECK(same(sub(1.0, x), sub(s1, x)));
    CHECK(same(1.0 - x, sub(s1, x)));
    CHECK(same(x - 1.0, sub(x, s1)));
    CHECK(same(mul(2.0, x), mul(s2, x)));
    CHECK(same(2.0 * x, x * 2.0));
    CHECK(same(div(x, 2.0), div(x, s2)));
    CHECK(same(div(1.0, x), div(s1, x)));
    CHECK(same(1.0 / x, div(s1, x)));
    CHECK(same(x / 2.0, div(x, s2)));
    CHECK(same(maximum(x, 1.0), maximum(x, s1)));
    CHECK(same(minimum(1.0, x), minimum(s1, x)));
    Tensor f = full({2}, 3.0f, DType::F32);
    CHECK((1.0 / f).dtype() == DType::F32);  // the scalar takes the tensor's dtype
    CHECK((1.0 / f).to_vector() == std::vector<double>{1.0f / 3.0f, 1.0f / 3.0f});
    grad_ok("scalar forms", [](const V& v) { return (1.0 - v[0]) / 3.0 + 2.0 / v[0] - (v[0] - 0.5) * 4.0; }, {x});
}

TEST_CASE("binary ops name the op and the shapes that do not broadcast", "[primitives][errors]") {
    Tensor a = zeros({8, 56, 56, 96}), b = zeros({8, 28, 28, 96});
    CHECK_THROWS_WITH(add(a, b), "add: shapes [8,56,56,96] and [8,28,28,96] do not broadcast");
    CHECK_THROWS_WITH(sub(zeros({2, 3}), zeros({2})), "sub: shapes [2,3] and [2] do not broadcast");
    CHECK_THROWS_WITH(mul(zeros({3, 1, 4}), zeros({2, 5})), "mul: shapes [3,1,4] and [2,5] do not broadcast");
    CHECK_THROWS_WITH(div(zeros({4}), zeros({5})), "div: shapes [4] and [5] do not broadcast");
    CHECK_THROWS_WITH(maximum(zeros({2, 3}), zeros({3, 2})), "maximum: shapes [2,3] and [3,2] do not broadcast");
    CHECK_THROWS_WITH(minimum(zeros({7}), zeros({1, 6})), "minimum: shapes [7] and [1,6] do not broadcast");
    CHECK_THROWS_WITH(a / b, Catch::Contains("div: shapes"));
    CHECK_THROWS_WITH(broadcast_shapes({2, 3}, {4}), "broadcast_shapes: shapes [2,3] and [4] do not broadcast");
    CHECK_THROWS_WITH(maximum(zeros({2}), zeros({2}, DType::F64)), Catch::Contains("maximum: dtypes differ"));
    CHECK_THROWS_WITH(div(1.0, Tensor()), "div: undefined input");
    CHECK_THROWS_WITH(sum_to_size(zeros({2, 3}), {4, 3}), "sum_to_size: float32[2,3] cannot be summed to [4,3]");
}

TEST_CASE("shape primitives: values, views, and errors", "[primitives][shape]") {
    Tensor r = arange(24, DType::F64).reshape({2, 3, 4});
    CHECK(reshape(r, {4, -1}).shape() == Shape{4, 6});
    CHECK(reshape(r, {4, -1}).same_storage(r));
    CHECK(unsqueeze(r, 0).shape() == Shape{1, 2, 3, 4});
    CHECK(unsqueeze(r, -1).shape() == Shape{2, 3, 4, 1});
    CHECK(unsqueeze(r, 2).shape() == Shape{2, 3, 1, 4});
    CHECK(squeeze(unsqueeze(r, 1), 1).shape() == Shape{2, 3, 4});
    CHECK(squeeze(r, 0).shape() == Shape{2, 3, 4});  // not size 1: unchanged
    // expand repeats size-1 dims and adds leading ones; -1 keeps a dim.
    Tensor col = from_vector({1, 2, 3}, {3, 1}, DType::F64);
    CHECK(expand(col, {2, 3, 2}).to_vector() == std::vector<double>{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
    CHECK(expand(col, {-1, 4}).shape() == Shape{3, 4});
    CHECK(grad_of([](const Tensor& t) { return expand(t, {2, 3, 2}); }, col) == std::vector<double>{4, 4, 4});
    // narrow / cat / split round trips along every dim.
    for (int64_t d = 0; d < 3; ++d) {
        INFO("dim " << d);
        auto parts = split(r, 2, d);
        CHECK((int64_t)parts.size() == (r.size(d) + 1) / 2);
        CHECK(cat(parts, d).to_vector() == r.to_vector());
        auto uneven = split_with_sizes(r, {1, r.size(d) - 1}, d);
        CHECK(uneven[0].size(d) == 1);
        CHECK(cat(uneven, d - 3).to_vector() == r.to_vector());  // negative dim
    }
    CHECK(narrow(r, 2, 1, 2).to_vector() ==
          std::vector<double>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
    CHECK(cat({col, from_vector({9}, {1, 1}, DType::F64)}).to_vector() == std::vector<double>{1, 2, 3, 9});
    CHECK(split(zeros({0, 2}), 3).size() == 1);
    // cat's gradient goes back to each input in its own shape; split's pieces accumulate.
    Tensor p = rn({2, 3}), q = rn({2, 2});
    p.requires_grad_(true);
    q.requires_grad_(true);
    Tensor w = arange(10, DType::F64).reshape({2, 5});
    sum(mul(cat({p, q}, 1), w)).backward();
    CHECK(p.grad().to_vector() == std::vector<double>{0, 1, 2, 5, 6, 7});
    CHECK(q.grad().to_vector() == std::vector<double>{3, 4, 8, 9});
    Tensor s = rn({5}).clone();
    s.requires_grad_(true);
    auto pieces = split(s, 2);
    sum(add(mul(pieces[0], 2.0), mul(sum(pieces[2]), 3.0))).backward();
    CHECK(s.grad().to_vector() == std::vector<double>{2, 2, 0, 0, 6});  // the scalar is added to both elements

    CHECK_THROWS_WITH(unsqueeze(r, 4), "unsqueeze: dim 4 out of range for float64[2,3,4]");
    CHECK_THROWS_WITH(expand(col, {3, 2, 4}),
                      "expand: cannot expand float64[3,1] to [3,2,4] (dim 1: 3 is neither 2 nor 1)");
    CHECK_THROWS_WITH(expand(r, {3, 4}), Catch::Contains("fewer dims"));
    CHECK_THROWS_WITH(expand(col, {-1, 3, 1}), Catch::Contains("-1 keeps an existing dim only"));
    CHECK_THROWS_WITH(cat({zeros({2, 3}), zeros({3, 3})}, 1), "cat: shapes [2,3] and [3,3] differ outside dim 1");
    CHECK_THROWS_WITH(cat({zeros({2, 3}), zeros({2, 3, 1})}), Catch::Contains("differ outside dim 0"));
    CHECK_THROWS_WITH(cat({zeros({2}), zeros({2}, DType::F64)}), Catch::Contains("cat: dtypes differ"));
    CHECK_THROWS_WITH(cat({}), "cat: no tensors to concatenate");
    CHECK_THROWS_WITH(split_with_sizes(r, {1, 1}, 1), "split: sizes [1,1] add up to 2, not to dim 1 of float64[2,3,4]");
    CHECK_THROWS_WITH(split(r, 0, 1), Catch::Contains("split: split_size 0 must be positive"));
    CHECK_THROWS_WITH(narrow(r, 1, 2, 2), "narrow: [2, 4) is outside dim 1 of float64[2,3,4]");
}

// ConvNeXt V2's Global Response Normalization (Woo et al. 2023), NHWC, written from primitives
// only: the promise of level 1 of "Extending".
Tensor grn_from_primitives(const Tensor& x, const Tensor& gamma, const Tensor& beta) {
    Tensor gx = sqrt(sum(x * x, {1, 2}, true));   // [N,1,1,C]
    Tensor nx = gx / (mean(gx, {-1}, true) + 1e-6);  // [N,1,1,C]
    return gamma * (x * nx) + beta + x;
}

TEST_CASE("GRN composed from primitives: forward by hand and float64 gradcheck", "[primitives][grn]") {
    const int64_t N = 2, H = 3, W = 5, C = 4;
    Tensor x = rn({N, H, W, C}), gamma = rn({1, 1, 1, C}), beta = rn({1, 1, 1, C});
    // Forward against loops over the formula.
    auto xv = x.to_vector(), gv = gamma.to_vector(), bv = beta.to_vector();
    auto yv = grn_from_primitives(x, gamma, beta).to_vector();
    for (int64_t n = 0; n < N; ++n) {
        std::vector<double> g(C, 0.0);
        for (int64_t i = 0; i < H * W; ++i)
            for (int64_t c = 0; c < C; ++c) g[c] += xv[(n * H * W + i) * C + c] * xv[(n * H * W + i) * C + c];
        double gm = 0;
        for (int64_t c = 0; c < C; ++c) gm += std::sqrt(g[c]) / C;
        for (int64_t i = 0; i < H * W; ++i)
            for (int64_t c = 0; c < C; ++c) {
                const int64_t k = (n * H * W + i) * C + c;
                const double nx = std::sqrt(g[c]) / (gm + 1e-6);
                CHECK(yv[k] == Approx(gv[c] * xv[k] * nx + bv[c] + xv[k]).epsilon(1e-13).margin(1e-13));
            }
    }
    grad_ok("GRN w.r.t. x, gamma, beta", [](const V& v) { return grn_from_primitives(v[0], v[1], v[2]); }, {x, gamma, beta});
    grad_ok("GRN [1,7,9,6]", [](const V& v) { return grn_from_primitives(v[0], v[1], v[2]); },
            {rn({1, 7, 9, 6}), rn({1, 1, 1, 6}), rn({1, 1, 1, 6})});
    f32_ok("GRN float32", [](const V& v) { return grn_from_primitives(v[0], v[1], v[2]); }, {x, gamma, beta}, 1e-5);
}

// Level 2: the grn op (ops/grn.cpp, its own kernels and backward) is the same function as the
// composition above, forward and every gradient, in float64 and float32.
TEST_CASE("the grn op equals GRN composed from primitives", "[primitives][grn]") {
    auto both = [](const Tensor& x, const Tensor& gamma, const Tensor& beta, double tol) {
        std::vector<Tensor> op_grads, comp_grads;
        Tensor op_y, comp_y;
        for (int which = 0; which < 2; ++which) {
            Tensor xs = x.clone(), gs = gamma.clone(), bs = beta.clone();
            for (Tensor* t : {&xs, &gs, &bs}) t->requires_grad_(true);
            Tensor y = which == 0 ? grn(xs, gs, bs) : grn_from_primitives(xs, gs, bs);
            Generator wg(99);
            Tensor w = randn(y.shape(), y.dtype(), &wg);
            sum(y * w).backward();
            (which == 0 ? op_y : comp_y) = y.detach();
            (which == 0 ? op_grads : comp_grads) = {xs.grad(), gs.grad(), bs.grad()};
        }
        auto close = [&](const char* what, const Tensor& a, const Tensor& b) {
            INFO(what);
            REQUIRE(a.shape() == b.shape());
            auto av = a.to_vector(), bv = b.to_vector();
            double scale = 1;
            for (double v : bv) scale = std::max(scale, std::fabs(v));
            for (size_t i = 0; i < av.size(); ++i) REQUIRE(std::fabs(av[i] - bv[i]) <= tol * scale);
        };
        close("y", op_y, comp_y);
        close("dx", op_grads[0], comp_grads[0]);
        close("dgamma", op_grads[1], comp_grads[1]);
        close("dbeta", op_grads[2], comp_grads[2]);
    };
    for (DType dt : {DType::F64, DType::F32}) {
        const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
        both(rn({2, 5, 7, 6}).to(dt), rn({1, 1, 1, 6}).to(dt), rn({1, 1, 1, 6}).to(dt), tol);
        both(rn({3, 1, 4, 9}).to(dt), rn({1, 1, 1, 9}).to(dt), rn({1, 1, 1, 9}).to(dt), tol);
        // Large enough for the threaded paths (several chunks per image, several images).
        both(rn({3, 21, 19, 40}).to(dt), rn({1, 1, 1, 40}).to(dt), rn({1, 1, 1, 40}).to(dt), tol);
    }
    // [C]-shaped parameters give [C]-shaped gradients; a channel that is zero in an image has
    // G = 0, where the gradient through G is 0 (as torch.norm's) and nothing is NaN.
    Tensor x = rn({2, 3, 3, 4});
    for (int64_t i = 0; i < 9; ++i) x.data<double>()[i * 4 + 2] = 0.0;
    Tensor gamma = rn({4}), beta = rn({4});
    for (Tensor* t : {&x, &gamma, &beta}) t->requires_grad_(true);
    sum(grn(x, gamma, beta)).backward();
    CHECK(gamma.grad().shape() == Shape{4});
    auto dx = x.grad().to_vector();
    for (double v : dx) CHECK(std::isfinite(v));
    for (int64_t i = 0; i < 9; ++i) CHECK(dx[i * 4 + 2] == 1.0);  // dy * s, s = 1 + gamma * 0

    CHECK_THROWS_WITH(grn(rn({2, 3, 4}), rn({4}), rn({4})), Catch::Contains("grn: input must be NHWC"));
    CHECK_THROWS_WITH(grn(rn({2, 3, 3, 4}), rn({1, 1, 1, 5}), rn({4})),
                      Catch::Contains("grn: gamma float64[1,1,1,5] should hold the 4 channels"));
    CHECK_THROWS_WITH(grn(rn({2, 3, 3, 4}), rn({4}), rn({4}).to(DType::F32)),
                      Catch::Contains("grn: beta") && Catch::Contains("different dtypes"));
}
