// models/convnext: architecture (names, shapes, counts), initialisation, the PyTorch reference
// fixture (forward and every gradient), a float64 gradcheck of a whole micro model, state_dict
// through safetensors, and `convnext info` for every variant.
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "models/convnext.h"
#include "nn/init.h"
#include "ops/ops.h"

using namespace cnx;
using models::ConvNeXt;
using models::ConvNeXtOptions;

namespace {

ConvNeXtOptions small_options(std::vector<int64_t> depths, std::vector<int64_t> dims, int64_t classes) {
    ConvNeXtOptions o;
    o.depths = std::move(depths);
    o.dims = std::move(dims);
    o.num_classes = classes;
    return o;
}

double max_abs(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
    return m;
}

// The fixture's acceptance rule: max|got - want| <= tol * max(1, max|want|). Returns "" when
// close, otherwise a line naming the tensor, for the failure message.
std::string compare(const std::string& name, const Tensor& got, const Tensor& want, double tol) {
    if (!got.defined()) return name + ": no value (undefined tensor)";
    if (got.shape() != want.shape())
        return name + ": shape " + shape_str(got.shape()) + ", reference " + shape_str(want.shape());
    auto a = got.to_vector(), b = want.to_vector();
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        double d = std::fabs(a[i] - b[i]);
        if (!(d <= worst)) {  // also catches NaN
            worst = std::isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    double limit = tol * std::max(1.0, max_abs(want));
    if (worst <= limit) return "";
    std::ostringstream os;
    os << name << ": max |diff| " << worst << " at element " << at << " (got " << a[at] << ", reference " << b[at]
       << "), allowed " << limit;
    return os.str();
}

std::string run_command(const std::string& cmd, int* exit_code) {
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int status = pclose(p);
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

// Sets every parameter to an O(1) random value (gamma and LayerNorm scales around 1), so in a
// gradient check no block is negligible and no gradient is trivially small.
void randomize(ConvNeXt& m, uint64_t seed) {
    Generator gen(seed);
    for (auto& [n, p] : m.named_parameters()) {
        Tensor t = p;
        bool scale = n.size() >= 5 && (n.substr(n.size() - 5) == "gamma" ||
                                       (n.find("norm") != std::string::npos && n.find("weight") != std::string::npos));
        if (scale)
            nn::init::uniform_(t, 0.5, 1.5, &gen);
        else
            nn::init::normal_(t, 0.0, 0.3, &gen);
    }
}

}  // namespace

TEST_CASE("parameters have the official names, shapes and order", "[model]") {
    for (double ls : {1e-6, 0.0}) {
        ConvNeXtOptions o = small_options({2, 1, 3, 1}, {8, 16, 24, 32}, 7);
        o.in_chans = 2;
        o.layer_scale_init_value = ls;
        ConvNeXt m(o);
        auto expected = models::parameter_shapes(o);
        auto got = m.state_dict();
        REQUIRE(got.size() == expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
            INFO(expected[i].first);
            CHECK(got[i].first == expected[i].first);
            CHECK(got[i].second.shape() == expected[i].second);
            CHECK(got[i].second.name() == expected[i].first);
        }
        CHECK(m.find("stages.0.1.gamma").defined() == (ls > 0));
        CHECK(m.num_parameters() == models::count_parameters(o));
        CHECK(m.num_parameters() == models::model_cost(o, 64, 64).params);
    }
    ConvNeXt m(small_options({1, 1, 1, 1}, {8, 8, 8, 8}, 3));
    auto names = m.state_dict();
    CHECK(names.front().first == "downsample_layers.0.0.weight");
    CHECK(names[4].first == "downsample_layers.1.0.weight");  // LayerNorm first in downsamples
    CHECK(names[16].first == "stages.0.0.gamma");             // a block's own parameter precedes its children's
    CHECK(names.back().first == "head.bias");
}

TEST_CASE("variants: registry, exact parameter counts, unknown names", "[model]") {
    auto names = models::model_names();
    REQUIRE(names.size() == 9);
    CHECK(names.front() == "convnext_atto");
    CHECK(names.back() == "convnext_xlarge");
    const int64_t expected[] = {3695520,  5217784,  9045672,   15593560, 28589128,
                                50223688, 88591464, 197767336, 350196968};
    for (size_t i = 0; i < names.size(); ++i)
        CHECK(models::count_parameters(models::model_options(names[i])) == expected[i]);
    auto atto = models::create_model("convnext_atto");
    CHECK(atto->num_parameters() == 3695520);
    CHECK(atto->options().dims == std::vector<int64_t>{40, 80, 160, 320});
    CHECK_THROWS_WITH(models::create_model("convnext_huge"),
                      Catch::Contains("unknown model 'convnext_huge'") && Catch::Contains("convnext_tiny") &&
                          Catch::Contains("convnext_xlarge"));
    ConvNeXtOptions bad;
    bad.depths = {1, 2, 3};
    CHECK_THROWS_WITH(ConvNeXt(bad), Catch::Contains("4 entries"));
}

TEST_CASE("initialisation follows the official recipe and is seeded", "[model]") {
    ConvNeXtOptions o = models::model_options("convnext_atto");
    o.num_classes = 50;
    o.head_init_scale = 0.5;
    Generator g1(42), g2(42), g3(43);
    ConvNeXt a(o, &g1), b(o, &g2), c(o, &g3);
    auto sa = a.state_dict(), sb = b.state_dict(), sc = c.state_dict();
    bool all_equal = true, some_differ = false;
    for (size_t i = 0; i < sa.size(); ++i) {
        all_equal = all_equal && sa[i].second.to_vector() == sb[i].second.to_vector();
        some_differ = some_differ || sa[i].second.to_vector() != sc[i].second.to_vector();
    }
    CHECK(all_equal);
    CHECK(some_differ);

    auto stats = [](const Tensor& t) {
        double m = 0, s = 0;
        auto v = t.to_vector();
        for (double x : v) m += x / v.size();
        for (double x : v) s += (x - m) * (x - m) / v.size();
        return std::make_pair(m, std::sqrt(s));
    };
    auto [m1, s1] = stats(a.find("stages.2.3.pwconv1.weight"));
    CHECK(m1 == Approx(0).margin(1e-3));
    CHECK(s1 == Approx(0.02).epsilon(0.02));
    auto [m2, s2] = stats(a.find("stages.0.0.dwconv.weight"));
    CHECK(s2 == Approx(0.02).epsilon(0.1));
    CHECK(max_abs(a.find("stages.0.0.dwconv.bias")) == 0);
    CHECK(max_abs(a.find("downsample_layers.2.1.bias")) == 0);
    CHECK(a.find("stages.1.1.norm.weight").to_vector() == std::vector<double>(80, 1.0));
    CHECK(max_abs(a.find("downsample_layers.1.0.bias")) == 0);
    for (double v : a.find("stages.3.1.gamma").to_vector()) CHECK(v == Approx(1e-6));
    auto [m3, s3] = stats(a.find("head.weight"));
    CHECK(s3 == Approx(0.01).epsilon(0.05));  // 0.02 scaled by head_init_scale
    CHECK(max_abs(a.find("head.weight")) <= 2.0);
}

TEST_CASE("drop path rates rise linearly over all blocks", "[model]") {
    ConvNeXtOptions o = small_options({2, 2, 6, 2}, {8, 8, 8, 8}, 2);
    o.drop_path_rate = 0.1;
    ConvNeXt m(o);
    std::vector<double> rates;
    for (size_t i = 0; i < 4; ++i) {
        auto stage = m.stages->get<nn::Sequential>(i);
        for (size_t j = 0; j < stage->size(); ++j) {
            auto block = stage->get<models::Block>(j);
            auto dp = std::dynamic_pointer_cast<nn::DropPath>(block->drop_path);
            rates.push_back(dp ? dp->p : 0.0);
        }
    }
    REQUIRE(rates.size() == 12);
    CHECK(rates[0] == 0.0);  // first block: Identity
    for (size_t i = 0; i < rates.size(); ++i) CHECK(rates[i] == Approx(0.1 * i / 11).margin(1e-7));
    CHECK(rates[11] == Approx(0.1));
}

TEST_CASE("forward shapes, stage outputs and input checks", "[model]") {
    ConvNeXt m(small_options({1, 1, 2, 1}, {8, 16, 32, 64}, 10));
    m.eval();
    Tensor x = randn({2, 70, 64, 3});
    std::vector<Tensor> stages;
    Tensor f = m.forward_features(x, &stages);
    CHECK(f.shape() == Shape{2, 64});
    REQUIRE(stages.size() == 4);
    CHECK(stages[0].shape() == Shape{2, 17, 16, 8});
    CHECK(stages[1].shape() == Shape{2, 8, 8, 16});
    CHECK(stages[2].shape() == Shape{2, 4, 4, 32});
    CHECK(stages[3].shape() == Shape{2, 2, 2, 64});
    CHECK(m.forward(x).shape() == Shape{2, 10});
    CHECK(m.macs(64) == models::model_cost(m.options(), 64, 64).macs);
    auto cost = models::model_cost(m.options(), 70, 64);
    CHECK(cost.stages[0].height == 17);
    CHECK(cost.stages[3].width == 2);
    CHECK_THROWS_WITH(m.forward(randn({2, 64, 64, 4})), Catch::Contains("NHWC [N, H, W, 3]"));
    CHECK_THROWS_WITH(m.forward(randn({2, 31, 64, 3})), Catch::Contains("smaller than 32x32"));
    CHECK_THROWS_WITH(m.forward(randn({64, 64, 3})), Catch::Contains("NHWC"));
}

TEST_CASE("matches PyTorch: logits, loss and every gradient of the reference fixture", "[model][fixture]") {
    auto fx = io::load_safetensors(CONVNEXT_SOURCE_DIR "/tests/fixtures/model_small.safetensors");
    auto meta_list = [&](const char* key) {
        return nlohmann::json::parse(fx.metadata.at(key)).get<std::vector<int64_t>>();
    };
    ConvNeXtOptions o =
        small_options(meta_list("depths"), meta_list("dims"), std::stoll(fx.metadata.at("num_classes")));
    o.in_chans = std::stoll(fx.metadata.at("in_chans"));
    ConvNeXt model(o);

    io::NamedTensors weights;
    for (auto& [n, t] : fx.tensors)
        if (n.rfind("grad.", 0) != 0 && n != "input" && n != "targets" && n != "logits" && n != "loss")
            weights.emplace_back(n, t);
    REQUIRE(model.load_state_dict(weights, true).ok());

    Tensor x = fx.get("input");
    REQUIRE(x.shape() == Shape{3, 32, 32, 3});
    x.requires_grad_(true);
    std::vector<int64_t> targets;
    for (double v : fx.get("targets").to_vector()) targets.push_back((int64_t)std::lround(v));

    Tensor logits = model.forward(x);
    Tensor loss = cross_entropy(logits, targets);
    loss.backward();

    std::vector<std::string> failures;
    auto check = [&](const std::string& name, const Tensor& got, const Tensor& want) {
        std::string msg = compare(name, got, want, 1e-4);
        if (!msg.empty()) failures.push_back(msg);
    };
    check("logits", logits, fx.get("logits"));
    check("loss", loss.reshape({}), fx.get("loss"));
    check("grad.input", x.grad(), fx.get("grad.input"));
    int grads = 0;
    double worst_rel = 0;
    for (auto& [n, p] : model.named_parameters()) {
        Tensor want = fx.get("grad." + n);
        check("grad." + n, p.grad(), want);
        if (p.grad().defined() && p.grad().shape() == want.shape()) {
            auto a = p.grad().to_vector(), b = want.to_vector();
            double d = 0;
            for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
            worst_rel = std::max(worst_rel, d / max_abs(want));
        }
        ++grads;
    }
    CHECK(grads == (int)weights.size());
    std::string all;
    for (auto& f : failures) all += "\n  " + f;
    INFO("tensors differing from PyTorch:" << all);
    CHECK(failures.empty());
    // Gradients here are 0.02..0.7 in size; float32 agreement (about 1e-6) is much tighter than the rule.
    INFO("largest gradient error relative to the tensor's largest value: " << worst_rel);
    CHECK(worst_rel < 1e-4);

    SECTION("the comparison catches a perturbed gradient") {
        const std::string name = "stages.2.1.pwconv1.weight";
        Tensor g = model.find(name).grad().clone();
        REQUIRE(compare("grad." + name, g, fx.get("grad." + name), 1e-4).empty());
        g.data<float>()[17] += 1e-3f;
        std::string msg = compare("grad." + name, g, fx.get("grad." + name), 1e-4);
        CHECK_THAT(msg, Catch::Contains("grad.stages.2.1.pwconv1.weight") && Catch::Contains("element 17"));
        Tensor l = logits.detach().clone();
        l.data<float>()[4] = NAN;
        CHECK_FALSE(compare("logits", l, fx.get("logits"), 1e-4).empty());
        CHECK_FALSE(compare("logits", l.reshape({30}), fx.get("logits"), 1e-4).empty());
    }
}

// Thousands of forwards on a micro model: every op is far below the size where threads pay off,
// and on a loaded machine fork/join barriers would dominate. Restores the setting on exit.
struct SingleThread {
    int prev = get_num_threads();
    SingleThread() { set_num_threads(1); }
    ~SingleThread() { set_num_threads(prev); }
};

TEST_CASE("whole-model float64 gradcheck with drop path in training mode", "[model][gradcheck]") {
    SingleThread single;
    ConvNeXtOptions o = small_options({1, 1, 1, 1}, {8, 8, 8, 8}, 5);
    o.drop_path_rate = 0.2;
    ConvNeXt model(o);
    randomize(model, 17);
    model.to(DType::F64);
    model.train();
    Generator gen(3);
    Tensor x = randn({2, 32, 32, 3}, DType::F64, &gen);
    const uint64_t seed = 1234;

    // Drop path is active: with the gradcheck seed the training forward differs from eval.
    {
        NoGradGuard ng;
        default_generator().manual_seed(seed);
        Tensor yt = model.forward(x);
        model.eval();
        Tensor ye = model.forward(x);
        model.train();
        CHECK(yt.to_vector() != ye.to_vector());
    }

    // The input, through the library's gradcheck.
    GradcheckOptions opts;
    opts.seed = seed;
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return model.forward(in[0]); }, {x}, opts);
    INFO("input: " << r.worst);
    CHECK(r.pass);

    // Parameters in place: the same weighted-sum objective and seed, central differences on a
    // spread of elements of every parameter tensor.
    Generator wgen(seed ^ 0x5eedull);
    Tensor w = randn({2, 5}, DType::F64, &wgen);
    auto objective = [&] {
        default_generator().manual_seed(seed);
        Tensor y = model.forward(x);
        double s = 0;
        auto yv = y.to_vector(), wv = w.to_vector();
        for (size_t i = 0; i < yv.size(); ++i) s += yv[i] * wv[i];
        return s;
    };
    model.zero_grad();
    default_generator().manual_seed(seed);
    model.forward(x).backward(w);
    const double eps = 1e-6, tol = 1e-6;
    std::vector<std::string> failures;
    int checked = 0;
    {
        NoGradGuard ng;
        for (auto& [n, p] : model.named_parameters()) {
            REQUIRE(p.grad().defined());
            auto analytic = p.grad().to_vector();
            double* d = p.data<double>();
            int64_t count = std::min<int64_t>(p.numel(), 12);
            for (int64_t k = 0; k < count; ++k) {
                int64_t i = k * p.numel() / count;
                double saved = d[i];
                d[i] = saved + eps;
                double fp = objective();
                d[i] = saved - eps;
                double fm = objective();
                d[i] = saved;
                double numeric = (fp - fm) / (2 * eps), a = analytic[i];
                ++checked;
                if (std::fabs(a - numeric) > tol * std::max({std::fabs(a), std::fabs(numeric), 1.0}))
                    failures.push_back(n + "[" + std::to_string(i) + "]: analytic " + std::to_string(a) +
                                       ", numeric " + std::to_string(numeric));
            }
        }
    }
    CHECK(checked > 400);
    std::string all;
    for (auto& f : failures) all += "\n  " + f;
    INFO("parameter gradients off:" << all);
    CHECK(failures.empty());
}

TEST_CASE("state_dict round trip through safetensors", "[model][io]") {
    ConvNeXtOptions o = small_options({1, 2, 1, 1}, {8, 16, 24, 32}, 4);
    Generator g1(1), g2(2);
    ConvNeXt a(o, &g1), b(o, &g2);
    randomize(a, 5);
    std::string path = (std::filesystem::temp_directory_path() / "cnx_model_rt.safetensors").string();
    io::save_safetensors(path, a.state_dict(), {{"arch", "custom"}});
    auto f = io::load_safetensors(path);
    std::filesystem::remove(path);
    CHECK(f.metadata.at("arch") == "custom");
    auto report = b.load_state_dict(f.tensors);
    CHECK(report.ok());
    auto sa = a.state_dict(), sb = b.state_dict();
    for (size_t i = 0; i < sa.size(); ++i) CHECK(sa[i].second.to_vector() == sb[i].second.to_vector());
    a.eval();
    b.eval();
    NoGradGuard ng;
    Tensor x = randn({1, 32, 32, 3});
    CHECK(a.forward(x).to_vector() == b.forward(x).to_vector());

    // A checkpoint for another head: non-strict load takes the backbone, reports the head.
    ConvNeXtOptions o2 = o;
    o2.num_classes = 9;
    ConvNeXt c(o2);
    auto r = c.load_state_dict(f.tensors, false);
    REQUIRE(r.mismatched.size() == 2);
    CHECK(r.mismatched[0].name == "head.weight");
    CHECK(r.mismatched[1].name == "head.bias");
    CHECK(c.find("stages.1.1.pwconv2.weight").to_vector() == a.find("stages.1.1.pwconv2.weight").to_vector());
}

TEST_CASE("convnext info reports exact parameters and MACs for every variant", "[model][cli]") {
    struct Want { const char* name; int64_t params; double gmacs; };
    const Want wants[] = {{"convnext_atto", 3695520, 0.547},     {"convnext_femto", 5217784, 0.780},
                          {"convnext_pico", 9045672, 1.367},     {"convnext_nano", 15593560, 2.446},
                          {"convnext_tiny", 28589128, 4.456},    {"convnext_small", 50223688, 8.684},
                          {"convnext_base", 88591464, 15.355},   {"convnext_large", 197767336, 34.361},
                          {"convnext_xlarge", 350196968, 60.921}};
    for (auto& w : wants) {
        INFO(w.name);
        int code = -1;
        std::string out = run_command(std::string(CONVNEXT_CLI) + " info --model " + w.name + " --json", &code);
        REQUIRE(code == 0);
        auto j = nlohmann::json::parse(out);
        CHECK(j.at("params").get<int64_t>() == w.params);
        double gmacs = j.at("macs").get<int64_t>() / 1e9;
        CHECK(std::fabs(gmacs - w.gmacs) <= 0.01 * w.gmacs);
        REQUIRE(j.at("stages").size() == 4);
        CHECK(j["stages"][3]["output_shape"].get<std::vector<int64_t>>()[1] == 7);
    }
    int code = -1;
    auto j = nlohmann::json::parse(
        run_command(std::string(CONVNEXT_CLI) + " info --model convnext_tiny --num-classes 5 --in-chans 1 "
                                                "--image-size 96 --json",
                    &code));
    CHECK(code == 0);
    CHECK(j["params"].get<int64_t>() == 28589128 - 995 * 769 - 2 * 96 * 16);
    CHECK(j["stages"][0]["output_shape"] == nlohmann::json::array({1, 24, 24, 96}));
    CHECK(j["stages"][2]["output_shape"] == nlohmann::json::array({1, 6, 6, 384}));
    CHECK(j["head"]["output_shape"] == nlohmann::json::array({1, 5}));

    std::string text = run_command(std::string(CONVNEXT_CLI) + " info --model convnext_tiny", &code);
    CHECK(code == 0);
    CHECK_THAT(text, Catch::Contains("28,589,128 parameters") && Catch::Contains("4.456 GMACs"));
    std::string err = run_command(std::string(CONVNEXT_CLI) + " info --model convnext_mega 2>&1", &code);
    CHECK(code == 1);
    CHECK_THAT(err, Catch::Contains("unknown model 'convnext_mega'") && Catch::Contains("convnext_atto"));
    run_command(std::string(CONVNEXT_CLI) + " info 2>&1", &code);
    CHECK(code == 2);  // usage error: --model is required
}
