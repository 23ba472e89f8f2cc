// ConvNeXt V2 (models/convnext_v2, nn/grn): the family's names, shapes and counts, GRN against
// its formula, the official weight-decay and layer-decay rules, timm's names, and the commands
// taking convnextv2_* names. The PyTorch reference fixture and the whole-model gradcheck run with
// V1's in test_model.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_util.h"
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/json.h"
#include "core/meta.h"
#include "core/rng.h"
#include "io/fcmae.h"
#include "io/key_names.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/convnext_v2.h"
#include "nn/init.h"
#include "ops/ops.h"
#include "optim/param_groups.h"
#include "model_check.h"

using namespace cnx;
using models::ConvNeXt;
using models::ConvNeXtOptions;

namespace {

ConvNeXtOptions v2_options(std::vector<int64_t> depths, std::vector<int64_t> dims, int64_t classes) {
    ConvNeXtOptions o = models::model_options("convnextv2_atto");
    o.depths = std::move(depths);
    o.dims = std::move(dims);
    o.num_classes = classes;
    return o;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    auto x = a.to_vector(), y = b.to_vector();
    REQUIRE(x.size() == y.size());
    double m = 0;
    for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
    return m;
}

// GRN by its definition, in double loops: what every implementation must equal.
std::vector<double> grn_by_hand(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-6) {
    const int64_t N = x.size(0), P = x.size(1) * x.size(2), C = x.size(3);
    auto xv = x.to_vector(), gv = gamma.to_vector(), bv = beta.to_vector();
    std::vector<double> out(xv.size());
    for (int64_t n = 0; n < N; ++n) {
        std::vector<double> g(C, 0.0);
        for (int64_t p = 0; p < P; ++p)
            for (int64_t c = 0; c < C; ++c) g[c] += xv[(n * P + p) * C + c] * xv[(n * P + p) * C + c];
        double m = 0;
        for (int64_t c = 0; c < C; ++c) m += (g[c] = std::sqrt(g[c])) / C;
        for (int64_t p = 0; p < P; ++p)
            for (int64_t c = 0; c < C; ++c) {
                const int64_t k = (n * P + p) * C + c;
                out[k] = gv[c] * xv[k] * (g[c] / (m + eps)) + bv[c] + xv[k];
            }
    }
    return out;
}

}  // namespace

TEST_CASE("V2: the official names, shapes and order, no layer scale, GRN starts as the identity", "[v2]") {
    ConvNeXtOptions o = v2_options({1, 2, 1, 1}, {8, 16, 24, 32}, 7);
    ConvNeXt m(o);
    auto sd = m.state_dict();
    auto shapes = models::parameter_shapes(o);
    REQUIRE(sd.size() == shapes.size());
    for (size_t i = 0; i < sd.size(); ++i) {
        CHECK(sd[i].first == shapes[i].first);
        CHECK(sd[i].second.shape() == shapes[i].second);
    }
    // The official block's registration order: dwconv, norm, pwconv1, act, grn, pwconv2.
    std::vector<std::pair<std::string, Shape>> block;
    for (auto& [n, t] : sd)
        if (n.rfind("stages.1.1.", 0) == 0) block.emplace_back(n.substr(11), t.shape());
    const std::vector<std::pair<std::string, Shape>> want{
        {"dwconv.weight", {16, 1, 7, 7}}, {"dwconv.bias", {16}},  {"norm.weight", {16}},
        {"norm.bias", {16}},              {"pwconv1.weight", {64, 16}}, {"pwconv1.bias", {64}},
        {"grn.gamma", {1, 1, 1, 64}},     {"grn.beta", {1, 1, 1, 64}},  {"pwconv2.weight", {16, 64}},
        {"pwconv2.bias", {16}}};
    CHECK(block == want);
    CHECK_FALSE(m.find("stages.0.0.gamma").defined());
    // V1's stem, downsampling layers, final norm and head.
    CHECK(sd.front().first == "downsample_layers.0.0.weight");
    CHECK(m.find("downsample_layers.2.1.weight").shape() == Shape{24, 16, 2, 2});
    CHECK(m.find("head.weight").shape() == Shape{7, 32});
    // Zero GRN parameters: each GRN passes its input through unchanged, at init and in meta mode.
    auto b = m.stages->get<nn::Sequential>(1)->get<models::BlockV2>(1);
    CHECK(b->grn->gamma.to_vector() == std::vector<double>(64, 0.0));
    CHECK(b->grn->beta.to_vector() == std::vector<double>(64, 0.0));
    Tensor x = randn({2, 5, 3, 64});
    CHECK(max_abs_diff((*b->grn)(x), x) == 0.0);
    // pwconv weights are drawn like every conv/linear of the tree (trunc_normal 0.02).
    double sq = 0;
    for (double v : b->pwconv1->weight.to_vector()) sq += v * v;
    CHECK(std::sqrt(sq / (64 * 16)) == Approx(0.02).epsilon(0.3));
    CHECK(b->pwconv1->bias.to_vector() == std::vector<double>(64, 0.0));
}

TEST_CASE("V2: convnext info reports the exact parameter counts and MACs of every variant", "[v2][cli]") {
    struct Want {
        const char* name;
        int64_t params;
        std::vector<int64_t> depths, dims;
    };
    const Want wants[] = {{"convnextv2_atto", 3708400, {2, 2, 6, 2}, {40, 80, 160, 320}},
                          {"convnextv2_femto", 5233240, {2, 2, 6, 2}, {48, 96, 192, 384}},
                          {"convnextv2_pico", 9066280, {2, 2, 6, 2}, {64, 128, 256, 512}},
                          {"convnextv2_nano", 15623800, {2, 2, 8, 2}, {80, 160, 320, 640}},
                          {"convnextv2_tiny", 28635496, {3, 3, 9, 3}, {96, 192, 384, 768}},
                          {"convnextv2_base", 88717800, {3, 3, 27, 3}, {128, 256, 512, 1024}},
                          {"convnextv2_large", 197956840, {3, 3, 27, 3}, {192, 384, 768, 1536}},
                          {"convnextv2_huge", 660289640, {3, 3, 27, 3}, {352, 704, 1408, 2816}}};
    for (auto& w : wants) {
        INFO(w.name);
        auto o = models::model_options(w.name);
        CHECK(o.depths == w.depths);
        CHECK(o.dims == w.dims);
        auto r = cli_test::run(std::string("info --model ") + w.name + " --json", false);
        REQUIRE(r.code == 0);
        auto j = parse_json(r.output);
        CHECK(j.at("params").get<int64_t>() == w.params);
        // MACs: the convolutions and linear layers at 224x224, the same as V1 of these widths
        // (GRN multiplies no matrices). Counted here from the architecture.
        int64_t macs = 56 * 56 * 3 * 16 * w.dims[0], side = 56;
        for (int s = 0; s < 4; ++s) {
            const int64_t C = w.dims[s], P = side * side;
            if (s > 0) macs += P * w.dims[s - 1] * 4 * C;
            macs += w.depths[s] * P * (49 * C + 8 * C * C);
            side /= 2;
        }
        macs += w.dims[3] * 1000;
        CHECK(j.at("macs").get<int64_t>() == macs);
    }
}

TEST_CASE("V2: the GRN module equals its formula, gradchecks in float64, and checks its input", "[v2][grn]") {
    Generator gen(5);
    nn::GRN grn(6);
    nn::init::normal_(grn.gamma, 0.0, 1.0, &gen);
    nn::init::normal_(grn.beta, 0.0, 1.0, &gen);
    Tensor x = randn({2, 3, 5, 6}, DType::F32, &gen);
    auto want = grn_by_hand(x, grn.gamma, grn.beta);
    auto got = grn(x).to_vector();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    CHECK(worst < 1e-5);

    grn.to(DType::F64);
    Tensor x64 = randn({2, 7, 5, 6}, DType::F64, &gen);
    // With respect to the input and both parameters (the inputs stand in for the parameters).
    Tensor gamma = grn.gamma, beta = grn.beta;
    auto r = gradcheck(
        [&](const std::vector<Tensor>& in) {
            grn.gamma = in[1];
            grn.beta = in[2];
            return grn.forward(in[0]);
        },
        {x64, gamma.detach().clone(), beta.detach().clone()});
    grn.gamma = gamma;
    grn.beta = beta;
    INFO(r.worst);
    CHECK(r.pass);
    grn.zero_grad();
    grn.forward(x64).backward(ones({2, 7, 5, 6}, DType::F64));
    REQUIRE(grn.gamma.grad().defined());
    CHECK(grn.gamma.grad().shape() == Shape{1, 1, 1, 6});
    CHECK(grn.beta.grad().to_vector() == std::vector<double>(6, 70.0));  // dy = 1 summed over 2*7*5

    CHECK_THROWS_WITH(grn.forward(randn({2, 3, 5, 4}, DType::F64)), Catch::Contains("GRN(6)") &&
                                                                         Catch::Contains("NHWC with 6 channels"));
    CHECK_THROWS_WITH(nn::GRN(0), Catch::Contains("GRN: dim must be positive"));
}

TEST_CASE("V2: GRN parameters are never weight-decayed, layer ids follow the official rule", "[v2][optim]") {
    ConvNeXt m(v2_options({2, 2, 7, 2}, {8, 8, 8, 8}, 3));
    optim::ParamGroupOptions o;
    o.weight_decay = 0.05;
    auto groups = optim::get_params_groups(m, o);
    REQUIRE(groups.size() == 2);
    std::set<std::string> no_decay(groups[1].names.begin(), groups[1].names.end());
    std::set<std::string> decay(groups[0].names.begin(), groups[0].names.end());
    int grn_params = 0;
    for (auto& [n, p] : m.named_parameters()) {
        INFO(n);
        // The official V2 rule: 1-D, names ending .bias, .gamma or .beta.
        auto ends = [&](const std::string& s) { return n.size() >= s.size() && n.substr(n.size() - s.size()) == s; };
        const bool official_no_decay = p.dim() == 1 || ends(".bias") || ends(".gamma") || ends(".beta");
        CHECK(no_decay.count(n) == (official_no_decay ? 1u : 0u));
        CHECK(decay.count(n) == (official_no_decay ? 0u : 1u));
        CHECK(p.impl()->param.layer_id == optim::convnext_layer_id(n));
        if (n.find(".grn.") != std::string::npos) {
            ++grn_params;
            CHECK(p.dim() == 4);
        }
    }
    CHECK(grn_params == 2 * 13);
}

TEST_CASE("V2: timm's names and shapes come from the tree and load back", "[v2][names]") {
    ConvNeXtOptions o = v2_options({1, 1, 2, 1}, {8, 16, 24, 32}, 5);
    Generator gen(3);
    ConvNeXt a(o, &gen);
    for (auto& [n, p] : a.named_parameters()) {
        Tensor t = p;
        nn::init::normal_(t, 0.0, 1.0, &gen);
    }
    std::map<std::string, Shape> timm;
    for (auto& s : a.state_dict_names("timm")) timm[s.styled] = s.styled_shape;
    CHECK(timm.at("stem.0.weight") == Shape{8, 3, 4, 4});
    CHECK(timm.at("stages.2.downsample.1.weight") == Shape{24, 16, 2, 2});
    CHECK(timm.at("stages.2.blocks.1.conv_dw.weight") == Shape{24, 1, 7, 7});
    CHECK(timm.at("stages.2.blocks.1.mlp.fc1.weight") == Shape{96, 24});
    CHECK(timm.at("stages.2.blocks.1.mlp.grn.weight") == Shape{96});
    CHECK(timm.at("stages.2.blocks.1.mlp.grn.bias") == Shape{96});
    CHECK(timm.at("stages.2.blocks.1.mlp.fc2.bias") == Shape{24});
    CHECK(timm.at("head.norm.weight") == Shape{32});
    CHECK(timm.at("head.fc.weight") == Shape{5, 32});
    CHECK(timm.size() == a.state_dict().size());

    // Renamed to timm (1-D GRN parameters) and back through the registered names, into a fresh model.
    io::NamedTensors styled = io::rename_to(a.state_dict(), io::NameStyle::Timm);
    CHECK(io::detect_name_style(styled) == io::NameStyle::Timm);
    for (auto& [n, t] : styled)
        if (n.find("mlp.grn.") != std::string::npos) CHECK(t.dim() == 1);
    ConvNeXt b(o);
    REQUIRE(b.load_state_dict(io::rename_to(styled, io::NameStyle::Official), true).ok());
    for (auto& [n, t] : a.state_dict()) CHECK(b.find(n).to_vector() == t.to_vector());
    // timm's small variants keep the MLP as 1x1 convolutions: fc1 [4C, C, 1, 1] loads as [4C, C].
    io::NamedTensors conv_mlp;
    for (auto& [n, t] : styled)
        conv_mlp.emplace_back(n, n.find("mlp.fc") != std::string::npos && n.find("weight") != std::string::npos
                                     ? t.reshape({t.size(0), t.size(1), 1, 1})
                                     : t);
    ConvNeXt c(o);
    REQUIRE(c.load_state_dict(io::rename_to(conv_mlp, io::NameStyle::Official), true).ok());
    CHECK(c.find("stages.3.0.pwconv2.weight").to_vector() == a.find("stages.3.0.pwconv2.weight").to_vector());
}

TEST_CASE("V2: train, eval, predict, bench and convert take convnextv2 names", "[v2][cli]") {
    using namespace cli_test;
    fs::path out = temp_dir("v2_cli");
    const std::string micro = "--model convnextv2_atto --depths 1,1,1,1 --dims 8,16,32,64 --image-size 32 --crop-pct 1 ";
    auto r = run("train --data " + fixture("train_folder") + " " + micro +
                 "--batch-size 4 --epochs 1 --warmup-epochs 0 --workers 1 --out " + (out / "run").string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    const std::string best = (out / "run" / "best.safetensors").string();
    r = run("eval " + micro + "--weights " + best + " --data " + fixture("train_folder") + " --json");
    INFO(r.output);
    CHECK(r.code == 0);
    r = run("convert " + best + " " + (out / "timm.safetensors").string() + " --names timm");
    INFO(r.output);
    REQUIRE(r.code == 0);
    auto timm = io::load_safetensors((out / "timm.safetensors").string());
    CHECK(timm.get("stages.0.blocks.0.mlp.grn.weight").shape() == Shape{32});
    r = run("convert " + (out / "timm.safetensors").string() + " " + (out / "official.safetensors").string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    auto official = io::load_safetensors((out / "official.safetensors").string());
    CHECK(official.get("stages.0.0.grn.gamma").shape() == Shape{1, 1, 1, 32});
    auto trained = io::load_safetensors(best);
    CHECK(official.get("stages.3.0.grn.beta").to_vector() == trained.get("stages.3.0.grn.beta").to_vector());

    // predict: a convnextv2_atto (the registered shapes) with 3 classes, random weights.
    {
        ConvNeXtOptions o;
        o.num_classes = 3;
        Generator gen(9);
        auto model = models::create_model("convnextv2_atto", o, &gen);
        for (auto& [n, p] : model->named_parameters())
            if (n.find("grn.") != std::string::npos || n.rfind("head.", 0) == 0) copy_(p, randn(p.shape(), DType::F32, &gen));
        io::save_safetensors((out / "atto.safetensors").string(), model->state_dict());
        const std::string image = fixture("train_folder/circles/img_00.png");
        r = run("predict --model convnextv2_atto --weights " + (out / "atto.safetensors").string() + " --image " +
                    image + " --resize 32 --crop 32 --topk 3 --json",
                false);
        INFO(r.output);
        REQUIRE(r.code == 0);
        auto j = parse_json(r.output);
        REQUIRE(j["top"].size() == 3);
        double total = 0;
        for (auto& e : j["top"]) total += e["prob"].get<double>();
        CHECK(total == Approx(1.0).epsilon(1e-5));
        r = run("predict --model convnext_atto --weights " + (out / "atto.safetensors").string() + " --image " + image);
        CHECK(r.code == 1);
        CHECK_THAT(r.output, Catch::Contains("do not fit convnext_atto") && Catch::Contains("they fit convnextv2_atto"));
    }
    for (const char* mode : {"train", "infer"}) {
        r = run(std::string("bench --model convnextv2_atto --batch-size 2 --image-size 32 --steps 1 --warmup 0 --json "
                            "--mode ") + mode, false);
        INFO(r.output);
        REQUIRE(r.code == 0);
        auto j = parse_json(r.output);
        CHECK(j["model"] == "convnextv2_atto");
        CHECK(j["img_per_s"].get<double>() > 0);
    }
    fs::remove_all(out);
}

// ---- level 3: the fused MLP, where its pattern holds ----

namespace {

// A GRN that adds one: a user's subclass the fused path must not bypass.
struct ShiftedGRN : nn::GRN {
    using nn::GRN::GRN;
    Tensor forward(const Tensor& x) override { return add(nn::GRN::forward(x), 1.0); }
};

// The unfused block from public pieces: what every forward must equal.
Tensor block_reference(models::BlockV2& b, const Tensor& x) {
    Tensor y = b.norm->forward(b.dwconv->forward(x));
    y = b.pwconv2->forward(b.grn->forward(b.act->forward(b.pwconv1->forward(y))));
    return add(x, b.drop_path->forward(y));
}

void randomize(nn::Module& m, uint64_t seed) {
    Generator gen(seed);
    for (auto& [n, p] : m.named_parameters()) {
        Tensor t = p;
        nn::init::normal_(t, n.find("norm.weight") != std::string::npos ? 1.0 : 0.0, 0.3, &gen);
    }
}

double max_abs(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector()) m = std::max(m, std::fabs(v));
    return m;
}

// Output and every gradient of the block with and without the fused op, within tol of scale.
void check_fused_equals_reference(models::BlockV2& b, const Tensor& x_in, double tol, uint64_t seed = 5) {
    std::vector<Tensor> outs, grads[2];
    Generator wg(17);
    Tensor w;
    for (int fused = 1; fused >= 0; --fused) {
        Tensor x = x_in.clone();
        x.requires_grad_(true);
        b.zero_grad();
        default_generator().manual_seed(seed);
        Tensor y = fused ? b.forward(x) : block_reference(b, x);
        if (!w.defined()) w = randn(y.shape(), y.dtype(), &wg);
        sum(mul(y, w)).backward();
        outs.push_back(y.detach());
        grads[fused].push_back(x.grad());
        for (auto& [n, p] : b.named_parameters()) grads[fused].push_back(p.grad());
    }
    INFO("output");
    CHECK(max_abs(sub(outs[0], outs[1])) <= tol * std::max(1.0, max_abs(outs[1])));
    auto names = b.named_parameters();
    for (size_t i = 0; i < grads[0].size(); ++i) {
        INFO("gradient of " << (i == 0 ? std::string("the input") : names[i - 1].first));
        REQUIRE(grads[1][i].defined());
        REQUIRE(grads[0][i].shape() == grads[1][i].shape());
        CHECK(max_abs(sub(grads[1][i], grads[0][i])) <= tol * std::max(1.0, max_abs(grads[0][i])));
    }
}

}  // namespace

TEST_CASE("V2: the fused MLP equals the ordinary ops, forward and backward", "[v2][fusion]") {
    Generator gen(7);
    models::BlockV2 b(24, 0.0, &gen);
    randomize(b, 3);
    CHECK(b.mlp_fusable());
    // Large enough for the threaded passes: several images, rows of 96 hidden channels.
    check_fused_equals_reference(b, randn({3, 17, 15, 24}, DType::F32, &gen), 2e-5);
    check_fused_equals_reference(b, randn({9, 5, 4, 24}, DType::F32, &gen), 2e-5);
    b.to(DType::F64);
    check_fused_equals_reference(b, randn({2, 7, 9, 24}, DType::F64, &gen), 1e-12);
    b.to(DType::F32);
    b.eval();
    NoGradGuard ng;
    Tensor x = randn({2, 9, 9, 24}, DType::F32, &gen);
    CHECK(max_abs(sub(b.forward(x), block_reference(b, x))) < 1e-5);
}

TEST_CASE("V2: the fused MLP runs only where its pattern holds", "[v2][fusion]") {
    Generator gen(8);
    models::BlockV2 b(8, 0.0, &gen);
    randomize(b, 4);
    b.eval();
    Tensor x = randn({2, 9, 9, 8}, DType::F32, &gen);
    NoGradGuard ng;
    REQUIRE(b.mlp_fusable());
    Tensor fused = b.forward(x);

    SECTION("a subclass of Linear or of GRN runs its own forward") {
        model_check::double_pwconv2(b);
        CHECK_FALSE(b.mlp_fusable());
        Tensor y = b.forward(x);
        CHECK(max_abs(sub(sub(y, x), mul(sub(fused, x), 2.0))) < 1e-5);  // the residual branch doubled

        models::BlockV2 c(8, 0.0, &gen);
        randomize(c, 4);
        c.eval();
        auto shifted = std::make_shared<ShiftedGRN>(32);
        copy_(shifted->gamma, c.grn->gamma);
        copy_(shifted->beta, c.grn->beta);
        c.grn = c.register_module("grn", shifted);
        CHECK_FALSE(c.mlp_fusable());
        CHECK(max_abs(sub(c.forward(x), block_reference(c, x))) < 1e-6);
        CHECK(max_abs(sub(c.forward(x), fused)) > 1e-3);
        CHECK(c.state_dict_names("timm")[6].styled == "mlp.grn.weight");  // the slot keeps its aliases
    }
    SECTION("a forward hook on a layer of the MLP sees it run") {
        int calls = 0;
        int h = b.grn->register_forward_hook([&](nn::Module&, const Tensor&, const Tensor&) { ++calls; });
        CHECK_FALSE(b.mlp_fusable());
        CHECK(max_abs(sub(b.forward(x), fused)) < 1e-5);
        CHECK(calls == 1);
        b.grn->remove_forward_hook(h);
        CHECK(b.mlp_fusable());
    }
    SECTION("tanh GELU takes the ordinary ops") {
        b.act = b.register_module("act", std::make_shared<nn::GELU>("tanh"));
        CHECK_FALSE(b.mlp_fusable());
        CHECK(max_abs(sub(b.forward(x), block_reference(b, x))) < 1e-6);
    }
}

TEST_CASE("V2: with drop path live the fused MLP feeds drop path, which draws as the ordinary ops do",
          "[v2][fusion]") {
    Generator gen(9);
    models::BlockV2 b(16, 0.5, &gen);
    randomize(b, 6);
    b.train();
    CHECK(b.mlp_fusable());
    Tensor x = randn({6, 7, 7, 16}, DType::F32, &gen);
    check_fused_equals_reference(b, x, 2e-5, 11);
    // Over a few draws some samples were dropped (their outputs are their inputs), others kept.
    NoGradGuard ng;
    int dropped = 0;
    for (uint64_t seed = 11; seed < 15; ++seed) {
        default_generator().manual_seed(seed);
        Tensor y = b.forward(x);
        for (int64_t n = 0; n < 6; ++n) dropped += max_abs(sub(narrow(y, 0, n, 1), narrow(x, 0, n, 1))) == 0.0;
    }
    CHECK(dropped > 0);
    CHECK(dropped < 24);
}

TEST_CASE("convnextv2_mlp checks its arguments", "[v2][fusion]") {
    Tensor u = randn({2, 3, 3, 4}), w1 = randn({8, 4}), w2 = randn({4, 8}), g = randn({8}), be = randn({8});
    CHECK_THROWS_WITH(convnextv2_mlp(randn({18, 4}), w1, Tensor(), g, be, w2, Tensor(), Tensor()),
                      Catch::Contains("input must be NHWC"));
    CHECK_THROWS_WITH(convnextv2_mlp(u, w1, Tensor(), randn({1, 1, 1, 7}), be, w2, Tensor(), Tensor()),
                      Catch::Contains("GRN gamma float32[1,1,1,7] should hold 8 values"));
    CHECK_THROWS_WITH(convnextv2_mlp(u, w1, Tensor(), g, be, randn({4, 7}), Tensor(), Tensor()),
                      Catch::Contains("w2 float32[4,7] should be [4, 8]"));
    CHECK_THROWS_WITH(convnextv2_mlp(u, w1, Tensor(), g, be, w2, Tensor(), randn({2, 3, 3, 5})),
                      Catch::Contains("residual"));
    CHECK_THROWS_WITH(convnextv2_mlp(u, w1, Tensor(), g, Tensor(), w2, Tensor(), Tensor()),
                      Catch::Contains("undefined"));
}

// ---- weights: official checkpoints, timm's names, safetensors, FCMAE pre-training ----

TEST_CASE("V2: predict on PyTorch's official .pt and a timm-named safetensors gives PyTorch's probabilities",
          "[v2][predict]") {
    // tools/gen_v2_weights_fixtures.py: one micro V2's random weights saved both ways, and
    // PyTorch's softmax for image.png (32x32, so --resize 32 --crop 32 is no resampling).
    using namespace cli_test;
    std::ifstream rf(fixture("v2/probs.json"));
    auto ref = parse_json(rf);
    auto want = ref["probs"].get<std::vector<double>>();
    REQUIRE(want.size() == 4);
    for (const char* file : {"official.pt", "timm.safetensors"}) {
        INFO(file);
        auto r = run(std::string("predict --model convnextv2_atto --depths 1,1,2,1 --dims 8,16,24,32 --weights ") +
                         fixture(std::string("v2/") + file) + " --image " + fixture("v2/image.png") +
                         " --resize 32 --crop 32 --topk 4 --json",
                     false);
        INFO(r.output);
        REQUIRE(r.code == 0);
        auto j = parse_json(r.output);
        REQUIRE(j["top"].size() == 4);
        for (auto& e : j["top"]) {
            const int64_t i = e["index"];
            CHECK(std::fabs(e["prob"].get<double>() - want[i]) <= 1e-4);
        }
    }
    // The same files through the library: their spelling detected, the same tensors.
    io::LoadedWeights official = io::read_weights(fixture("v2/official.pt"));
    io::LoadedWeights timm = io::read_weights(fixture("v2/timm.safetensors"));
    CHECK(official.key == "model");
    CHECK(official.source_names == io::NameStyle::Official);
    CHECK(timm.source_names == io::NameStyle::Timm);
    REQUIRE(official.tensors.size() == timm.tensors.size());
    for (size_t i = 0; i < official.tensors.size(); ++i) {
        INFO(official.tensors[i].first);
        CHECK(official.tensors[i].first == timm.tensors[i].first);
        CHECK(official.tensors[i].second.to_vector() == timm.tensors[i].second.to_vector());
    }
    // convert writes timm's names from the official file, and back.
    fs::path out = temp_dir("v2_convert");
    auto r = run("convert " + fixture("v2/official.pt") + " " + (out / "timm.safetensors").string() + " --names timm");
    REQUIRE(r.code == 0);
    auto converted = io::load_safetensors((out / "timm.safetensors").string());
    auto theirs = io::load_safetensors(fixture("v2/timm.safetensors"));
    REQUIRE(converted.tensors.size() == theirs.tensors.size());
    for (auto& [name, t] : theirs.tensors) {
        INFO(name);
        Tensor mine = converted.get(name);
        CHECK(nn::same_up_to_unit_dims(mine.shape(), t.shape()));  // timm's conv-MLP fc weights are [4C,C,1,1]
        CHECK(mine.to_vector() == t.to_vector());
    }
    CHECK(converted.get("stages.2.blocks.1.mlp.grn.weight").shape() == Shape{96});
    fs::remove_all(out);
}

TEST_CASE("V2: an FCMAE pre-training checkpoint loads its encoder for fine-tuning", "[v2][fcmae]") {
    using namespace cli_test;
    io::LoadedWeights w = io::read_weights(fixture("v2/fcmae.pt"));
    CHECK(w.fcmae);
    CHECK(w.key == "model");
    CHECK(w.dropped.size() == 15);  // decoder.0.*, proj.*, pred.*, mask_token
    for (auto& d : w.dropped) CHECK((d.rfind("decoder.", 0) == 0 || d.rfind("proj.", 0) == 0 ||
                                     d.rfind("pred.", 0) == 0 || d == "mask_token"));
    // PyTorch's dense encoder, which the official remap gives (checked by the generating script).
    auto want = io::load_safetensors(fixture("v2/fcmae_expected.safetensors"));
    REQUIRE(w.tensors.size() == want.tensors.size());
    for (size_t i = 0; i < want.tensors.size(); ++i) {
        INFO(want.tensors[i].first);
        CHECK(w.tensors[i].first == want.tensors[i].first);
        CHECK(w.tensors[i].second.shape() == want.tensors[i].second.shape());
        CHECK(w.tensors[i].second.to_vector() == want.tensors[i].second.to_vector());
    }

    // Fine-tuning from it: everything but the final norm and the head loads.
    fs::path out = temp_dir("v2_fcmae");
    auto r = run("train --data " + fixture("train_folder") +
                 " --model convnextv2_atto --depths 1,1,1,1 --dims 8,8,16,16 --image-size 32 --crop-pct 1 --weights " +
                 fixture("v2/fcmae.pt") + " --batch-size 4 --epochs 1 --workers 1 --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("loaded 56/60 tensors") && Catch::Contains("FCMAE pre-training checkpoint") &&
                             Catch::Contains("missing (kept at init): head.weight"));
    auto trained = io::load_safetensors((out / "checkpoint.safetensors").string());
    CHECK(trained.get("model.stages.0.0.grn.gamma").shape() == Shape{1, 1, 1, 32});
    fs::remove_all(out);

    // The remap by itself: wrappers, kernels, biases, GRN; a kernel of the wrong shape is named.
    io::NamedTensors sparse{{"encoder.stages.0.0.dwconv.kernel", arange(18).reshape({9, 2})},
                            {"encoder.stages.0.0.dwconv.bias", zeros({1, 2})},
                            {"encoder.downsample_layers.1.0.ln.weight", ones({2})},
                            {"encoder.downsample_layers.1.1.kernel", arange(24).reshape({4, 2, 3})},
                            {"encoder.stages.1.0.pwconv1.linear.weight", zeros({12, 3})},
                            {"encoder.stages.1.0.grn.beta", zeros({1, 12})},
                            {"mask_token", zeros({1, 4, 1, 1})}};
    CHECK(io::is_fcmae_checkpoint({"encoder.stages.0.0.dwconv.kernel", "decoder.0.dwconv.weight"}));
    CHECK_FALSE(io::is_fcmae_checkpoint({"stages.0.0.dwconv.weight", "encoder_head.weight"}));
    io::FcmaeRemap m = io::remap_fcmae(sparse);
    REQUIRE(m.tensors.size() == 6);
    CHECK(m.dropped == std::vector<std::string>{"mask_token"});
    CHECK(m.tensors[0].first == "stages.0.0.dwconv.weight");
    CHECK(m.tensors[0].second.shape() == Shape{2, 1, 3, 3});
    // w[c, 0, kh, kw] = v[kw * 3 + kh, c]: element (c 1, kh 0, kw 1) is v[3, 1] = 7.
    CHECK(m.tensors[0].second.to_vector()[(1 * 3 + 0) * 3 + 1] == 7.0);
    CHECK(m.tensors[1].second.shape() == Shape{2});
    CHECK(m.tensors[2].first == "downsample_layers.1.0.weight");
    CHECK(m.tensors[3].first == "downsample_layers.1.1.weight");
    CHECK(m.tensors[3].second.shape() == Shape{3, 2, 2, 2});
    // w[o, i, kh, kw] = v[kw * 2 + kh, i, o]: (o 2, i 1, kh 1, kw 0) is v[1, 1, 2] = 11.
    CHECK(m.tensors[3].second.to_vector()[((2 * 2 + 1) * 2 + 1) * 2 + 0] == 11.0);
    CHECK(m.tensors[4].first == "stages.1.0.pwconv1.weight");
    CHECK(m.tensors[5].second.shape() == Shape{1, 1, 1, 12});
    CHECK_THROWS_WITH(io::remap_fcmae({{"encoder.stages.0.0.dwconv.kernel", zeros({48, 8})}}),
                      Catch::Contains("encoder.stages.0.0.dwconv.kernel") &&
                          Catch::Contains("is not a sparse convolution kernel"));
}
