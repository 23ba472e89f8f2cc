// nn: Module bookkeeping (names, order, state_dict, load reports, modes, dtype, aliases, layer
// ids, no-decay flags, forward hooks, meta builds), the layers against direct computations, and
// the initialisers' distributions.
#include <catch2/catch.hpp>
#include <cmath>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/meta.h"
#include "nn/nn.h"
#include "ops/ops.h"
#include "optim/param_groups.h"

using namespace cnx;

namespace {

// Registration order matters: the parameter of the parent is registered AFTER its children,
// yet PyTorch lists a module's own parameters first.
struct Inner : nn::Module {
    std::shared_ptr<nn::Linear> fc;
    Tensor running;
    Inner() : Module("Inner") {
        fc = register_module("fc", std::make_shared<nn::Linear>(3, 2));
        running = register_buffer("running", zeros({2}));
    }
    Tensor forward(const Tensor& x) override { return fc->forward(x); }
};

struct Outer : nn::Module {
    std::shared_ptr<Inner> inner;
    std::shared_ptr<nn::LayerNorm> norm;
    Tensor scale;
    Outer() : Module("Outer") {
        inner = register_module("inner", std::make_shared<Inner>());
        norm = register_module("norm", std::make_shared<nn::LayerNorm>(2));
        scale = register_parameter("scale", ones({2}));
    }
    Tensor forward(const Tensor& x) override { return mul(norm->forward(inner->forward(x)), scale); }
};

std::vector<std::string> names_of(const nn::NamedTensors& v) {
    std::vector<std::string> out;
    for (auto& [n, t] : v) out.push_back(n);
    return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    auto x = a.to_vector(), y = b.to_vector();
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
    return m;
}

}  // namespace

TEST_CASE("named_parameters follow PyTorch's order and carry full dotted names", "[nn][module]") {
    Outer m;
    auto params = m.named_parameters();
    REQUIRE(names_of(params) == std::vector<std::string>{"scale", "inner.fc.weight", "inner.fc.bias", "norm.weight",
                                                          "norm.bias"});
    for (auto& [n, t] : params) {
        CHECK(t.name() == n);
        CHECK(t.requires_grad());
        CHECK(t.is_leaf());
    }
    // The member and the registered entry are the same tensor.
    CHECK(params[1].second.impl() == m.inner->fc->weight.impl());
    CHECK(m.parameters().size() == 5);
    CHECK(m.num_parameters() == 2 + 6 + 2 + 2 + 2);
    CHECK(names_of(m.named_buffers()) == std::vector<std::string>{"inner.running"});
    CHECK(names_of(m.named_parameters(false)) == std::vector<std::string>{"scale"});
    REQUIRE(m.children().size() == 2);
    CHECK(m.named_children()[0].first == "inner");
    auto mods = m.named_modules();
    REQUIRE(mods.size() == 4);
    CHECK(mods[0].first == "");
    CHECK(mods[1].first == "inner");
    CHECK(mods[2].first == "inner.fc");
    CHECK(mods[3].first == "norm");
}

TEST_CASE("state_dict interleaves parameters and buffers per module like PyTorch", "[nn][module]") {
    Outer m;
    // A module's own buffers come before its children's entries, as in torch.nn.Module.state_dict.
    CHECK(names_of(m.state_dict()) == std::vector<std::string>{"scale", "inner.running", "inner.fc.weight",
                                                               "inner.fc.bias", "norm.weight", "norm.bias"});
    CHECK(m.find("inner.running").defined());
    CHECK_FALSE(m.find("inner.nothing").defined());
}

TEST_CASE("registration rejects bad names and clashes", "[nn][module]") {
    nn::Module m;
    CHECK_THROWS_WITH(m.register_parameter("a.b", zeros({1})), Catch::Contains("contains a dot"));
    CHECK_THROWS_WITH(m.register_parameter("", zeros({1})), Catch::Contains("empty"));
    m.register_module("child", std::make_shared<nn::Identity>());
    CHECK_THROWS_WITH(m.register_parameter("child", zeros({1})), Catch::Contains("already a submodule"));
    m.register_parameter("w", zeros({1}));
    CHECK_THROWS_WITH(m.register_module("w", std::make_shared<nn::Identity>()),
                      Catch::Contains("already a parameter"));
    CHECK_THROWS_WITH(m.forward(zeros({1})), Catch::Contains("no single-tensor forward"));
}

TEST_CASE("train/eval are recursive and zero_grad drops gradients", "[nn][module]") {
    Outer m;
    CHECK(m.is_training());
    m.eval();
    CHECK_FALSE(m.is_training());
    CHECK_FALSE(m.inner->fc->is_training());
    m.train();
    CHECK(m.inner->fc->is_training());

    Tensor y = m.forward(randn({4, 3}));
    sum(y).backward();
    for (auto& [n, p] : m.named_parameters()) CHECK(p.grad().defined());
    m.zero_grad();
    for (auto& [n, p] : m.named_parameters()) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("a frozen parameter gets no gradient", "[nn][module]") {
    Outer m;
    m.inner->fc->weight.requires_grad_(false);
    Tensor y = m.forward(randn({4, 3}));
    sum(mul(y, y)).backward();
    CHECK_FALSE(m.inner->fc->weight.grad().defined());
    CHECK(m.inner->fc->bias.grad().defined());
    CHECK(m.num_parameters(true) == m.num_parameters() - 6);
}

TEST_CASE("load_state_dict copies values, converts dtype and reports problems by name", "[nn][module]") {
    Outer a, b;
    for (auto& [n, t] : a.state_dict()) {
        Tensor v = randn(t.shape());
        copy_(t, v);
    }
    SECTION("strict round trip, from float64 values") {
        nn::NamedTensors sd;
        for (auto& [n, t] : a.state_dict()) sd.emplace_back(n, t.to(DType::F64));
        auto report = b.load_state_dict(sd);
        CHECK(report.ok());
        for (auto& [n, t] : b.state_dict()) {
            CHECK(t.dtype() == DType::F32);
            CHECK(max_abs_diff(t, a.find(n)) < 1e-7);
        }
        // Values were copied, not shared.
        CHECK_FALSE(b.inner->fc->weight.same_storage(a.inner->fc->weight));
    }
    SECTION("missing, unexpected and mismatched keys") {
        nn::NamedTensors sd;
        for (auto& [n, t] : a.state_dict())
            if (n != "norm.bias") sd.emplace_back(n, n == "scale" ? zeros({3}) : t.clone());
        sd.emplace_back("extra.weight", zeros({1}));
        Tensor before = b.inner->fc->weight.clone();

        try {
            b.load_state_dict(sd, true);
            FAIL("strict load should throw");
        } catch (const Error& e) {
            std::string msg = e.what();
            CHECK(msg.find("missing key: norm.bias") != std::string::npos);
            CHECK(msg.find("unexpected key: extra.weight") != std::string::npos);
            CHECK(msg.find("shape mismatch for scale: module has [2], state dict has [3]") != std::string::npos);
        }
        // A failed strict load changes nothing.
        CHECK(max_abs_diff(b.inner->fc->weight, before) == 0);

        auto report = b.load_state_dict(sd, false);
        CHECK(report.missing == std::vector<std::string>{"norm.bias"});
        CHECK(report.unexpected == std::vector<std::string>{"extra.weight"});
        REQUIRE(report.mismatched.size() == 1);
        CHECK(report.mismatched[0].name == "scale");
        CHECK(report.mismatched[0].expected == Shape{2});
        CHECK(report.mismatched[0].got == Shape{3});
        CHECK_FALSE(report.ok());
        // The matching entries were loaded, the mismatched one kept its value.
        CHECK(max_abs_diff(b.inner->fc->weight, a.inner->fc->weight) == 0);
        CHECK(b.scale.to_vector() == std::vector<double>{1.0, 1.0});
    }
    SECTION("map overload and duplicate keys") {
        std::map<std::string, Tensor> sd;
        for (auto& [n, t] : a.state_dict()) sd[n] = t.clone();
        CHECK(b.load_state_dict(sd).ok());
        nn::NamedTensors dup = {{"scale", ones({2})}, {"scale", ones({2})}};
        CHECK_THROWS_WITH(b.load_state_dict(dup, false), Catch::Contains("appears twice"));
    }
    SECTION("a braced list of entries") {
        auto report = b.load_state_dict({{"scale", full({2}, 3.0)}, {"norm.bias", full({2}, -1.0)}}, false);
        CHECK(report.unexpected.empty());
        CHECK(report.mismatched.empty());
        CHECK(report.missing.size() == b.state_dict().size() - 2);
        CHECK(b.scale.to_vector() == std::vector<double>{3.0, 3.0});
        CHECK(b.find("norm.bias").to_vector() == std::vector<double>{-1.0, -1.0});
        CHECK_THROWS_WITH(b.load_state_dict({{"scale", ones({2})}, {"scale", ones({2})}}), Catch::Contains("appears twice"));
    }
}

TEST_CASE("Module::to converts every parameter and buffer in place", "[nn][module]") {
    Outer m;
    Tensor w_before = m.inner->fc->weight.clone();
    Tensor handle = m.named_parameters()[1].second;
    m.to(DType::F64);
    for (auto& [n, t] : m.state_dict()) CHECK(t.dtype() == DType::F64);
    CHECK(m.inner->fc->weight.dtype() == DType::F64);
    CHECK(handle.dtype() == DType::F64);  // every handle sees the conversion
    CHECK(max_abs_diff(m.inner->fc->weight.to(DType::F32), w_before) == 0);
    CHECK(m.inner->fc->weight.requires_grad());
    Tensor y = m.forward(randn({2, 3}, DType::F64));
    CHECK(y.dtype() == DType::F64);
}

TEST_CASE("Linear computes x W^T + b with PyTorch's shapes and default init", "[nn][layers]") {
    nn::Linear fc(5, 3);
    CHECK(fc.weight.shape() == Shape{3, 5});
    CHECK(fc.bias.shape() == Shape{3});
    double bound = 1 / std::sqrt(5.0);
    for (double v : fc.weight.to_vector()) CHECK(std::fabs(v) <= bound);
    for (double v : fc.bias.to_vector()) CHECK(std::fabs(v) <= bound);

    Tensor x = randn({2, 4, 5});
    Tensor y = fc.forward(x);
    REQUIRE(y.shape() == Shape{2, 4, 3});
    auto xv = x.to_vector(), wv = fc.weight.to_vector(), bv = fc.bias.to_vector(), yv = y.to_vector();
    for (int r = 0; r < 8; ++r)
        for (int o = 0; o < 3; ++o) {
            double s = bv[o];
            for (int i = 0; i < 5; ++i) s += xv[r * 5 + i] * wv[o * 5 + i];
            CHECK(yv[r * 3 + o] == Approx(s).margin(1e-5));
        }
    CHECK_THROWS_WITH(fc.forward(randn({2, 4})), Catch::Contains("must end in 5"));
    nn::Linear nobias(5, 3, false);
    CHECK_FALSE(nobias.bias.defined());
    CHECK(nobias.named_parameters().size() == 1);
}

TEST_CASE("Conv2d matches the reference convolution for stride, padding and groups", "[nn][layers]") {
    struct Case { int64_t cin, cout; int k, s, p, g; };
    for (Case c : {Case{3, 8, 4, 4, 0, 1}, Case{4, 6, 3, 2, 1, 2}, Case{6, 6, 7, 1, 3, 6}, Case{2, 4, 3, 1, 0, 1}}) {
        nn::Conv2d conv(c.cin, c.cout, c.k, c.s, c.p, c.g);
        CHECK(conv.weight.shape() == Shape{c.cout, c.cin / c.g, c.k, c.k});
        Tensor x = randn({2, 9, 11, c.cin});
        Tensor y = conv.forward(x);
        Tensor want = ref::conv2d(x, conv.weight, conv.bias, c.s, c.p, c.g);
        REQUIRE(y.shape() == want.shape());
        CHECK(max_abs_diff(y, want) < 1e-4);
    }
    CHECK_THROWS_WITH(nn::Conv2d(3, 4, 3, 1, 0, 2), Catch::Contains("divisible by groups"));
    nn::Conv2d conv(3, 4, 3);
    CHECK_THROWS_WITH(conv.forward(randn({1, 5, 5, 2})), Catch::Contains("3 channels"));
}

TEST_CASE("LayerNorm, GELU, DropPath, Identity", "[nn][layers]") {
    nn::LayerNorm ln(6, 1e-6);
    Tensor x = randn({3, 4, 6});
    Tensor y = ln.forward(x);
    auto yv = y.to_vector();
    for (int r = 0; r < 12; ++r) {
        double m = 0, v = 0;
        for (int c = 0; c < 6; ++c) m += yv[r * 6 + c] / 6;
        for (int c = 0; c < 6; ++c) v += (yv[r * 6 + c] - m) * (yv[r * 6 + c] - m) / 6;
        CHECK(m == Approx(0).margin(1e-5));
        CHECK(v == Approx(1).epsilon(1e-3));
    }
    CHECK(ln.eps == 1e-6);
    CHECK(nn::LayerNorm(4).eps == 1e-5);  // PyTorch's default
    CHECK(nn::LayerNorm(4, 1e-5, false).named_parameters().empty());

    Tensor g = randn({10});
    CHECK(max_abs_diff(nn::GELU().forward(g), gelu(g, false)) == 0);
    CHECK(max_abs_diff(nn::GELU("tanh").forward(g), gelu(g, true)) == 0);
    CHECK_THROWS_WITH(nn::GELU("fast"), Catch::Contains("'none' or 'tanh'"));

    nn::DropPath dp(0.5);
    Tensor ones8 = ones({8, 3, 3, 2});
    dp.eval();
    CHECK(max_abs_diff(dp.forward(ones8), ones8) == 0);
    dp.train();
    manual_seed(3);
    auto v = dp.forward(ones8).to_vector();
    int kept = 0, dropped = 0;
    for (int s = 0; s < 8; ++s) {
        double first = v[s * 18];
        for (int i = 0; i < 18; ++i) CHECK(v[s * 18 + i] == first);  // whole samples
        if (first == 0) ++dropped;
        else if (first == Approx(2.0)) ++kept;
    }
    CHECK(kept + dropped == 8);
    CHECK_THROWS(nn::DropPath(1.0));

    nn::Identity id;
    CHECK(id.forward(x).same_storage(x));
}

TEST_CASE("Sequential names its children 0, 1, ... and chains them; ModuleList holds them", "[nn][layers]") {
    auto seq = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::GELU>(), std::make_shared<nn::Linear>(8, 2)});
    CHECK(names_of(seq->named_parameters()) ==
          std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
    Tensor x = randn({3, 4});
    Tensor want = seq->get<nn::Linear>(2)->forward(gelu(seq->get<nn::Linear>(0)->forward(x)));
    CHECK(max_abs_diff(seq->forward(x), want) == 0);
    CHECK_THROWS_WITH(seq->get<nn::Conv2d>(0), Catch::Contains("Linear, not the requested type"));
    CHECK_THROWS_WITH((*seq)[5], Catch::Contains("out of range"));

    nn::ModuleList list;
    list.push_back(seq);
    list.push_back(std::make_shared<nn::LayerNorm>(2));
    CHECK(list.size() == 2);
    CHECK(names_of(list.named_parameters()).back() == "1.bias");
    CHECK(list.named_parameters()[0].second.name() == "0.0.weight");
    CHECK_THROWS(list.forward(x));

    // Growing a container that already sits in a tree still gives full names.
    nn::Module root;
    auto blocks = root.register_module("blocks", std::make_shared<nn::ModuleList>());
    auto stage = std::make_shared<nn::Sequential>();
    blocks->push_back(stage);
    stage->push_back(std::make_shared<nn::Linear>(2, 2));
    CHECK(root.named_parameters()[0].first == "blocks.0.0.weight");
    CHECK(stage->get<nn::Linear>(0)->weight.name() == "blocks.0.0.weight");
    stage->get<nn::Linear>(0)->register_parameter("extra", zeros({1}));
    CHECK(root.find("blocks.0.0.extra").name() == "blocks.0.0.extra");
}

TEST_CASE("gradients through a small module stack match finite differences", "[nn][gradcheck]") {
    auto net = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
        std::make_shared<nn::Conv2d>(3, 4, 3, 2, 1), std::make_shared<nn::LayerNorm>(4),
        std::make_shared<nn::Linear>(4, 5), std::make_shared<nn::GELU>(), std::make_shared<nn::DropPath>(0.3)});
    net->to(DType::F64);
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return net->forward(in[0]); },
                       {randn({3, 7, 5, 3}, DType::F64)});
    INFO(r.worst);
    CHECK(r.pass);
}

TEST_CASE("trunc_normal_ draws a normal truncated at absolute bounds", "[nn][init]") {
    Generator gen(7);
    Tensor t = Tensor::empty({200000});
    nn::init::trunc_normal_(t, 0.02, -2, 2, &gen);
    auto v = t.to_vector();
    double m = 0, s = 0;
    for (double x : v) m += x / v.size();
    for (double x : v) s += (x - m) * (x - m) / v.size();
    CHECK(m == Approx(0).margin(2e-4));
    CHECK(std::sqrt(s) == Approx(0.02).epsilon(0.01));

    // std 1 on [-1, 2]: every value inside, and the mean of the truncated normal.
    nn::init::trunc_normal_(t, 1.0, -1.0, 2.0, &gen);
    v = t.to_vector();
    m = 0;
    int outside = 0;
    for (double x : v) {
        outside += !(x >= -1.0 && x <= 2.0);
        m += x / v.size();
    }
    CHECK(outside == 0);
    auto phi = [](double x) { return std::exp(-x * x / 2) / std::sqrt(2 * M_PI); };
    auto Phi = [](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); };
    double expected_mean = (phi(-1) - phi(2)) / (Phi(2) - Phi(-1));
    CHECK(m == Approx(expected_mean).margin(0.01));

    // A far tail interval goes through the inverse CDF: still inside, and the same for a seed.
    Tensor a = Tensor::empty({1000}, DType::F64), b = Tensor::empty({1000}, DType::F64);
    Generator g1(1), g2(1);
    nn::init::trunc_normal_(a, 1.0, 4.0, 4.5, &g1);
    nn::init::trunc_normal_(b, 1.0, 4.0, 4.5, &g2);
    CHECK(max_abs_diff(a, b) == 0);
    m = 0;
    outside = 0;
    for (double x : a.to_vector()) {
        outside += !(x >= 4.0 && x <= 4.5);
        m += x / 1000;
    }
    CHECK(outside == 0);
    CHECK(m < 4.25);  // the density falls across the interval
    CHECK_THROWS(nn::init::trunc_normal_(a, 0.0));
    CHECK_THROWS(nn::init::trunc_normal_(a, 1.0, 1.0, 1.0));
}

TEST_CASE("erfinv inverts erf", "[nn][init]") {
    for (double x : {-0.999999, -0.9, -0.5, -1e-8, 0.0, 0.3, 0.7, 0.99, 0.9999999})
        CHECK(std::erf(nn::init::erfinv(x)) == Approx(x).epsilon(1e-12).margin(1e-15));
    CHECK(std::isinf(nn::init::erfinv(1.0)));
    CHECK(std::isnan(nn::init::erfinv(1.5)));
}

TEST_CASE("normal_, uniform_, constant_ and friends", "[nn][init]") {
    Generator gen(11);
    Tensor t = Tensor::empty({50000});
    nn::init::normal_(t, 1.5, 0.5, &gen);
    double m = 0;
    for (double x : t.to_vector()) m += x / t.numel();
    CHECK(m == Approx(1.5).margin(0.01));
    nn::init::uniform_(t, -3, -2, &gen);
    int outside = 0;
    for (double x : t.to_vector()) outside += !(x >= -3 && x < -2);
    CHECK(outside == 0);
    nn::init::constant_(t, 0.25);
    CHECK(t.to_vector()[123] == 0.25);
    nn::init::ones_(t);
    CHECK(t.to_vector()[0] == 1.0);
    nn::init::zeros_(t);
    CHECK(t.to_vector()[49999] == 0.0);
    CHECK(nn::init::fan_in(Tensor::empty({8, 3, 4, 4})) == 48);
}

// ---- what a module declares beyond names and shapes: aliases, no-decay, layer ids, hooks ----

namespace {

// Like GRN's parameters: 4-D, [1, 1, 1, C], no weight decay, another library stores them 1-D.
struct Scaled : nn::Module {
    std::shared_ptr<nn::Linear> fc;
    Tensor gain;
    explicit Scaled(int64_t c) : Module("Scaled") {
        fc = register_module("fc", std::make_shared<nn::Linear>(c, c), {{"lib", "proj"}});
        gain = register_parameter("gain", ones({1, 1, 1, c}),
                                  nn::ParamOptions().no_weight_decay().alias("lib", "weight", {c}));
    }
    Tensor forward(const Tensor& x) override { return mul((*fc)(x), gain); }
};

struct Holder : nn::Module {
    std::shared_ptr<nn::ModuleList> items;
    Holder() : Module("Holder") {
        items = register_module("items", std::make_shared<nn::ModuleList>(), {{"lib", ""}});
        items->push_back(std::make_shared<Scaled>(3), {{"lib", "first.inner"}});
        items->push_back(std::make_shared<Scaled>(3));
    }
};

}  // namespace

TEST_CASE("aliases give every entry's name and stored shape in another style", "[nn][names]") {
    Holder h;
    auto own = h.state_dict_names("official");
    auto lib = h.state_dict_names("lib");
    REQUIRE(own.size() == 6);
    REQUIRE(lib.size() == 6);
    std::vector<std::string> want_own = {"items.0.gain", "items.0.fc.weight", "items.0.fc.bias",
                                         "items.1.gain", "items.1.fc.weight", "items.1.fc.bias"};
    std::vector<std::string> want_lib = {"first.inner.weight", "first.inner.proj.weight", "first.inner.proj.bias",
                                         "1.weight",           "1.proj.weight",           "1.proj.bias"};
    for (size_t i = 0; i < 6; ++i) {
        CHECK(own[i].name == want_own[i]);
        CHECK(own[i].styled == want_own[i]);
        CHECK(lib[i].name == want_own[i]);
        CHECK(lib[i].styled == want_lib[i]);
    }
    CHECK(lib[0].shape == Shape{1, 1, 1, 3});
    CHECK(lib[0].styled_shape == Shape{3});
    CHECK(lib[1].styled_shape == Shape{3, 3});
    CHECK(h.naming_styles() == std::vector<std::string>{"lib"});

    // A replacement keeps the aliases of its slot.
    auto first = h.items->get<Scaled>(0);
    first->fc = first->register_module("fc", std::make_shared<nn::Linear>(3, 3));
    CHECK(h.state_dict_names("lib")[1].styled == "first.inner.proj.weight");

    CHECK_THROWS_WITH(first->add_alias("nope", {"lib", "x"}), Catch::Contains("not registered"));
    CHECK_THROWS_WITH(first->add_alias("gain", {"lib", ""}), Catch::Contains("only a submodule"));
    CHECK_THROWS_WITH(first->add_alias("fc", {"lib", "a..b"}), Catch::Contains("empty path segment"));
    CHECK_THROWS_WITH(first->add_alias("fc", {"", "x"}), Catch::Contains("names no style"));
}

TEST_CASE("load_state_dict takes values stored with other size-1 dimensions", "[nn][module]") {
    Scaled a(4), b(4);
    Tensor g = from_vector({1, 2, 3, 4}, {4});
    nn::NamedTensors sd = {{"gain", g}, {"fc.weight", a.fc->weight.reshape({4, 4, 1, 1})}, {"fc.bias", a.fc->bias}};
    CHECK(b.load_state_dict(sd).ok());
    CHECK(b.gain.shape() == Shape{1, 1, 1, 4});
    CHECK(b.gain.to_vector() == std::vector<double>{1, 2, 3, 4});
    CHECK(max_abs_diff(b.fc->weight, a.fc->weight) == 0);
    sd[0].second = zeros({2, 2});  // same numel, other sizes: still a mismatch
    auto r = b.load_state_dict(sd, false);
    REQUIRE(r.mismatched.size() == 1);
    CHECK(r.mismatched[0].name == "gain");
    CHECK(nn::same_up_to_unit_dims({4, 1, 1}, {1, 4}));
    CHECK_FALSE(nn::same_up_to_unit_dims({4, 2}, {2, 4}));
}

TEST_CASE("no-decay parameters and layer ids reach the parameter groups", "[nn][optim]") {
    Holder h;
    h.items->get<Scaled>(1)->set_layer_id(2);
    h.set_layer_id(7);  // the root's id: what has none of its own inherits it
    auto named = h.named_parameters();
    for (auto& [n, p] : named) {
        INFO(n);
        CHECK(p.impl()->param.layer_id == (n.rfind("items.1.", 0) == 0 ? 2 : 7));
        CHECK(p.impl()->param.no_weight_decay == (n.size() > 4 && n.substr(n.size() - 4) == "gain"));
    }
    CHECK(h.items->get<Scaled>(0)->fc->layer_id() == 7);
    // A module added later takes the id of where it lands.
    h.items->push_back(std::make_shared<Scaled>(3));
    CHECK(h.find("items.2.fc.weight").impl()->param.layer_id == 7);

    auto plain = optim::get_params_groups(h, optim::ParamGroupOptions{});
    REQUIRE(plain.size() == 2);
    // The 4-D gains are not decayed; 2-D weights are, biases are not.
    CHECK(plain[0].names == std::vector<std::string>{"items.0.fc.weight", "items.1.fc.weight", "items.2.fc.weight"});
    CHECK(plain[1].names.size() == 6);
    optim::ParamGroupOptions o;
    o.layer_decay = 0.5;
    auto layered = optim::get_params_groups(h.named_parameters(), o);
    REQUIRE(layered.size() == 4);
    CHECK(layered[0].name == "layer_7_no_decay");
    CHECK(layered[0].lr_scale == 0.5 * 0.5 * 0.5 * 0.5 * 0.5 * 0.5);
    CHECK(layered[2].name == "layer_2_no_decay");

    // requires_grad still reads as a bool.
    struct Frozen : nn::Module {
        Frozen() : Module("Frozen") { register_parameter("w", ones({2, 2}), false); }
    } frozen;
    CHECK_FALSE(frozen.find("w").requires_grad());
}

TEST_CASE("forward hooks run through operator() in registration order and can be removed", "[nn][module]") {
    std::vector<std::string> calls;
    auto hook = [&](const char* tag) {
        return [&, tag](nn::Module& mod, const Tensor& in, const Tensor& out) {
            calls.push_back(std::string(tag) + ":" + mod.type_name() + shape_str(in.shape()) + shape_str(out.shape()));
        };
    };
    auto fc = std::make_shared<nn::Linear>(3, 2);
    nn::Sequential seq{fc, std::make_shared<nn::GELU>()};
    int a = fc->register_forward_hook(hook("a"));
    int b = fc->register_forward_hook(hook("b"));
    CHECK(fc->has_forward_hooks());
    seq(randn({4, 3}));
    CHECK(calls == std::vector<std::string>{"a:Linear[4,3][4,2]", "b:Linear[4,3][4,2]"});
    fc->forward(randn({4, 3}));  // forward itself runs no hooks, as in PyTorch
    CHECK(calls.size() == 2);
    fc->remove_forward_hook(a);
    seq(randn({1, 3}));
    CHECK(calls.back() == "b:Linear[1,3][1,2]");
    CHECK(calls.size() == 3);
    fc->remove_forward_hook(b);
    CHECK_FALSE(fc->has_forward_hooks());
    CHECK_THROWS_WITH(fc->remove_forward_hook(b), Catch::Contains("no forward hook"));
}

TEST_CASE("layers build in meta mode without storage and run shape-only", "[nn][meta]") {
    MetaGuard meta;
    Outer m;
    for (auto& [n, t] : m.state_dict()) {
        CHECK(t.is_meta());
        CHECK_FALSE(t.same_storage(t));
    }
    Tensor y = m.forward(Tensor::empty({5, 3}));
    CHECK(y.is_meta());
    CHECK(y.shape() == Shape{5, 2});
    CHECK(m.inner->fc->weight.clone().is_meta());
    CHECK(m.inner->fc->weight.to(DType::F64).dtype() == DType::F64);
    CHECK_THROWS_WITH(m.forward(Tensor::empty({5, 4})), Catch::Contains("must end in 3"));
}
