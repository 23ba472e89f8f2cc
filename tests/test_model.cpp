// models/convnext: architecture (names, shapes, counts), initialisation, the PyTorch reference
// fixture (forward and every gradient), a float64 gradcheck of a whole micro model, state_dict
// through safetensors, and `convnext info` for every variant.
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/json.h"
#include "core/meta.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/key_names.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/convnext.h"
#include "models/convnext_v2.h"
#include "nn/init.h"
#include "ops/ops.h"
#include "optim/param_groups.h"
#include "model_check.h"

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
void randomize_params(nn::Module& m, uint64_t seed) {
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

void randomize(ConvNeXt& m, uint64_t seed) { randomize_params(m, seed); }

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
    // ConvNeXt V1 (models/convnext.cpp), then V2 (models/convnext_v2.cpp): file-name order.
    REQUIRE(names.size() == 17);
    CHECK(names.front() == "convnext_atto");
    CHECK(names[8] == "convnext_xlarge");
    CHECK(names[9] == "convnextv2_atto");
    CHECK(names.back() == "convnextv2_huge");
    const int64_t expected[] = {3695520,  5217784,  9045672,   15593560,  28589128,  50223688,
                                88591464, 197767336, 350196968, 3708400,   5233240,   9066280,
                                15623800, 28635496,  88717800,  197956840, 660289640};
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

// The model a reference fixture describes (its metadata: depths, dims, classes, family), loaded
// with its weights, one forward and backward of cross-entropy, compared with PyTorch's logits,
// loss and every gradient at 1e-4 of each tensor's scale.
struct FixtureRun {
    io::SafetensorsFile fx;
    std::shared_ptr<ConvNeXt> model;
    Tensor logits;
};

FixtureRun run_fixture(const std::string& path) {
    FixtureRun run{io::load_safetensors(path), nullptr, Tensor()};
    auto& fx = run.fx;
    auto meta_list = [&](const char* key) {
        return parse_json(fx.metadata.at(key)).get<std::vector<int64_t>>();
    };
    ConvNeXtOptions o =
        small_options(meta_list("depths"), meta_list("dims"), std::stoll(fx.metadata.at("num_classes")));
    o.in_chans = std::stoll(fx.metadata.at("in_chans"));
    if (fx.metadata.count("family") && fx.metadata.at("family") == "convnext_v2") o.block = models::make_block_v2;
    run.model = std::make_shared<ConvNeXt>(o);
    ConvNeXt& model = *run.model;

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
    run.logits = logits;

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
    return run;
}

TEST_CASE("matches PyTorch: logits, loss and every gradient of the reference fixture", "[model][fixture]") {
    FixtureRun run = run_fixture(CONVNEXT_SOURCE_DIR "/tests/fixtures/model_small.safetensors");
    auto& fx = run.fx;
    ConvNeXt& model = *run.model;
    Tensor logits = run.logits;

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

TEST_CASE("ConvNeXt V2 matches PyTorch: logits, loss and every gradient of its reference fixture",
          "[model][fixture][v2]") {
    // tools/gen_model_fixture.py --family convnext_v2: GRN written as the official code, its
    // gamma and beta random; the fused V2 MLP runs here (drop path off), so this checks it too.
    FixtureRun run = run_fixture(CONVNEXT_SOURCE_DIR "/tests/fixtures/model_small_v2.safetensors");
    auto b = run.model->stages->get<nn::Sequential>(2)->get<models::BlockV2>(1);
    CHECK(b->mlp_fusable());
    CHECK(max_abs(b->grn->gamma) > 0.1);
}

// Thousands of forwards on a micro model: every op is far below the size where threads pay off,
// and on a loaded machine fork/join barriers would dominate. Restores the setting on exit.
struct SingleThread {
    int prev = get_num_threads();
    SingleThread() { set_num_threads(1); }
    ~SingleThread() { set_num_threads(prev); }
};

// Every parameter's and the input's gradient of a micro model against central differences, in
// float64, drop path active. `block`: the family's block factory (empty: V1's).
void check_whole_model_gradients(const models::BlockFactory& block) {
    SingleThread single;
    ConvNeXtOptions o = small_options({1, 1, 1, 1}, {8, 8, 8, 8}, 5);
    o.drop_path_rate = 0.2;
    o.block = block;
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

    // The input, through the library's gradcheck: every element (two forward passes each), or
    // under AddressSanitizer, where this one check took 15 s, every 5th: the sanitizer pass is
    // there for memory errors, and the same code runs for every element.
    GradcheckOptions opts;
    opts.seed = seed;
#if defined(CONVNEXT_SANITIZED)
    opts.element_stride = 5;
#endif
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

TEST_CASE("whole-model float64 gradcheck with drop path in training mode", "[model][gradcheck]") {
    check_whole_model_gradients(nullptr);
}

TEST_CASE("whole-model float64 gradcheck of ConvNeXt V2 (GRN) with drop path in training mode",
          "[model][gradcheck][v2]") {
    check_whole_model_gradients(models::make_block_v2);
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
        auto j = parse_json(out);
        CHECK(j.at("params").get<int64_t>() == w.params);
        double gmacs = j.at("macs").get<int64_t>() / 1e9;
        CHECK(std::fabs(gmacs - w.gmacs) <= 0.01 * w.gmacs);
        REQUIRE(j.at("stages").size() == 4);
        CHECK(j["stages"][3]["output_shape"].get<std::vector<int64_t>>()[1] == 7);
    }
    int code = -1;
    auto j = parse_json(
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

// ---- the registry, and everything derived from the module tree ----

namespace {

using model_check::DoublingLinear;

// The unfused block, written out from public pieces: what every non-fused forward must equal.
Tensor block_reference(models::Block& b, const Tensor& x) {
    Tensor y = b.norm->forward(b.dwconv->forward(x));
    y = b.pwconv2->forward(b.act->forward(b.pwconv1->forward(y)));
    if (b.gamma.defined()) y = mul(y, b.gamma);
    return add(x, b.drop_path->forward(y));
}

std::shared_ptr<ConvNeXt> meta_model(const std::string& name, const ConvNeXtOptions& o = {}) {
    MetaGuard meta;
    return models::create_model(name, o);
}

}  // namespace

TEST_CASE("registry: every name builds; a meta build has the real build's names, shapes and counts",
          "[model][registry]") {
    const auto names = models::model_names();
    REQUIRE(names.size() >= 9);
    for (auto& n : names) CHECK(models::has_model(n));
    CHECK_FALSE(models::has_model("convnext_mega"));
    for (const auto& name : names) {
        INFO(name);
        auto meta = meta_model(name);
        for (auto& [n, t] : meta->state_dict()) REQUIRE(t.is_meta());
        CHECK(meta->num_parameters() == models::count_parameters(models::model_options(name)));
        // Real builds of the variants up to tiny (the larger ones take gigabytes to allocate).
        if (meta->num_parameters() > 30'000'000) continue;
        auto real = models::create_model(name);
        auto a = meta->state_dict(), b = real->state_dict();
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            CHECK(a[i].first == b[i].first);
            CHECK(a[i].second.shape() == b[i].second.shape());
            CHECK(a[i].second.requires_grad() == b[i].second.requires_grad());
            CHECK(a[i].second.impl()->param.layer_id == b[i].second.impl()->param.layer_id);
            CHECK_FALSE(b[i].second.is_meta());
        }
        CHECK(real->num_parameters() == meta->num_parameters());
    }
    CHECK_THROWS_WITH(models::model_options("nope"),
                      Catch::Contains("unknown model 'nope'") && Catch::Contains("convnext_atto"));
}

TEST_CASE("registry: the shared size table names each size once", "[model][registry]") {
    models::ModelRegistry r;
    r.add_sizes("t_", {"atto", "huge"}, models::make_block);
    CHECK(r.names() == std::vector<std::string>{"t_atto", "t_huge"});
    CHECK(r.find("t_atto")->dims == std::vector<int64_t>{40, 80, 160, 320});
    CHECK(r.find("t_huge")->depths == std::vector<int64_t>{3, 3, 27, 3});
    // V1 and V2 share every size both define.
    for (const char* size : {"atto", "femto", "pico", "nano", "tiny", "base", "large"}) {
        auto v1 = models::model_options(std::string("convnext_") + size);
        auto v2 = models::model_options(std::string("convnextv2_") + size);
        CHECK(v1.depths == v2.depths);
        CHECK(v1.dims == v2.dims);
    }
    CHECK_THROWS_WITH(r.add_sizes("t_", {"gigantic"}, models::make_block), Catch::Contains("no size 'gigantic'"));
}

TEST_CASE("registry: a name registered with its own block factory builds through create_model",
          "[model][registry]") {
    // A "family" whose blocks double their MLP's first layer: everything but the block is V1's.
    models::ModelVariant v;
    v.depths = {1, 1, 1, 1};
    v.dims = {8, 16, 24, 32};
    v.block = [](const models::BlockArgs& a) {
        auto b = std::make_shared<models::Block>(a.dim, a.drop_path, a.options.layer_scale_init_value, a.gen);
        b->pwconv1 = b->register_module("pwconv1", std::make_shared<DoublingLinear>(a.dim, 4 * a.dim, true, a.gen));
        return b;
    };
    if (!models::has_model("test_doubling_micro")) models::register_model("test_doubling_micro", v);
    CHECK_THROWS_WITH(models::register_model("test_doubling_micro", v), Catch::Contains("already registered"));
    CHECK_THROWS_WITH(models::register_model("test_bad", models::ModelVariant{{1, 1}, {8, 8}, nullptr}),
                      Catch::Contains("4 depths"));
    auto names = models::model_names();
    CHECK(std::find(names.begin(), names.end(), "test_doubling_micro") != names.end());
    ConvNeXtOptions o;
    o.num_classes = 3;
    auto m = models::create_model("test_doubling_micro", o);
    auto block = m->stages->get<nn::Sequential>(2)->get<models::Block>(0);
    CHECK(dynamic_cast<DoublingLinear*>(block->pwconv1.get()) != nullptr);
    CHECK(m->forward(randn({1, 32, 32, 3})).shape() == Shape{1, 3});
    // The parameter names, ids and aliases are the V1 ones: the replacement kept its slot's aliases.
    CHECK(m->find("stages.2.0.pwconv1.weight").shape() == Shape{96, 24});
    auto timm = m->state_dict_names("timm");
    bool found = false;
    for (auto& s : timm) found = found || s.styled == "stages.2.blocks.0.mlp.fc1.weight";
    CHECK(found);
}

TEST_CASE("MACs and stage shapes come from the model's own forward", "[model][meta]") {
    ConvNeXt m(small_options({1, 2, 3, 1}, {8, 16, 24, 32}, 6));
    m.eval();
    // A real forward counts what a shape-only forward counts.
    int64_t real_total = 0;
    std::map<std::string, int64_t> real_by_op;
    {
        NoGradGuard ng;
        MacCounter real;
        m.forward(randn({1, 64, 70, 3}));
        real_total = real.total();
        real_by_op = real.by_op();
    }
    auto cost = models::model_cost(m, 64, 70);
    CHECK(real_total == cost.macs);
    CHECK(real_by_op.at("linear") == cost.head_macs);
    CHECK(real_by_op.count("convnext_mlp") == 1);
    CHECK(real_by_op.count("depthwise_conv2d") == 1);
    // ... which is the formula of the paper's table, and the same whether built for real or not.
    auto meta = models::build_meta(m.options());
    CHECK(models::model_cost(*meta, 64, 70).macs == cost.macs);
    int64_t h = 16, w = 17, expected = h * w * 8 * 3 * 16;
    const int64_t depth[] = {1, 2, 3, 1}, dim[] = {8, 16, 24, 32};
    for (int i = 0; i < 4; ++i) {
        if (i > 0) h /= 2, w /= 2, expected += h * w * dim[i] * dim[i - 1] * 4;
        expected += depth[i] * h * w * (49 * dim[i] + 8 * dim[i] * dim[i]);
        CHECK(cost.stages[i].height == h);
        CHECK(cost.stages[i].width == w);
        CHECK(cost.stages[i].depth == depth[i]);
        CHECK(cost.stages[i].dim == dim[i]);
    }
    expected += 32 * 6;
    CHECK(cost.macs == expected);
    CHECK(cost.params == m.num_parameters());
    CHECK(cost.head_params == 2 * 32 + 32 * 6 + 6);
    // The shape-only forward left the model as it was: mode, no hooks, real parameters.
    CHECK_FALSE(m.is_training());
    m.train();
    models::model_cost(m, 32, 32);
    CHECK(m.is_training());
    CHECK_FALSE((*m.stages)[0]->has_forward_hooks());
    CHECK_FALSE(m.find("head.weight").is_meta());
    CHECK_THROWS_WITH(models::model_cost(m, 31, 64), Catch::Contains("smaller than 32x32"));
}

TEST_CASE("meta mode: shapes without storage, errors on data, counters nest", "[model][meta]") {
    MetaGuard meta;
    auto m = models::create_model("convnext_xlarge");
    CHECK(m->num_parameters() == 350196968);
    Tensor w = m->find("stages.2.26.pwconv1.weight");
    CHECK(w.is_meta());
    CHECK(w.shape() == Shape{4096, 1024});
    CHECK_THROWS_WITH(w.data<float>(), Catch::Contains("meta tensor") && Catch::Contains("stages.2.26.pwconv1.weight"));
    CHECK_THROWS_WITH(w.to_vector(), Catch::Contains("meta tensor"));
    MacCounter outer;
    int64_t inner_total = 0;
    {
        MacCounter inner;
        Tensor y = m->forward(Tensor::empty({2, 64, 64, 3}));
        CHECK(y.is_meta());
        CHECK(y.shape() == Shape{2, 1000});
        inner_total = inner.total();
    }
    CHECK(outer.total() == inner_total);
    CHECK(inner_total == 2 * models::model_cost(*m, 64, 64).macs);
    // Ops still check their inputs in meta mode.
    CHECK_THROWS_WITH(m->forward(Tensor::empty({2, 64, 64, 4})), Catch::Contains("NHWC [N, H, W, 3]"));
}

TEST_CASE("layer-decay ids come from the tree and match the official rule", "[model][optim]") {
    auto m = meta_model("convnext_base");
    int checked = 0;
    for (auto& [name, p] : m->named_parameters()) {
        INFO(name);
        CHECK(p.impl()->param.layer_id == optim::convnext_layer_id(name));
        ++checked;
    }
    CHECK(checked == (int)m->named_parameters().size());
    // The groups from the module equal those a list of names without ids gets from the rule.
    ConvNeXt small(small_options({2, 2, 7, 2}, {8, 8, 8, 8}, 3));
    optim::ParamGroupOptions o;
    o.weight_decay = 0.05;
    o.layer_decay = 0.7;
    auto from_tree = optim::get_params_groups(small, o);
    optim::NamedTensors plain;
    for (auto& [n, p] : small.named_parameters()) {
        Tensor t = p.detach();
        t.requires_grad_(true);
        plain.emplace_back(n, t);
    }
    CHECK(plain.front().second.impl()->param.layer_id == -1);
    auto from_names = optim::get_params_groups(plain, o);
    REQUIRE(from_tree.size() == from_names.size());
    for (size_t i = 0; i < from_tree.size(); ++i) {
        CHECK(from_tree[i].name == from_names[i].name);
        CHECK(from_tree[i].names == from_names[i].names);
        CHECK(from_tree[i].lr_scale == from_names[i].lr_scale);
    }
    // A module replaced after construction takes its slot's id from its parent.
    small.head = small.register_module("head", std::make_shared<nn::Linear>(8, 4));
    CHECK(small.head->weight.impl()->param.layer_id == 13);
    auto stage2 = small.stages->get<nn::Sequential>(2);
    CHECK(stage2->get<models::Block>(6)->pwconv2->weight.impl()->param.layer_id == 5);
}

TEST_CASE("the fused block MLP runs only where its pattern holds", "[model][fusion]") {
    SingleThread single;
    Generator gen(7);
    models::Block b(8, 0.0, 0.5, &gen);
    randomize_params(b, 3);
    b.eval();
    Tensor x = randn({2, 9, 9, 8}, DType::F32, &gen);
    NoGradGuard ng;
    CHECK(b.mlp_fusable());
    Tensor fused = b.forward(x);
    Tensor reference = block_reference(b, x);
    CHECK(max_abs(sub(fused, reference)) < 1e-5);

    SECTION("a subclass of Linear runs its own forward") {
        model_check::double_pwconv2(b);
        CHECK_FALSE(b.mlp_fusable());
        Tensor y = b.forward(x);
        CHECK(max_abs(sub(y, fused)) > 1e-3);  // the subclass changed the output
        CHECK(max_abs(sub(y, block_reference(b, x))) < 1e-6);
        // The residual branch doubled: y - x == 2 (fused - x).
        CHECK(max_abs(sub(sub(y, x), mul(sub(fused, x), 2.0))) < 1e-5);
    }
    SECTION("a forward hook on a layer of the MLP sees it run") {
        int calls = 0;
        Shape seen;
        int h = b.pwconv1->register_forward_hook([&](nn::Module&, const Tensor&, const Tensor& out) {
            ++calls;
            seen = out.shape();
        });
        CHECK_FALSE(b.mlp_fusable());
        CHECK(max_abs(sub(b.forward(x), fused)) < 1e-5);
        CHECK(calls == 1);
        CHECK(seen == Shape{2, 9, 9, 32});
        b.pwconv1->remove_forward_hook(h);
        CHECK(b.mlp_fusable());
    }
    SECTION("tanh GELU and live drop path take the ordinary ops") {
        b.act = b.register_module("act", std::make_shared<nn::GELU>("tanh"));
        CHECK_FALSE(b.mlp_fusable());
        CHECK(max_abs(sub(b.forward(x), block_reference(b, x))) < 1e-6);
        models::Block d(8, 0.5, 0.5, &gen);
        randomize_params(d, 4);
        CHECK_FALSE(d.mlp_fusable());  // training mode, rate 0.5
        default_generator().manual_seed(11);
        Tensor y = d.forward(x);
        default_generator().manual_seed(11);
        CHECK(max_abs(sub(y, block_reference(d, x))) < 1e-6);
        d.eval();
        CHECK(d.mlp_fusable());
    }
}

TEST_CASE("name maps come from the tree: round trips for every registered model", "[model][names]") {
    for (const auto& name : models::model_names()) {
        INFO(name);
        auto m = meta_model(name);
        io::NameMap map(*m);
        auto sd = m->state_dict();
        std::vector<std::string> official;
        for (auto& [n, t] : sd) official.push_back(n);
        CHECK(map.detect(official) == io::NameStyle::Official);
        for (auto style : {io::NameStyle::Timm, io::NameStyle::Torchvision}) {
            INFO(io::name_style_name(style));
            io::NamedTensors styled = map.rename(sd, style);
            std::set<std::string> unique;
            std::vector<std::string> styled_names;
            for (auto& [n, t] : styled) unique.insert(n), styled_names.push_back(n);
            CHECK(unique.size() == sd.size());
            CHECK(map.detect(styled_names) == style);
            CHECK(io::NameMap::registered()->detect(styled_names) == style);
            io::NamedTensors back = map.rename(styled, io::NameStyle::Official);
            REQUIRE(back.size() == sd.size());
            for (size_t i = 0; i < sd.size(); ++i) {
                CHECK(back[i].first == sd[i].first);
                CHECK(back[i].second.shape() == sd[i].second.shape());
            }
        }
    }
}

TEST_CASE("torchvision: the tree's names are torchvision's, and its weights give its logits", "[model][names]") {
    const std::string dir = CONVNEXT_SOURCE_DIR "/tests/fixtures/torchvision/";
    std::ifstream f(dir + "names.json");
    REQUIRE(f.good());
    auto j = parse_json(f);
    // Every name and stored shape of torchvision.models.convnext_tiny (torchvision lists the
    // stages and downsamples interleaved; the official order lists the downsamples first).
    auto tiny = meta_model("convnext_tiny");
    std::map<std::string, Shape> got, want;
    for (auto& s : tiny->state_dict_names("torchvision")) got[s.styled] = s.styled_shape;
    for (auto& e : j.at("convnext_tiny")) want[e[0].get<std::string>()] = e[1].get<Shape>();
    CHECK(got.size() == tiny->state_dict().size());
    CHECK(got == want);

    // A small torchvision ConvNeXt's weights through the loader: detected, renamed, reshaped.
    auto cfg = j.at("small");
    ConvNeXtOptions o = small_options(cfg.at("depths").get<std::vector<int64_t>>(),
                                      cfg.at("dims").get<std::vector<int64_t>>(), cfg.at("num_classes").get<int64_t>());
    ConvNeXt model(o);
    io::WeightsOptions wo;
    wo.model = &model;
    io::LoadedWeights w = io::read_weights(dir + "small.pth", wo);
    CHECK(w.source_names == io::NameStyle::Torchvision);
    CHECK(io::read_weights(dir + "small.pth").source_names == io::NameStyle::Torchvision);
    REQUIRE(model.load_state_dict(w.tensors, true).ok());
    model.eval();
    auto io_fx = io::load_safetensors(dir + "small.safetensors");
    NoGradGuard ng;
    std::string diff = compare("logits", model.forward(io_fx.get("input")), io_fx.get("logits"), 1e-4);
    INFO(diff);
    CHECK(diff.empty());

    // Loaded as stored (layer_scale [C,1,1]) the values load too: size-1 dimensions do not matter.
    auto raw = io::read_pth(dir + "small.pth").tensors;
    ConvNeXt again(o);
    auto renamed = io::NameMap(again).rename(raw, io::NameStyle::Official);
    CHECK(again.load_state_dict(renamed, true).ok());
    io::NamedTensors unsqueezed;
    for (auto& [n, t] : renamed)
        unsqueezed.emplace_back(n, n.size() > 6 && n.substr(n.size() - 6) == ".gamma" ? t.reshape({t.numel(), 1, 1}) : t);
    CHECK(again.load_state_dict(unsqueezed, true).ok());
    // Back to torchvision's spelling, layer_scale is [C,1,1] again.
    auto back = io::NameMap(again).rename(again.state_dict(), io::NameStyle::Torchvision);
    for (auto& [n, t] : back)
        if (n == "features.1.0.layer_scale") CHECK(t.shape() == Shape{8, 1, 1});
    CHECK(back.back().first == "classifier.2.bias");

    // convert writes each spelling and reads any back.
    const std::string official = "/tmp/cnx_test_tv_official.safetensors", tv = "/tmp/cnx_test_tv_back.safetensors";
    int code = -1;
    std::string out = run_command(std::string(CONVNEXT_CLI) + " convert " + dir + "small.pth " + official + " 2>&1", &code);
    CHECK(code == 0);
    CHECK_THAT(out, Catch::Contains("torchvision names"));
    auto written = io::load_safetensors(official).tensors;
    CHECK(io::detect_name_style(written) == io::NameStyle::Official);
    CHECK(again.load_state_dict(written, true).ok());
    run_command(std::string(CONVNEXT_CLI) + " convert " + official + " " + tv + " --names torchvision 2>&1", &code);
    CHECK(code == 0);
    std::map<std::string, Shape> tv_shapes;
    for (auto& [n, t] : io::load_safetensors(tv).tensors) tv_shapes[n] = t.shape();
    std::map<std::string, Shape> raw_shapes;
    for (auto& [n, t] : raw) raw_shapes[n] = t.shape();
    CHECK(tv_shapes == raw_shapes);
    std::remove(official.c_str());
    std::remove(tv.c_str());
}
