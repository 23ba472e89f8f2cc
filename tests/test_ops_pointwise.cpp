// Pointwise, normalisation, reduction, shape and loss ops: one float64 gradcheck line per case,
// known values, the optimised layer norm against its reference, the deterministic column sums,
// drop path statistics, float32 against float64, and the error messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/column_sum.h"
#include "ops/gemm.h"
#include "ops/ops.h"
#include "op_check.h"

using namespace cnx;

namespace {

Generator& gen() {
    static Generator g(20240611);
    return g;
}
Tensor rn(const Shape& s) { return randn(s, DType::F64, &gen()); }
// Values in [lo, hi): divisors kept away from zero.
Tensor ru(const Shape& s, double lo, double hi) { return add(mul(rand(s, DType::F64, &gen()), hi - lo), lo); }

using op_check::grad_ok;
using op_check::max_abs_diff;
void f32_ok(const std::string& what, const TensorFn& fn, const std::vector<Tensor>& inputs, double tol = 2e-5) {
    op_check::f32_ok(what, fn, inputs, tol);
}

}  // namespace

TEST_CASE("gradcheck: layer_norm", "[pointwise][gradcheck]") {
    auto ln = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-6); };
    grad_ok("ln [2,3,5,7] affine", ln, {rn({2, 3, 5, 7}), rn({7}), rn({7})});
    grad_ok("ln [3,13] no affine", ln, {rn({3, 13}), Tensor(), Tensor()});
    grad_ok("ln [4,9] weight only", ln, {rn({4, 9}), rn({9}), Tensor()});
    grad_ok("ln [5,19] bias only, eps 1e-5",
            [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-5); },
            {rn({5, 19}), Tensor(), rn({19})});
}

TEST_CASE("gradcheck: gelu both forms", "[pointwise][gradcheck]") {
    grad_ok("gelu erf", [](const std::vector<Tensor>& x) { return gelu(x[0]); }, {mul(rn({2, 3, 4, 5}), 2.0)});
    grad_ok("gelu tanh", [](const std::vector<Tensor>& x) { return gelu(x[0], true); }, {mul(rn({2, 3, 4, 5}), 2.0)});
}

TEST_CASE("gradcheck: drop_path", "[pointwise][gradcheck]") {
    grad_ok("drop_path p=0.3 train",
            [](const std::vector<Tensor>& x) { return drop_path(x[0], 0.3, true); }, {rn({7, 3, 4, 5})});
    grad_ok("drop_path p=0.5 train [9,11]",
            [](const std::vector<Tensor>& x) { return drop_path(x[0], 0.5, true); }, {rn({9, 11})});
    grad_ok("drop_path eval", [](const std::vector<Tensor>& x) { return drop_path(x[0], 0.3, false); },
            {rn({3, 5})});
}

TEST_CASE("gradcheck: broadcasting add/sub/mul/div", "[pointwise][gradcheck]") {
    struct Case {
        const char* name;
        Shape a, b;
    };
    const Case cases[] = {
        {"same shape", {2, 3, 5}, {2, 3, 5}},
        {"[...,C] op [C]", {2, 3, 4, 13}, {13}},
        {"[C] op [...,C]", {13}, {2, 3, 4, 13}},
        {"both broadcast", {2, 1, 4, 1}, {3, 1, 5}},
        {"rank 0 op tensor", {}, {3, 4}},
        {"tensor op [1,1]", {3, 4}, {1, 1}},
        {"middle dim", {2, 3, 5}, {2, 1, 5}},
    };
    for (const Case& c : cases) {
        std::string n = c.name;
        grad_ok("add " + n, [](const std::vector<Tensor>& x) { return add(x[0], x[1]); }, {rn(c.a), rn(c.b)});
        grad_ok("sub " + n, [](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }, {rn(c.a), rn(c.b)});
        grad_ok("mul " + n, [](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }, {rn(c.a), rn(c.b)});
        grad_ok("div " + n, [](const std::vector<Tensor>& x) { return div(x[0], x[1]); },
                {rn(c.a), ru(c.b, 0.5, 2.0)});
    }
    // Only one side requiring grad.
    GradcheckOptions only_b;
    only_b.check_inputs = {1};
    GradcheckResult r = gradcheck([](const std::vector<Tensor>& x) { return div(x[0], x[1]); },
                                  {rn({4, 6}), ru({6}, 0.5, 2.0)}, only_b);
    CHECK(r.pass);
}

TEST_CASE("gradcheck: scalar ops, neg, channel_scale", "[pointwise][gradcheck]") {
    grad_ok("add scalar", [](const std::vector<Tensor>& x) { return add(x[0], 2.5); }, {rn({3, 7})});
    grad_ok("mul scalar", [](const std::vector<Tensor>& x) { return mul(x[0], -1.5); }, {rn({3, 7})});
    grad_ok("neg", [](const std::vector<Tensor>& x) { return neg(x[0]); }, {rn({2, 5})});
    grad_ok("channel_scale [2,3,4,13]", [](const std::vector<Tensor>& x) { return channel_scale(x[0], x[1]); },
            {rn({2, 3, 4, 13}), rn({13})});
    grad_ok("channel_scale [5,1]", [](const std::vector<Tensor>& x) { return channel_scale(x[0], x[1]); },
            {rn({5, 1}), rn({1})});
}

TEST_CASE("gradcheck: sum, mean, global_avg_pool", "[pointwise][gradcheck]") {
    using D = std::vector<int64_t>;
    const D dimsets[] = {{}, {1}, {-1}, {0, 2}, {1, 3}, {0, 1, 2, 3}};
    for (const D& d : dimsets)
        for (bool keep : {false, true}) {
            std::string n = "dims " + shape_str(Shape(d.begin(), d.end())) + (keep ? " keepdim" : "");
            grad_ok("sum " + n, [d, keep](const std::vector<Tensor>& x) { return sum(x[0], d, keep); },
                    {rn({2, 3, 4, 5})});
            grad_ok("mean " + n, [d, keep](const std::vector<Tensor>& x) { return mean(x[0], d, keep); },
                    {rn({2, 3, 4, 5})});
        }
    grad_ok("sum over a size-1 dim", [](const std::vector<Tensor>& x) { return sum(x[0], {1}); }, {rn({3, 1, 4})});
    grad_ok("global_avg_pool", [](const std::vector<Tensor>& x) { return global_avg_pool(x[0]); },
            {rn({2, 3, 5, 7})});
}

TEST_CASE("gradcheck: permute and transpose", "[pointwise][gradcheck]") {
    grad_ok("permute 0231", [](const std::vector<Tensor>& x) { return permute(x[0], {0, 2, 3, 1}); },
            {rn({2, 3, 4, 5})});
    grad_ok("permute 3102", [](const std::vector<Tensor>& x) { return permute(x[0], {3, 1, 0, 2}); },
            {rn({2, 3, 4, 5})});
    grad_ok("transpose 1,-1", [](const std::vector<Tensor>& x) { return transpose(x[0], 1, -1); },
            {rn({2, 3, 5})});
    grad_ok("nchw_to_nhwc", [](const std::vector<Tensor>& x) { return nchw_to_nhwc(x[0]); }, {rn({2, 3, 4, 5})});
}

TEST_CASE("gradcheck: softmax, log_softmax, cross_entropy", "[pointwise][gradcheck]") {
    for (int64_t d : {-1, 0, 1}) {
        grad_ok("softmax dim " + std::to_string(d), [d](const std::vector<Tensor>& x) { return softmax(x[0], d); },
                {rn({3, 4, 5})});
        grad_ok("log_softmax dim " + std::to_string(d),
                [d](const std::vector<Tensor>& x) { return log_softmax(x[0], d); }, {rn({3, 4, 5})});
    }
    std::vector<int64_t> t = {2, 0, 6, 3, 6};
    for (double s : {0.0, 0.1})
        grad_ok("cross_entropy smoothing " + std::to_string(s),
                [t, s](const std::vector<Tensor>& x) { return cross_entropy(x[0], t, s); }, {mul(rn({5, 7}), 2.0)});
    Tensor soft = softmax(rn({5, 7}));
    grad_ok("cross_entropy soft targets (both inputs)",
            [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); }, {rn({5, 7}), soft});
}

TEST_CASE("known values", "[pointwise]") {
    Tensor one = full({1}, 1.0, DType::F64);
    CHECK(gelu(one).item() == Approx(0.8413447460685429).epsilon(1e-15));
    CHECK(gelu(one, true).item() == Approx(0.8411919906082768).epsilon(1e-15));
    Tensor m25 = full({1}, -2.5, DType::F64);
    CHECK(gelu(m25).item() == Approx(-0.015524163314440398).epsilon(1e-13));
    CHECK(gelu(m25, true).item() == Approx(-0.015084266089998577).epsilon(1e-13));

    // softmax rows sum to one along the normalised dim, and are invariant to a shift.
    Tensor x = mul(rn({3, 4, 5}), 10.0);
    for (int64_t d : {0, 1, 2}) {
        Tensor s = sum(softmax(x, d), {d});
        for (double v : s.to_vector()) CHECK(v == Approx(1.0).epsilon(1e-14));
        CHECK(max_abs_diff(softmax(x, d), softmax(add(x, 1000.0), d)) < 1e-12);
        Tensor ls = log_softmax(x, d);
        for (double v : ls.to_vector()) CHECK(std::isfinite(v));
    }

    // cross-entropy by hand: -log softmax(x)[t], then PyTorch's label smoothing and soft targets.
    Tensor logits = from_vector({1, 2, 3, 0.5, -1, 2.5, -2, 0, 1}, {3, 3}, DType::F64);
    std::vector<int64_t> t = {2, 0, 1};
    double hand = 0;
    auto xv = logits.to_vector();
    for (int n = 0; n < 3; ++n) {
        double lse = std::log(std::exp(xv[n * 3]) + std::exp(xv[n * 3 + 1]) + std::exp(xv[n * 3 + 2]));
        hand += (lse - xv[n * 3 + t[n]]) / 3;
    }
    CHECK(cross_entropy(logits, t).item() == Approx(hand).epsilon(1e-14));
    CHECK(cross_entropy(logits, t).item() == Approx(1.3032654627782851).epsilon(1e-14));  // torch 1.13
    CHECK(cross_entropy(logits, t, 0.1).item() == Approx(1.3421543516671741).epsilon(1e-14));
    Tensor soft = from_vector({0.2, 0.3, 0.5, 1, 0, 0, 0.1, 0.1, 0.8}, {3, 3}, DType::F64);
    CHECK(cross_entropy(logits, soft).item() == Approx(1.3365987961116186).epsilon(1e-14));
    CHECK(cross_entropy(from_vector({1, 2, 3}, {1, 3}, DType::F64), {2}).item() ==
          Approx(0.4076059644443804).epsilon(1e-14));
    // Gradient of the smoothed loss, torch 1.13 values for row 0.
    Tensor l = logits.clone();
    l.requires_grad_(true);
    cross_entropy(l, t, 0.1).backward();
    auto g = l.grad().to_vector();
    CHECK(g[0] == Approx(0.01889907994568236).epsilon(1e-12));
    CHECK(g[1] == Approx(0.07046504590715476).epsilon(1e-12));
    CHECK(g[2] == Approx(-0.08936412585283721).epsilon(1e-12));
    // Hard targets as one-hot soft targets give the same loss.
    Tensor onehot = from_vector({0, 0, 1, 1, 0, 0, 0, 1, 0}, {3, 3}, DType::F64);
    CHECK(cross_entropy(logits, onehot).item() == Approx(hand).epsilon(1e-14));

    // Broadcast backward: [2,3] + [3] sends column sums to b.
    Tensor a = ones({2, 3}, DType::F64), b = ones({3}, DType::F64);
    a.requires_grad_(true);
    b.requires_grad_(true);
    sum(mul(add(a, b), from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64))).backward();
    CHECK(b.grad().to_vector() == std::vector<double>{5, 7, 9});
    CHECK(a.grad().to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});

    // Reductions: shapes and values.
    Tensor r = arange(24, DType::F64).reshape({2, 3, 4});
    CHECK(sum(r).shape() == Shape{});
    CHECK(sum(r).item() == 276);
    CHECK(mean(r, {}, true).shape() == Shape{1, 1, 1});
    CHECK(sum(r, {0, 2}).to_vector() == std::vector<double>{60, 92, 124});
    CHECK(sum(r, {1}, true).shape() == Shape{2, 1, 4});
    CHECK(mean(r, {-1}).to_vector() == std::vector<double>{1.5, 5.5, 9.5, 13.5, 17.5, 21.5});
    Tensor img = arange(2 * 2 * 2 * 3, DType::F64).reshape({2, 2, 2, 3});
    CHECK(global_avg_pool(img).to_vector() == std::vector<double>{4.5, 5.5, 6.5, 16.5, 17.5, 18.5});
    CHECK(max_abs_diff(global_avg_pool(img), mean(img, {1, 2})) == 0);
    // Float sums of many elements stay accurate (double accumulation).
    Tensor big = full({1000, 1000}, 0.1, DType::F32);
    CHECK(sum(big).item() == Approx(100000.0).epsilon(1e-6));
    CHECK(sum(big, {0}).to_vector()[7] == Approx(100.0).epsilon(1e-6));

    // permute moves elements where they belong.
    Tensor p = permute(r, {2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    auto pv = p.to_vector(), rv = r.to_vector();
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 4; ++k) CHECK(pv[(k * 2 + i) * 3 + j] == rv[(i * 3 + j) * 4 + k]);
    Tensor q = rn({2, 3, 4, 5});
    CHECK(max_abs_diff(nhwc_to_nchw(nchw_to_nhwc(q)), q) == 0);
    CHECK(max_abs_diff(transpose(transpose(q, 0, 3), 3, 0), q) == 0);
}

TEST_CASE("float32 GELU kernels match float64 over the whole range", "[pointwise]") {
    // float32 uses its own vectorised erfc/exp approximations; float64 uses libm.
    const int n = 48001;
    std::vector<double> xs(n);
    for (int i = 0; i < n; ++i) xs[i] = -12.0 + 24.0 * i / (n - 1);
    Tensor x32 = from_vector(xs, {n}, DType::F32);
    Tensor x64 = x32.to(DType::F64);  // the same (rounded) inputs
    for (bool approx : {false, true}) {
        INFO("tanh approximation " << approx);
        Tensor a = x32.clone(), b = x64.clone();
        a.requires_grad_(true);
        b.requires_grad_(true);
        Tensor ya = gelu(a, approx), yb = gelu(b, approx);
        ya.backward(ones({n}));
        yb.backward(ones({n}, DType::F64));
        auto y32 = ya.to_vector(), y64 = yb.to_vector(), g32 = a.grad().to_vector(), g64 = b.grad().to_vector();
        double worst_y = 0, worst_rel = 0, worst_g = 0;
        for (int i = 0; i < n; ++i) {
            worst_y = std::max(worst_y, std::fabs(y32[i] - y64[i]) / std::max(1.0, std::fabs(y64[i])));
            if (xs[i] > -6 && y64[i] != 0)
                worst_rel = std::max(worst_rel, std::fabs(y32[i] - y64[i]) / std::fabs(y64[i]));
            worst_g = std::max(worst_g, std::fabs(g32[i] - g64[i]) / std::max(1.0, std::fabs(g64[i])));
        }
        CHECK(worst_y < 4e-7);    // a few ulps of max(|y|, 1)
        // Relative error down to x = -6, where |y| ~ 1e-8: limited by the float rounding of x^2
        // inside exp(-x^2/2), as in any float erfc.
        CHECK(worst_rel < 1e-5);
        CHECK(worst_g < 4e-7);
    }
    // Extremes stay finite and saturate; NaN propagates.
    Tensor ext = from_vector({-1e30, -50, 50, 1e30}, {4}, DType::F32);
    for (bool approx : {false, true}) {
        Tensor e = ext.clone();
        e.requires_grad_(true);
        Tensor y = gelu(e, approx);
        y.backward(ones({4}));
        CHECK(y.to_vector() == std::vector<double>{0, 0, 50, 1e30f});
        auto g = e.grad().to_vector();
        CHECK(std::fabs(g[0]) < 1e-20);
        CHECK(std::fabs(g[1]) < 1e-20);
        CHECK(g[2] == 1);
        CHECK(g[3] == 1);
        Tensor nan = full({3}, std::nan(""), DType::F32);
        for (double v : gelu(nan, approx).to_vector()) CHECK(std::isnan(v));
    }
}

TEST_CASE("layer_norm kernel matches the reference", "[pointwise]") {
    for (DType dt : {DType::F32, DType::F64}) {
        // Large offset: a one-pass E[x^2] - E[x]^2 would lose the variance in float.
        Tensor x = add(mul(randn({4, 7, 7, 96}, dt, &gen()), 0.5), 300.0);
        Tensor w = randn({96}, dt, &gen()), b = randn({96}, dt, &gen());
        double tol = dt == DType::F32 ? 2e-3 : 1e-10;
        CHECK(max_abs_diff(layer_norm(x, w, b, 1e-6), ref::layer_norm(x, w, b, 1e-6)) < tol);
        CHECK(max_abs_diff(layer_norm(x, Tensor(), Tensor(), 1e-6), ref::layer_norm(x, Tensor(), Tensor(), 1e-6)) <
              tol);
        Tensor y = randn({5, 37}, dt, &gen()), by = randn({37}, dt, &gen());
        CHECK(max_abs_diff(layer_norm(y, Tensor(), by, 1e-5), ref::layer_norm(y, Tensor(), by, 1e-5)) < tol);
    }
    // Normalised rows have mean 0 and variance 1 (biased, as in PyTorch).
    Tensor x = randn({6, 50}, DType::F64, &gen());
    Tensor y = layer_norm(x, Tensor(), Tensor(), 0.0);
    for (double m : mean(y, {1}).to_vector()) CHECK(std::fabs(m) < 1e-14);
    for (double v : mean(mul(y, y), {1}).to_vector()) CHECK(v == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("column reductions do not depend on the thread count", "[pointwise]") {
    Tensor x = randn({8, 14, 14, 96}, DType::F32, &gen());
    Tensor w = randn({96}, DType::F32, &gen()), b = randn({96}, DType::F32, &gen());
    Tensor g = randn(x.shape(), DType::F32, &gen());
    auto run = [&](int threads) {
        set_num_threads(threads);
        Tensor wl = w.clone(), bl = b.clone(), sl = w.clone();
        wl.requires_grad_(true);
        bl.requires_grad_(true);
        sl.requires_grad_(true);
        layer_norm(x, wl, bl, 1e-6).backward(g);
        channel_scale(x, sl).backward(g);
        std::vector<std::vector<double>> r = {wl.grad().to_vector(), bl.grad().to_vector(), sl.grad().to_vector(),
                                              sum(x, {0, 1, 2}).to_vector(), global_avg_pool(x).to_vector()};
        return r;
    };
    auto one = run(1), two = run(2), three = run(3);
    set_num_threads(0);
    CHECK(one == two);
    CHECK(one == three);
}

TEST_CASE("argmax: the first of the largest, as torch.argmax", "[pointwise]") {
    const float a[] = {0.5f, 3.0f, -1.0f, 3.0f};
    CHECK(argmax(a, 4) == 1);
    const double b[] = {-2.0};
    CHECK(argmax(b, 1) == 0);
    const float c[] = {1.0f, std::nanf(""), 2.0f};
    CHECK(argmax(c, 3) == 2);
}

TEST_CASE("column sums: one result for every thread count, double accumulation", "[pointwise]") {
    const int64_t rows = 5000, width = 33;
    Tensor x = randn({rows, width}, DType::F32, &gen());
    const float* xp = x.data<float>();
    auto run = [&](int threads) {
        set_num_threads(threads);
        std::vector<float> out(width), bias(width);
        column_sums<float>(1, rows, width, out.data(), 1.0, [&](int64_t, int64_t r0, int64_t r1, double* acc) {
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t j = 0; j < width; ++j) acc[j] += xp[r * width + j];
        });
        sum_rows<float>(xp, rows, width, bias.data());
        CHECK(out == bias);  // the GEMM layer's bias gradient is the same sum
        return out;
    };
    auto one = run(1), two = run(2), three = run(3);
    set_num_threads(0);
    CHECK(one == two);
    CHECK(one == three);
    for (int64_t j = 0; j < width; ++j) {
        double want = 0;
        for (int64_t r = 0; r < rows; ++r) want += xp[r * width + j];
        CHECK(one[j] == (float)want);  // double accumulation: the float-rounded exact sum
    }
    // No rows: zeros (and a mean of nothing is NaN, as in PyTorch).
    CHECK(sum(zeros({0, 3}), {0}).to_vector() == std::vector<double>{0, 0, 0});
    CHECK(std::isnan(mean(zeros({0, 3}), {0}).to_vector()[0]));
}

TEST_CASE("drop_path behaviour", "[pointwise]") {
    Tensor x = randn({6, 3, 4, 5}, DType::F32, &gen());
    // Identity (the same tensor) in eval and with p = 0.
    CHECK(drop_path(x, 0.3, false).impl() == x.impl());
    CHECK(drop_path(x, 0.0, true).impl() == x.impl());
    // Each sample is either dropped entirely or scaled by 1/keep.
    const double p = 0.3, keep = 1 - p;
    Generator g1(7);
    Tensor y = drop_path(x, p, true, &g1);
    auto xv = x.to_vector(), yv = y.to_vector();
    const int64_t inner = 60;
    int kept = 0, dropped = 0;
    for (int n = 0; n < 6; ++n) {
        bool all_zero = true, all_scaled = true;
        for (int64_t i = n * inner; i < (n + 1) * inner; ++i) {
            all_zero = all_zero && yv[i] == 0;
            all_scaled = all_scaled && std::fabs(yv[i] - xv[i] / keep) <= 1e-6 * std::fabs(xv[i] / keep);
        }
        CHECK(all_zero != all_scaled);
        kept += all_scaled;
        dropped += all_zero;
    }
    CHECK(kept + dropped == 6);
    // The mask comes from the generator: same seed, same mask.
    Generator g2(7);
    CHECK(max_abs_diff(drop_path(x, p, true, &g2), y) == 0);
    // Fraction kept over many samples ~ keep (20000 draws: sd 0.0032, allow 5 sd).
    Generator g3(99);
    Tensor many = drop_path(ones({20000, 2}, DType::F64), p, true, &g3);
    auto mv = many.to_vector();
    double k = 0;
    for (size_t i = 0; i < mv.size(); i += 2) k += mv[i] != 0;
    CHECK(k / 20000 == Approx(keep).margin(0.016));
    // p = 1 drops everything.
    Tensor all = drop_path(x, 1.0, true);
    for (double v : all.to_vector()) CHECK(v == 0);
    // Default generator: reseeding reproduces the mask.
    manual_seed(5);
    Tensor d1 = drop_path(x, 0.5, true);
    manual_seed(5);
    CHECK(max_abs_diff(drop_path(x, 0.5, true), d1) == 0);
}

TEST_CASE("float32 forward agrees with float64", "[pointwise]") {
    using V = std::vector<Tensor>;
    Tensor x = rn({2, 5, 6, 19}), w = rn({19}), b = rn({19});
    f32_ok("layer_norm", [](const V& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b});
    f32_ok("gelu", [](const V& v) { return gelu(v[0]); }, {x});
    f32_ok("gelu tanh", [](const V& v) { return gelu(v[0], true); }, {x});
    f32_ok("drop_path", [](const V& v) { return drop_path(v[0], 0.3, true); }, {x});
    f32_ok("add", [](const V& v) { return add(v[0], v[1]); }, {x, w});
    f32_ok("div", [](const V& v) { return div(v[0], v[1]); }, {x, ru({19}, 0.5, 2)});
    f32_ok("channel_scale", [](const V& v) { return channel_scale(v[0], v[1]); }, {x, w});
    f32_ok("sum", [](const V& v) { return sum(v[0], {0, 1}); }, {x});
    f32_ok("global_avg_pool", [](const V& v) { return global_avg_pool(v[0]); }, {x});
    f32_ok("permute", [](const V& v) { return permute(v[0], {3, 0, 2, 1}); }, {x});
    f32_ok("softmax", [](const V& v) { return softmax(v[0], 2); }, {x});
    f32_ok("log_softmax", [](const V& v) { return log_softmax(v[0]); }, {x});
    Tensor logits = mul(rn({6, 10}), 3.0);
    f32_ok("cross_entropy", [](const V& v) { return cross_entropy(v[0], {1, 2, 3, 9, 0, 5}, 0.1); }, {logits});
    f32_ok("cross_entropy soft", [](const V& v) { return cross_entropy(v[0], v[1]); },
           {logits, softmax(rn({6, 10}))});
}

TEST_CASE("errors name the op and the shapes", "[pointwise][errors]") {
    Tensor a = zeros({8, 56, 56, 96}), b = zeros({8, 28, 28, 96});
    CHECK_THROWS_WITH(add(a, b), "add: shapes [8,56,56,96] and [8,28,28,96] do not broadcast");
    CHECK_THROWS_WITH(mul(zeros({3, 4}), zeros({3})), "mul: shapes [3,4] and [3] do not broadcast");
    CHECK_THROWS_WITH(add(zeros({3}), zeros({3}, DType::F64)), Catch::Contains("dtypes differ"));
    CHECK_THROWS_WITH(channel_scale(zeros({2, 5}), zeros({4})), Catch::Contains("channel_scale"));
    CHECK_THROWS_WITH(layer_norm(zeros({2, 5}), zeros({4}), Tensor()), Catch::Contains("weight float32[4]"));
    CHECK_THROWS_WITH(sum(zeros({2, 5}), {2}), Catch::Contains("sum: dim 2 out of range"));
    CHECK_THROWS_WITH(mean(zeros({2, 5}), {1, -1}), Catch::Contains("more than once"));
    CHECK_THROWS_WITH(permute(zeros({2, 5}), {0, 0}), Catch::Contains("permute"));
    CHECK_THROWS_WITH(permute(zeros({2, 5}), {0}), Catch::Contains("rank"));
    CHECK_THROWS_WITH(transpose(zeros({2, 5}), 0, 2), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(softmax(zeros({2, 5}), 3), Catch::Contains("softmax: dim 3 out of range"));
    CHECK_THROWS_WITH(global_avg_pool(zeros({2, 5})), Catch::Contains("NHWC"));
    CHECK_THROWS_WITH(cross_entropy(zeros({4, 5}), {0, 1, 7, 2}),
                      "cross_entropy: target 7 at index 2 is out of range for 5 classes");
    CHECK_THROWS_WITH(cross_entropy(zeros({4, 5}), {0, 1, -1, 2}), Catch::Contains("target -1 at index 2"));
    CHECK_THROWS_WITH(cross_entropy(zeros({4, 5}), {0, 1}), Catch::Contains("2 targets"));
    CHECK_THROWS_WITH(cross_entropy(zeros({4, 5}), zeros({4, 6})), Catch::Contains("soft targets"));
    CHECK_THROWS_WITH(drop_path(zeros({4, 5}), 1.5, true), Catch::Contains("drop_path"));
}
