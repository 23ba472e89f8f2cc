// The autograd engine (core/autograd.cpp): graph shapes that trip engines up (diamonds, a
// tensor used twice, views), accumulation, no-grad scopes, graph freeing, error messages, and
// a check that gradcheck itself notices a wrong backward.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "ops/ops.h"

using namespace cnx;

namespace {

Tensor leaf(const std::vector<double>& v, const Shape& s) {
    Tensor t = from_vector(v, s, DType::F64);
    t.requires_grad_(true);
    return t;
}

std::vector<double> grad_of(const Tensor& t) {
    REQUIRE(t.grad().defined());
    return t.grad().to_vector();
}

// y = x^2 elementwise with a backward that is off by `factor` (1 = correct). Built directly on
// autograd::record, the way every op in ops/ records its node.
Tensor square_with_factor(const Tensor& x, double factor) {
    Tensor out = Tensor::empty(x.shape(), DType::F64);
    const double* xp = x.data<double>();
    double* op = out.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) op[i] = xp[i] * xp[i];
    if (autograd::needs_grad({x})) {
        Tensor xd = x.detach();
        autograd::record("square_with_factor", out, {x}, [xd, factor](const Tensor& g) -> std::vector<Tensor> {
            Tensor dx = empty_like(g);
            for (int64_t i = 0; i < g.numel(); ++i)
                dx.data<double>()[i] = factor * 2 * xd.data<double>()[i] * g.data<double>()[i];
            return {dx};
        });
    }
    return out;
}

}  // namespace

TEST_CASE("diamond graph: a feeds two branches that meet again", "[autograd]") {
    Tensor a = leaf({1, 2, 3}, {3}), b = leaf({4, 5, 6}, {3}), c = leaf({-1, 0.5, 2}, {3});
    Tensor y = sum(add(mul(a, b), mul(a, c)));  // dy/da = b + c, dy/db = a, dy/dc = a
    y.backward();
    CHECK(grad_of(a) == std::vector<double>{3, 5.5, 8});
    CHECK(grad_of(b) == std::vector<double>{1, 2, 3});
    CHECK(grad_of(c) == std::vector<double>{1, 2, 3});

    // A deeper diamond whose branches have different lengths: z = a*2 + gelu(a*2)*a
    Tensor d = leaf({0.3, -1.2}, {2});
    Tensor t = mul(d, 2.0);
    Tensor z = sum(add(t, mul(gelu(t), d)));
    z.backward();
    auto gd = grad_of(d);
    for (int i = 0; i < 2; ++i) {
        double x = d.to_vector()[i], u = 2 * x;
        double phi = 0.5 * (1 + std::erf(u / std::sqrt(2.0))), pdf = std::exp(-u * u / 2) / std::sqrt(2 * M_PI);
        double expect = 2 + (phi + u * pdf) * 2 * x + 0.5 * u * (1 + std::erf(u / std::sqrt(2.0)));
        CHECK(gd[i] == Approx(expect).epsilon(1e-13));
    }
}

TEST_CASE("a tensor used twice in one op", "[autograd]") {
    Tensor x = leaf({1.5, -2, 3}, {3});
    sum(mul(x, x)).backward();
    CHECK(grad_of(x) == std::vector<double>{3, -4, 6});
    // And in two ops feeding a third.
    Tensor w = leaf({2, 3}, {2});
    sum(div(w, add(w, 1.0))).backward();  // d/dw w/(w+1) = 1/(w+1)^2
    CHECK(grad_of(w)[0] == Approx(1.0 / 9));
    CHECK(grad_of(w)[1] == Approx(1.0 / 16));
}

TEST_CASE("gradients accumulate across backward calls", "[autograd]") {
    Tensor x = leaf({1, 2}, {2});
    sum(mul(x, 2.0)).backward();
    sum(mul(x, 3.0)).backward();
    CHECK(grad_of(x) == std::vector<double>{5, 5});
    x.zero_grad();
    CHECK_FALSE(x.grad().defined());
    sum(mul(x, 4.0)).backward();
    CHECK(grad_of(x) == std::vector<double>{4, 4});
    // The first gradient is copied, so a backward that hands one tensor to two leaves cannot
    // make them alias each other.
    Tensor a = leaf({1, 1}, {2}), b = leaf({1, 1}, {2});
    sum(add(a, b)).backward();
    sum(mul(a, 10.0)).backward();
    CHECK(grad_of(a) == std::vector<double>{11, 11});
    CHECK(grad_of(b) == std::vector<double>{1, 1});
}

TEST_CASE("gradients the engine adds into without a copy are never someone else's", "[autograd]") {
    // add() hands its incoming gradient to both inputs unchanged. With a seed the caller holds,
    // the leaves' gradients must be copies: accumulating into them leaves the seed alone.
    Tensor b = leaf({1, 2}, {2}), c = leaf({3, 4}, {2});
    Tensor seed = from_vector({5, 6}, {2}, DType::F64);
    autograd::backward(add(b, c), seed, false);
    autograd::backward(add(b, c), seed, false);
    CHECK(grad_of(b) == std::vector<double>{10, 12});
    CHECK(grad_of(c) == std::vector<double>{10, 12});
    CHECK(seed.to_vector() == std::vector<double>{5, 6});
    // A residual: h's node gets a gradient from each branch; the sum is formed in place only in
    // a tensor nothing else holds.
    Tensor a = leaf({1, 2}, {2});
    Tensor h = mul(a, 1.0);
    Tensor r = add(h, mul(h, 3.0));
    Tensor seed2 = from_vector({1, -1}, {2}, DType::F64);
    autograd::backward(r, seed2, false);
    CHECK(grad_of(a) == std::vector<double>{4, -4});
    CHECK(seed2.to_vector() == std::vector<double>{1, -1});
}

TEST_CASE("NoGradGuard records nothing", "[autograd]") {
    Tensor x = leaf({1, 2}, {2});
    {
        NoGradGuard guard;
        CHECK_FALSE(autograd::grad_enabled());
        Tensor y = sum(mul(x, x));
        CHECK_FALSE(y.requires_grad());
        CHECK_FALSE(y.grad_fn());
        CHECK_THROWS_WITH(y.backward(), Catch::Contains("does not require grad"));
        {
            NoGradGuard nested;
        }
        CHECK_FALSE(autograd::grad_enabled());  // the inner guard restores "off", not "on"
    }
    CHECK(autograd::grad_enabled());
    Tensor y = sum(mul(x, x));
    CHECK(y.requires_grad());
    CHECK(y.grad_fn());
    // Inputs that do not require grad produce outputs that do not either.
    Tensor c = from_vector({1, 2}, {2}, DType::F64);
    CHECK_FALSE(mul(c, c).requires_grad());
}

TEST_CASE("backward through a reshape view", "[autograd]") {
    Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor v = x.reshape({3, 2});
    CHECK(v.same_storage(x));
    Tensor w = from_vector({1, 10, 100, 1000, 1e4, 1e5}, {3, 2}, DType::F64);
    sum(mul(v, w)).backward();
    CHECK(grad_of(x) == std::vector<double>{1, 10, 100, 1000, 1e4, 1e5});
    CHECK(x.grad().shape() == Shape{2, 3});
    // -1 in a reshape, and a reshape of a reshape.
    Tensor y = leaf({1, 2, 3, 4}, {4});
    sum(mul(y.reshape({2, -1}).reshape({-1}), 3.0)).backward();
    CHECK(grad_of(y) == std::vector<double>{3, 3, 3, 3});
}

TEST_CASE("detach stops the gradient", "[autograd]") {
    Tensor x = leaf({2, 3}, {2});
    Tensor d = x.detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.same_storage(x));
    sum(mul(d, x)).backward();  // only the non-detached factor contributes: grad = d = x
    CHECK(grad_of(x) == std::vector<double>{2, 3});
    // Detaching an intermediate cuts everything below it.
    Tensor a = leaf({1}, {1});
    Tensor mid = mul(a, 5.0);
    Tensor y = add(mul(mid.detach(), a), mul(a, 1.0));  // = 5a*a with the first 5a constant, + a
    sum(y).backward();
    CHECK(grad_of(a) == std::vector<double>{6});
}

TEST_CASE("backward twice needs retain_graph", "[autograd]") {
    Tensor x = leaf({1, 2}, {2});
    Tensor y = sum(mul(x, x));
    y.backward();
    CHECK_THROWS_WITH(y.backward(), Catch::Contains("retain_graph"));
    // A second loss sharing the freed subgraph fails the same way.
    Tensor h = mul(x, x);
    Tensor l1 = sum(h), l2 = sum(mul(h, 2.0));
    l1.backward();
    CHECK_THROWS_WITH(l2.backward(), Catch::Contains("already freed"));

    x.zero_grad();
    Tensor z = sum(mul(x, x));
    z.backward(Tensor(), true);
    z.backward();
    CHECK(grad_of(x) == std::vector<double>{4, 8});
}

TEST_CASE("autograd error messages", "[autograd][errors]") {
    Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor y = mul(x, 2.0);
    CHECK_THROWS_WITH(y.backward(), Catch::Contains("not a scalar"));
    CHECK_THROWS_WITH(y.backward(ones({3, 2}, DType::F64)),
                      "backward: gradient shape [3,2] does not match output shape [2,3]");
    CHECK_THROWS_WITH(from_vector({1}, {1}).requires_grad_(true).reshape({1}).requires_grad_(true),
                      Catch::Contains("only leaf tensors"));
    CHECK_THROWS_WITH(add(x, ones({4}, DType::F64)), "add: shapes [2,3] and [4] do not broadcast");

    // A node whose backward returns a gradient of the wrong shape is named in the error.
    Tensor out = zeros({2, 3}, DType::F64);
    autograd::record("bad_op", out, {x}, [](const Tensor&) -> std::vector<Tensor> {
        return {zeros({3, 2}, DType::F64)};
    });
    CHECK_THROWS_WITH(sum(out).backward(), Catch::Contains("backward of 'bad_op': gradient 0 has shape [3,2]"));
    Tensor out2 = zeros({2, 3}, DType::F64);
    autograd::record("short_op", out2, {x, x}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
    CHECK_THROWS_WITH(sum(out2).backward(), Catch::Contains("'short_op' returned 1 gradients for 2 inputs"));

    // Anomaly mode names the op that produced a non-finite value.
    autograd::set_anomaly_enabled(true);
    CHECK_THROWS_WITH(div(x, zeros({3}, DType::F64)), Catch::Contains("anomaly: op 'div'"));
    autograd::set_anomaly_enabled(false);
    CHECK_NOTHROW(div(x, zeros({3}, DType::F64)));
}

TEST_CASE("gradcheck catches a wrong backward", "[autograd][gradcheck]") {
    Generator g(3);
    Tensor x = randn({3, 4}, DType::F64, &g);
    GradcheckResult good = gradcheck([](const std::vector<Tensor>& v) { return square_with_factor(v[0], 1.0); }, {x});
    CHECK(good.pass);
    CHECK(good.max_rel_err <= 1e-6);
    GradcheckResult bad = gradcheck([](const std::vector<Tensor>& v) { return square_with_factor(v[0], 1.1); }, {x});
    REQUIRE(bad.pass == false);
    CHECK(bad.max_rel_err > 1e-3);
    CHECK_THAT(bad.worst, Catch::Contains("input 0"));
    // Even an error of one part in 10^4 is caught.
    GradcheckResult slight =
        gradcheck([](const std::vector<Tensor>& v) { return square_with_factor(v[0], 1.0001); }, {x});
    CHECK_FALSE(slight.pass);
    // gradcheck leaves the caller's tensors alone.
    CHECK_FALSE(x.requires_grad());
    CHECK_FALSE(x.grad().defined());
}

TEST_CASE("gradcheck: element_stride checks a spread of the elements, and only those", "[autograd][gradcheck]") {
    // An identity whose backward is wrong at element 5 only.
    auto wrong_at_5 = [](const std::vector<Tensor>& v) {
        Tensor out = v[0].detach().clone();
        autograd::record("wrong_at_5", out, {v[0]}, [](const Tensor& g) -> std::vector<Tensor> {
            Tensor d = g.clone();
            d.data<double>()[5] *= 2;
            return {d};
        });
        return out;
    };
    Generator g(5);
    Tensor x = randn({3, 4}, DType::F64, &g);
    GradcheckOptions all;
    GradcheckResult r1 = gradcheck(wrong_at_5, {x}, all);
    CHECK_FALSE(r1.pass);
    CHECK_THAT(r1.worst, Catch::Contains("element 5"));
    GradcheckOptions every5;
    every5.element_stride = 5;  // 0, 5, 10
    CHECK_FALSE(gradcheck(wrong_at_5, {x}, every5).pass);
    GradcheckOptions even;
    even.element_stride = 2;  // 0, 2, ..., 10: misses it
    CHECK(gradcheck(wrong_at_5, {x}, even).pass);
    GradcheckOptions bad;
    bad.element_stride = 0;
    CHECK_THROWS_WITH(gradcheck(wrong_at_5, {x}, bad), Catch::Contains("element_stride must be at least 1"));
}

TEST_CASE("a long chain does not overflow the stack", "[autograd]") {
    // The topological sort is iterative; 20000 nodes deep would overflow a recursive one.
    Tensor x = leaf({1}, {1});
    Tensor y = x;
    for (int i = 0; i < 20000; ++i) y = add(y, 1e-4);
    sum(y).backward();
    CHECK(grad_of(x) == std::vector<double>{1});
    CHECK(y.item() == Approx(3.0));
}

TEST_CASE("retain_grad: an op output gets its gradient, accumulated like a leaf's", "[autograd]") {
    Tensor x = leaf({1, 2, 3}, {3});
    Tensor y = mul(x, 2.0);  // y = 2x, a non-leaf
    CHECK_FALSE(y.retains_grad());
    y.retain_grad();
    y.retain_grad();  // twice is once
    CHECK(y.retains_grad());
    Tensor unused = mul(x, 3.0);
    unused.retain_grad();
    Tensor z = sum(mul(y, y));  // dz/dy = 2y = 4x, dz/dx = 8x
    z.retain_grad();
    z.backward(Tensor(), /*retain_graph=*/true);
    CHECK(grad_of(y) == std::vector<double>{4, 8, 12});
    CHECK(grad_of(x) == std::vector<double>{8, 16, 24});
    CHECK(grad_of(z) == std::vector<double>{1});  // the root: its seed
    CHECK_FALSE(unused.grad().defined());         // no gradient reached it
    // The retained gradient is a copy: what flowed on into x did not change it, nor it x's.
    Tensor gy = y.grad();
    gy.data<double>()[0] = 100;
    CHECK(grad_of(x) == std::vector<double>{8, 16, 24});
    gy.data<double>()[0] = 4;
    z.backward();
    CHECK(grad_of(y) == std::vector<double>{8, 16, 24});
    CHECK(grad_of(x) == std::vector<double>{16, 32, 48});
}

TEST_CASE("retain_grad: through views and diamonds, on leaves, and errors", "[autograd]") {
    Tensor x = leaf({1, 2, 3, 4}, {2, 2});
    Tensor a = mul(x, 1.0);
    a.retain_grad();
    // a feeds two branches (a reshape view and a product) that meet again.
    Tensor v = a.reshape({4});
    v.retain_grad();
    Tensor w = from_vector({1, 10, 100, 1000}, {4}, DType::F64);
    Tensor out = add(sum(mul(v, w)), sum(mul(a, 2.0)));
    out.backward();
    CHECK(grad_of(v) == std::vector<double>{1, 10, 100, 1000});
    CHECK(v.grad().shape() == Shape{4});
    CHECK(grad_of(a) == std::vector<double>{3, 12, 102, 1002});
    CHECK(a.grad().shape() == Shape{2, 2});

    // On a leaf it changes nothing: leaves keep their gradient anyway.
    Tensor l = leaf({5}, {1});
    l.retain_grad();
    CHECK_FALSE(l.retains_grad());
    sum(mul(l, 3.0)).backward();
    CHECK(grad_of(l) == std::vector<double>{3});

    // A retained tensor dropped before backward costs nothing.
    Tensor y = leaf({1, 2}, {2});
    { mul(y, 2.0).retain_grad(); }
    sum(mul(y, 2.0)).backward();
    CHECK(grad_of(y) == std::vector<double>{2, 2});

    CHECK_THROWS_WITH(from_vector({1}, {1}).retain_grad(), Catch::Contains("does not require grad"));
    NoGradGuard ng;
    CHECK_THROWS_WITH(mul(y, 2.0).retain_grad(), Catch::Contains("does not require grad"));
}
