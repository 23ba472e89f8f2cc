// Optimisers, schedules, parameter groups, clipping and EMA. Trajectories are checked against
// tests/fixtures/optim_reference.json, written by tools/gen_optim_fixture.py with PyTorch 1.13.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "core/json.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "optim/optim.h"

using namespace cnx;
using json = nlohmann::json;

namespace {

const json& fixture() {
    static const json fx = [] {
        std::ifstream in(CONVNEXT_SOURCE_DIR "/tests/fixtures/optim_reference.json");
        REQUIRE(in.good());
        return parse_json(in);
    }();
    return fx;
}

Shape shape_of(const std::string& name) { return fixture()["shapes"][name].get<Shape>(); }

Tensor tensor_from(const json& values, const Shape& shape, DType dtype) {
    return from_vector(values.get<std::vector<double>>(), shape, dtype);
}

// "" when every element satisfies |got - want| <= rtol * |want| + atol; otherwise a report naming
// the first offending element and the largest error.
std::string compare(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                    double rtol, double atol = 0) {
    std::ostringstream os;
    if (got.size() != want.size()) {
        os << what << ": " << got.size() << " values, expected " << want.size();
        return os.str();
    }
    int64_t bad = 0, first = -1;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(got[i] - want[i]);
        if (!(err <= rtol * std::fabs(want[i]) + atol)) {
            if (first < 0) first = (int64_t)i;
            ++bad;
        }
        worst = std::max(worst, err / std::max(std::fabs(want[i]), 1e-30));
    }
    if (bad == 0) return "";
    os.precision(10);
    os << what << ": " << bad << " of " << got.size() << " values differ; first at " << first << ": got "
       << got[first] << ", expected " << want[first] << " (max relative error " << worst << ")";
    return os.str();
}

std::string compare(const std::string& what, const Tensor& got, const json& want, double rtol, double atol = 0) {
    return compare(what, got.to_vector(), want.get<std::vector<double>>(), rtol, atol);
}

double max_rel_err(const Tensor& got, const json& want) {
    auto g = got.to_vector();
    auto w = want.get<std::vector<double>>();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i)
        worst = std::max(worst, std::fabs(g[i] - w[i]) / std::max(std::fabs(w[i]), 1e-30));
    return worst;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The fixture's four parameters, in its order, as leaves that require grad.
optim::NamedTensors make_params(DType dtype) {
    optim::NamedTensors out;
    for (const auto& n : fixture()["order"]) {
        const std::string name = n.get<std::string>();
        Tensor t = tensor_from(fixture()["init"][name], shape_of(name), dtype);
        t.requires_grad_(true);
        out.emplace_back(name, t);
    }
    return out;
}

void set_grads(optim::NamedTensors& params, int step, DType dtype) {
    for (auto& kv : params) kv.second.set_grad(tensor_from(fixture()["grads"][step][kv.first], kv.second.shape(), dtype));
}

optim::WarmupCosine fixture_schedule() {
    const json& s = fixture()["schedule"];
    return optim::WarmupCosine(s["num_step"].get<int64_t>(), s["epochs"].get<int64_t>(), true,
                               s["warmup_epochs"].get<int64_t>());
}

// Runs a fixture trajectory: get_params_groups (decay / no_decay), the warmup+cosine LambdaLR,
// the fixture's gradients; checks group lrs before and parameters after every step, then the
// final optimiser state. Returns the worst relative error seen on the parameters.
template <class Opt, class Options>
double check_run(const std::string& run_key, Options options, DType dtype, double rtol, double atol) {
    const json& run = fixture()["runs"][run_key];
    auto params = make_params(dtype);
    Opt opt(optim::get_params_groups(params, fixture()["weight_decay"].get<double>()), options);
    optim::LambdaLR sched(opt, fixture_schedule());
    double worst = 0;
    const int steps = fixture()["steps"].get<int>();
    for (int t = 0; t < steps; ++t) {
        set_grads(params, t, dtype);
        for (size_t g = 0; g < 2; ++g) {
            INFO(run_key << " step " << t << " group " << g);
            CHECK(opt.param_groups()[g].effective_lr() == Approx(run["lrs"][t][g].get<double>()).epsilon(1e-15));
        }
        opt.step();
        sched.step();
        for (const auto& kv : params) {
            const std::string report =
                compare(run_key + " step " + std::to_string(t) + " " + kv.first, kv.second, run["params"][t][kv.first],
                        rtol, atol);
            CHECK(report == "");
            worst = std::max(worst, max_rel_err(kv.second, run["params"][t][kv.first]));
        }
    }
    const optim::OptimizerState st = opt.state_dict();
    for (const auto& kv : params) {
        const json& want = run["state"][kv.first];
        // PyTorch's SGD keeps no step count; ours counts steps for every optimiser.
        CHECK(st.scalars.at("optim." + kv.first + ".step") == std::to_string(steps));
        if (want.contains("step")) CHECK(want["step"].get<double>() == steps);
        size_t buffers = 0;
        for (const auto& tensor : st.tensors) {
            const std::string prefix = "optim." + kv.first + ".";
            if (tensor.first.compare(0, prefix.size(), prefix) != 0) continue;
            const std::string key = tensor.first.substr(prefix.size());
            REQUIRE(want.contains(key));
            CHECK(compare(run_key + " state " + tensor.first, tensor.second, want[key], rtol, atol) == "");
            ++buffers;
        }
        CHECK(buffers + (want.contains("step") ? 1 : 0) == want.size());  // every PyTorch state entry
    }
    return worst;
}

}  // namespace

TEST_CASE("fixture compare helper reports a 1e-3 nudge", "[optim][fixture]") {
    // Four real AdamW steps; the result matches the fixture, and no longer does once one
    // fixture value moves by 1e-3.
    const json& run = fixture()["runs"]["adamw"];
    auto params = make_params(DType::F32);
    optim::AdamW opt(optim::get_params_groups(params, fixture()["weight_decay"].get<double>()),
                     optim::AdamWOptions(0.05));
    optim::LambdaLR sched(opt, fixture_schedule());
    for (int t = 0; t < 4; ++t) {
        set_grads(params, t, DType::F32);
        opt.step();
        sched.step();
    }
    const Tensor& p = params[0].second;
    CHECK(compare("fc1.weight", p, run["params"][3]["fc1.weight"], 1e-5, 1e-7) == "");
    json nudged = run["params"][3]["fc1.weight"];
    nudged[17] = nudged[17].get<double>() + 1e-3;
    const std::string report = compare("fc1.weight", p, nudged, 1e-5, 1e-7);
    CHECK(report != "");
    CHECK(report.find("1 of 40 values differ; first at 17") != std::string::npos);
}

TEST_CASE("AdamW matches PyTorch 1.13 (two groups, wd 0.05, warmup+cosine)", "[optim][adamw]") {
    check_run<optim::AdamW>("adamw", optim::AdamWOptions(0.05), DType::F32, 1e-5, 1e-7);
}

TEST_CASE("AdamW amsgrad matches PyTorch", "[optim][adamw]") {
    auto o = optim::AdamWOptions(0.05).betas({0.8, 0.99}).eps(1e-6).amsgrad(true);
    check_run<optim::AdamW>("adamw_amsgrad", o, DType::F32, 1e-5, 1e-7);
}

TEST_CASE("AdamW on float64 parameters matches PyTorch", "[optim][adamw]") {
    check_run<optim::AdamW>("adamw_f64", optim::AdamWOptions(0.05), DType::F64, 1e-12, 1e-15);
}

TEST_CASE("SGD with Nesterov momentum and weight decay matches PyTorch", "[optim][sgd]") {
    auto o = optim::SGDOptions(0.1).momentum(0.9).nesterov(true);
    check_run<optim::SGD>("sgd_nesterov", o, DType::F32, 1e-5, 1e-7);
}

TEST_CASE("SGD with momentum and dampening matches PyTorch", "[optim][sgd]") {
    auto o = optim::SGDOptions(0.1).momentum(0.9).dampening(0.1);
    check_run<optim::SGD>("sgd_dampening", o, DType::F32, 1e-5, 1e-7);
}

TEST_CASE("AdamW defaults and option checks", "[optim][adamw]") {
    optim::AdamWOptions d;
    CHECK(d.lr() == 1e-3);
    CHECK(d.beta1() == 0.9);
    CHECK(d.beta2() == 0.999);
    CHECK(d.eps() == 1e-8);
    CHECK(d.weight_decay() == 1e-2);
    CHECK_FALSE(d.amsgrad());
    auto o = optim::AdamWOptions(5e-4).weight_decay(0.05).betas({0.9, 0.95});
    CHECK(o.lr() == 5e-4);
    CHECK(o.weight_decay() == 0.05);
    CHECK(o.beta2() == 0.95);

    Tensor w = zeros({3});
    w.requires_grad_(true);
    CHECK_THROWS_WITH(optim::AdamW({{"w", w}}, optim::AdamWOptions(1e-3).betas({1.0, 0.999})),
                      Catch::Contains("beta1"));
    CHECK_THROWS_WITH(optim::AdamW({{"w", w}}, optim::AdamWOptions(-1.0)), Catch::Contains("learning rate"));
    // One tensor in two groups.
    std::vector<optim::ParamGroup> groups(2);
    groups[0].params = {w};
    groups[1].params = {w};
    CHECK_THROWS_WITH(optim::AdamW(groups), Catch::Contains("more than one param group"));
    CHECK_THROWS_WITH(optim::SGD({{"w", w}}, optim::SGDOptions(0.1).nesterov(true)), Catch::Contains("nesterov"));
}

TEST_CASE("step skips frozen parameters and missing gradients, zero_grad sets to none", "[optim]") {
    Tensor a = from_vector({1, 2, 3}, {3}), b = from_vector({4, 5}, {2}), frozen = from_vector({6, 7}, {2});
    a.requires_grad_(true);
    b.requires_grad_(true);
    optim::AdamW opt({{"a", a}, {"b", b}, {"frozen", frozen}}, optim::AdamWOptions(0.1));
    const Tensor b0 = b.clone(), f0 = frozen.clone(), a0 = a.clone();
    a.set_grad(from_vector({1, 1, 1}, {3}));
    frozen.set_grad(from_vector({1, 1}, {2}));  // requires_grad is off: must stay untouched
    opt.step();
    CHECK_FALSE(bitwise_equal(a, a0));
    CHECK(bitwise_equal(b, b0));
    CHECK(bitwise_equal(frozen, f0));
    CHECK(opt.step_count("a") == 1);
    CHECK(opt.step_count("b") == 0);
    CHECK(opt.step_count("frozen") == 0);
    opt.zero_grad();
    CHECK_FALSE(a.grad().defined());
    CHECK_FALSE(frozen.grad().defined());

    // A gradient of the wrong dtype is an error naming the parameter.
    b.set_grad(from_vector({1, 1}, {2}, DType::F64));
    CHECK_THROWS_WITH(opt.step(), Catch::Contains("'b'"));
}

TEST_CASE("AdamW step counts are per parameter", "[optim][adamw]") {
    // b misses the first step; its trajectory must equal a fresh optimiser that saw only its two steps.
    Tensor a = from_vector({0.5, -0.5}, {2}), b = from_vector({1.0, 2.0, -3.0}, {3});
    Tensor b_alone = b.clone();
    a.requires_grad_(true);
    b.requires_grad_(true);
    b_alone.requires_grad_(true);
    optim::AdamW both({{"a", a}, {"b", b}}, optim::AdamWOptions(0.01));
    optim::AdamW alone({{"b", b_alone}}, optim::AdamWOptions(0.01));
    const std::vector<std::vector<double>> gb = {{0.3, -0.2, 0.1}, {-0.5, 0.4, 0.05}};
    a.set_grad(from_vector({1, 1}, {2}));
    both.step();
    for (const auto& g : gb) {
        a.set_grad(from_vector({1, -1}, {2}));
        b.set_grad(from_vector(g, {3}));
        b_alone.set_grad(from_vector(g, {3}));
        both.step();
        alone.step();
    }
    CHECK(both.step_count("a") == 3);
    CHECK(both.step_count("b") == 2);
    CHECK(bitwise_equal(b, b_alone));
}

TEST_CASE("lr_scale multiplies the group lr", "[optim]") {
    Tensor x = from_vector({1, 2, 3}, {3}), y = x.clone();
    x.requires_grad_(true);
    y.requires_grad_(true);
    optim::ParamGroup gx({x}), gy({y});
    gx.lr = 0.1;
    gx.lr_scale = 0.5;
    gy.lr = 0.05;
    optim::SGD sx({gx}, optim::SGDOptions(1.0).momentum(0.9));
    optim::SGD sy({gy}, optim::SGDOptions(1.0).momentum(0.9));
    for (int i = 0; i < 3; ++i) {
        x.set_grad(from_vector({0.5, -1, 2}, {3}));
        y.set_grad(from_vector({0.5, -1, 2}, {3}));
        sx.step();
        sy.step();
    }
    CHECK(bitwise_equal(x, y));
    CHECK_FALSE(bitwise_equal(x, from_vector({1, 2, 3}, {3})));
    // The official script's per-iteration assignment: lr = value, update uses value * lr_scale.
    sx.set_lr(0.2);
    CHECK(sx.param_groups()[0].effective_lr() == 0.1);
}

namespace {
// Ten steps uninterrupted vs five steps, a state_dict round trip (tensors copied and scalars
// re-parsed, as a safetensors file would give them back) into fresh objects, five more steps.
template <class Opt, class Options>
void check_resume(Options options) {
    auto run_steps = [](Opt& opt, optim::LambdaLR& sched, optim::NamedTensors& params, int from, int to) {
        for (int t = from; t < to; ++t) {
            set_grads(params, t, DType::F32);
            opt.step();
            sched.step();
            opt.zero_grad();
        }
    };
    const double wd = fixture()["weight_decay"].get<double>();
    auto full = make_params(DType::F32);
    Opt opt_full(optim::get_params_groups(full, wd), options);
    optim::LambdaLR sched_full(opt_full, fixture_schedule());
    run_steps(opt_full, sched_full, full, 0, 10);

    auto half = make_params(DType::F32);
    Opt opt_half(optim::get_params_groups(half, wd), options);
    optim::LambdaLR sched_half(opt_half, fixture_schedule());
    run_steps(opt_half, sched_half, half, 0, 5);
    optim::OptimizerState saved = opt_half.state_dict();
    sched_half.save(saved.scalars);
    for (auto& kv : saved.tensors) kv.second = kv.second.clone();
    optim::NamedTensors resumed;
    for (const auto& kv : half) {
        Tensor t = kv.second.clone();
        t.requires_grad_(true);
        resumed.emplace_back(kv.first, t);
    }
    // A fresh optimiser built with different hyper-parameters: loading restores the saved ones.
    Opt opt_resumed(optim::get_params_groups(resumed, 0.5), options);
    optim::LambdaLR sched_resumed(opt_resumed, fixture_schedule());
    opt_resumed.load_state_dict(saved);
    sched_resumed.load(saved.scalars);
    CHECK(opt_resumed.param_groups()[0].weight_decay.value() == wd);
    CHECK(opt_resumed.step_count("fc1.weight") == 5);
    run_steps(opt_resumed, sched_resumed, resumed, 5, 10);
    for (size_t i = 0; i < full.size(); ++i) {
        INFO(full[i].first);
        CHECK(bitwise_equal(full[i].second, resumed[i].second));
    }
    const auto a = opt_full.state_dict(), b = opt_resumed.state_dict();
    CHECK(a.scalars == b.scalars);
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
        CHECK(a.tensors[i].first == b.tensors[i].first);
        CHECK(bitwise_equal(a.tensors[i].second, b.tensors[i].second));
    }
}
}  // namespace

TEST_CASE("AdamW state_dict round trip resumes bitwise", "[optim][state]") {
    check_resume<optim::AdamW>(optim::AdamWOptions(0.05).amsgrad(true));
    check_resume<optim::AdamW>(optim::AdamWOptions(0.05));
}

TEST_CASE("SGD state_dict round trip resumes bitwise", "[optim][state]") {
    check_resume<optim::SGD>(optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
}

TEST_CASE("state_dict names and load errors", "[optim][state]") {
    auto params = make_params(DType::F32);
    optim::AdamW opt(optim::get_params_groups(params, 0.05), optim::AdamWOptions(0.05));
    set_grads(params, 0, DType::F32);
    opt.step();
    const optim::OptimizerState st = opt.state_dict();
    CHECK(st.tensors.size() == 8);
    CHECK(st.tensors[0].first == "optim.fc1.weight.exp_avg");
    CHECK(st.tensors[1].first == "optim.fc1.weight.exp_avg_sq");
    CHECK(st.scalars.at("optim.type") == "AdamW");
    CHECK(st.scalars.at("optim.group.0.name") == "decay");
    CHECK(st.scalars.at("optim.group.1.params") == "fc1.bias,norm.weight");
    CHECK(st.scalars.at("optim.group.0.weight_decay") == "0.050000000000000003");
    CHECK(st.scalars.at("optim.norm.weight.step") == "1");

    auto fresh_params = make_params(DType::F32);
    optim::AdamW fresh(optim::get_params_groups(fresh_params, 0.05), optim::AdamWOptions(0.05));
    auto broken = st;
    broken.tensors.erase(broken.tensors.begin() + 2);  // fc2.weight's or fc1.bias's moment
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("lacks tensor"));
    CHECK(fresh.step_count("fc1.weight") == 0);  // a failed load changes nothing
    broken = st;
    broken.tensors[0].second = zeros({5, 8});
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("optim.fc1.weight.exp_avg"));
    broken = st;
    broken.scalars["optim.group.0.params"] = "fc1.weight,other";
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("param group 0"));
    broken = st;
    broken.scalars["optim.fc1.weight.step"] = "x1";
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("not a step count"));
    broken = st;
    broken.scalars.erase("optim.group.1.lr");
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("optim.group.1.lr"));
    optim::SGD sgd(optim::get_params_groups(fresh_params, 0.05), optim::SGDOptions(0.1));
    CHECK_THROWS_WITH(sgd.load_state_dict(st), Catch::Contains("AdamW"));
    fresh.load_state_dict(st);
    CHECK(fresh.step_count("fc1.weight") == 1);
}

TEST_CASE("warmup + cosine factor (create_lr_scheduler)", "[optim][schedule]") {
    const auto f = fixture_schedule();  // num_step 5, epochs 2, warmup_epochs 1
    const double pi = 3.141592653589793;
    CHECK(f(0) == Approx(1e-3).epsilon(1e-15));
    CHECK(f(2) == Approx(1e-3 * 0.6 + 0.4).epsilon(1e-15));
    CHECK(f(5) == Approx(1.0).epsilon(1e-15));
    CHECK(f(7) == Approx((1 + std::cos(2 * pi / 5)) / 2 * (1 - 1e-6) + 1e-6).epsilon(1e-15));
    CHECK(f(10) == Approx(1e-6).epsilon(1e-9));
    // The values PyTorch's LambdaLR applied (base lr 1), one per iteration.
    const auto want = fixture()["lambda_factors"].get<std::vector<double>>();
    std::vector<double> got;
    for (size_t x = 0; x < want.size(); ++x) got.push_back(f((int64_t)x));
    CHECK(compare("lambda factors", got, want, 1e-15) == "");
    // No warmup: cosine from step 0.
    const auto want_nw = fixture()["nowarmup_factors"].get<std::vector<double>>();
    optim::WarmupCosine nw(7, 3, false);
    got.clear();
    for (size_t x = 0; x < want_nw.size(); ++x) got.push_back(nw((int64_t)x));
    CHECK(compare("no-warmup factors", got, want_nw, 1e-15) == "");
    optim::WarmupCosine zero_warmup(7, 3, true, 0);
    CHECK(zero_warmup(0) == 1.0);
    CHECK(zero_warmup(4) == nw(4));
    // A warmup as long as the run (or longer) is the classic script's linear ramp to its end.
    optim::WarmupCosine whole_run(5, 2, true, 2);
    CHECK(whole_run(0) == Approx(1e-3).epsilon(1e-15));
    CHECK(whole_run(4) == Approx(1e-3 * 0.6 + 0.4).epsilon(1e-15));
    CHECK(whole_run(9) == Approx(1e-3 * 0.1 + 0.9).epsilon(1e-15));
    CHECK(whole_run(10) == 1.0);
    optim::WarmupCosine longer(5, 1, true, 2);
    CHECK(longer(4) == Approx(1e-3 * 0.6 + 0.4).epsilon(1e-15));
    CHECK(longer(11) == 1.0);
    CHECK_THROWS(optim::WarmupCosine(5, 2, true, -1));
    CHECK_THROWS(optim::WarmupCosine(0, 2));
}

TEST_CASE("LambdaLR: the first step uses f(0)", "[optim][schedule]") {
    Tensor w = ones({2});
    w.requires_grad_(true);
    optim::SGD opt({{"w", w}}, optim::SGDOptions(0.5));
    optim::LambdaLR sched(opt, [](int64_t x) { return 1.0 / (double)(x + 2); });
    CHECK(opt.param_groups()[0].lr.value() == 0.25);
    CHECK(sched.last_step() == 0);
    sched.step();
    CHECK(opt.param_groups()[0].lr.value() == 0.5 / 3);
    CHECK(opt.param_groups()[0].initial_lr.value() == 0.5);
    sched.set_step(6);
    CHECK(sched.last_lr()[0] == 0.5 / 8);
}

TEST_CASE("cosine_scheduler matches ConvNeXt's (numpy) values", "[optim][schedule]") {
    for (const auto& item : fixture()["cosine_scheduler"].items()) {
        const json& a = item.value()["args"];
        const auto got = optim::cosine_scheduler(a[0].get<double>(), a[1].get<double>(), a[2].get<int64_t>(),
                                                 a[3].get<int64_t>(), a[4].get<int64_t>(), a[5].get<double>(),
                                                 a[6].get<int64_t>());
        CHECK(compare("cosine_scheduler " + item.key(), got, item.value()["values"].get<std::vector<double>>(), 1e-14) ==
              "");
    }
    const auto s = optim::cosine_scheduler(1.0, 0.0, 2, 2);  // no warmup: 1, (1+cos(pi/4))/2, 0.5, ...
    REQUIRE(s.size() == 4);
    CHECK(s[0] == 1.0);
    CHECK(s[2] == Approx(0.5).epsilon(1e-15));
    CHECK_THROWS(optim::cosine_scheduler(1.0, 0.0, 2, 2, 0, 0.0, 3));  // warmup_steps without warmup_epochs
}

TEST_CASE("StepDecay matches StepLR, constant", "[optim][schedule]") {
    const auto want = fixture()["steplr"].get<std::vector<double>>();
    optim::StepDecay f(3, 0.5);
    std::vector<double> got;
    for (size_t x = 0; x < want.size(); ++x) got.push_back(0.1 * f((int64_t)x));
    CHECK(compare("StepLR", got, want, 1e-15) == "");
    CHECK(optim::constant_factor(123) == 1.0);
}

TEST_CASE("ConvNeXt layer ids for layer-wise lr decay", "[optim][groups]") {
    const std::vector<std::pair<std::string, int>> cases = {
        {"downsample_layers.0.0.weight", 0},  {"downsample_layers.0.1.bias", 0},
        {"downsample_layers.1.0.weight", 2},  {"downsample_layers.1.1.bias", 2},
        {"downsample_layers.2.1.weight", 3},  {"downsample_layers.3.0.bias", 12},
        {"stages.0.0.dwconv.weight", 1},      {"stages.0.2.gamma", 1},
        {"stages.1.1.pwconv1.weight", 2},     {"stages.2.0.norm.weight", 3},
        {"stages.2.2.pwconv2.bias", 3},       {"stages.2.3.dwconv.weight", 4},
        {"stages.2.5.gamma", 4},              {"stages.2.8.pwconv1.weight", 5},
        {"stages.2.12.dwconv.bias", 7},       {"stages.2.26.pwconv2.weight", 11},
        {"stages.3.0.dwconv.weight", 12},     {"stages.3.2.gamma", 12},
        {"norm.weight", 13},                  {"head.weight", 13},
        {"head.bias", 13},
    };
    for (const auto& c : cases) {
        INFO(c.first);
        CHECK(optim::convnext_layer_id(c.first) == c.second);
    }
    CHECK_THROWS_WITH(optim::convnext_layer_id("stages.x.0.gamma"), Catch::Contains("stages.x.0.gamma"));
    CHECK_THROWS(optim::convnext_layer_id("downsample_layers"));
    CHECK_THROWS(optim::convnext_layer_id("stages.1"));
    CHECK_THROWS(optim::convnext_layer_id("stages.4.0.gamma"));
}

TEST_CASE("get_params_groups: decay / no_decay and layer decay", "[optim][groups]") {
    auto param = [](const Shape& s, bool trainable = true) {
        Tensor t = zeros(s);
        t.requires_grad_(trainable);
        return t;
    };
    optim::NamedTensors named = {
        {"downsample_layers.0.0.weight", param({96, 3, 4, 4})}, {"downsample_layers.0.0.bias", param({96})},
        {"stages.0.0.dwconv.weight", param({96, 1, 7, 7})},     {"stages.0.0.gamma", param({96})},
        {"stages.2.4.pwconv1.weight", param({1536, 384})},      {"stages.2.4.pwconv1.bias", param({1536})},
        {"frozen.weight", param({4, 4}, false)},                {"norm.weight", param({768})},
        {"head.weight", param({10, 768})},                      {"head.scalar", param({})},
    };
    auto plain = optim::get_params_groups(named, 0.05);
    REQUIRE(plain.size() == 2);
    CHECK(plain[0].name == "decay");
    CHECK(plain[0].weight_decay.value() == 0.05);
    CHECK(plain[0].names == std::vector<std::string>{"downsample_layers.0.0.weight", "stages.0.0.dwconv.weight",
                                                     "stages.2.4.pwconv1.weight", "head.weight", "head.scalar"});
    CHECK(plain[1].name == "no_decay");
    CHECK(plain[1].weight_decay.value() == 0.0);
    CHECK(plain[1].names == std::vector<std::string>{"downsample_layers.0.0.bias", "stages.0.0.gamma",
                                                     "stages.2.4.pwconv1.bias", "norm.weight"});
    CHECK(plain[0].lr_scale == 1.0);
    CHECK_FALSE(plain[0].lr.has_value());

    optim::ParamGroupOptions o;
    o.weight_decay = 0.05;
    o.layer_decay = 0.8;
    o.skip_list = {"head.weight"};
    auto layered = optim::get_params_groups(named, o);
    const std::vector<std::tuple<std::string, int, size_t>> want = {
        {"layer_0_decay", 0, 1},     {"layer_0_no_decay", 0, 1}, {"layer_1_decay", 1, 1}, {"layer_1_no_decay", 1, 1},
        {"layer_4_decay", 4, 1},     {"layer_4_no_decay", 4, 1}, {"layer_13_no_decay", 13, 2},
        {"layer_13_decay", 13, 1},
    };
    REQUIRE(layered.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        INFO(std::get<0>(want[i]));
        CHECK(layered[i].name == std::get<0>(want[i]));
        CHECK(layered[i].lr_scale == Approx(std::pow(0.8, 13 - std::get<1>(want[i]))).epsilon(1e-15));
        CHECK(layered[i].params.size() == std::get<2>(want[i]));
        const bool no_decay = layered[i].name.find("no_decay") != std::string::npos;
        CHECK(layered[i].weight_decay.value() == (no_decay ? 0.0 : 0.05));
    }
    CHECK(layered[6].names == std::vector<std::string>{"norm.weight", "head.weight"});
    CHECK(layered[7].names == std::vector<std::string>{"head.scalar"});
    CHECK(layered[0].lr_scale == Approx(0.054975581388800036).epsilon(1e-15));
    // The groups plug straight into an optimiser, which takes lr from its defaults.
    optim::AdamW opt(layered, optim::AdamWOptions(1e-3));
    CHECK(opt.param_groups()[0].effective_lr() == Approx(1e-3 * std::pow(0.8, 13)).epsilon(1e-15));
}

TEST_CASE("clip_grad_norm", "[optim][clip]") {
    Tensor a = zeros({2}), b = zeros({1}), c = zeros({3});
    a.set_grad(from_vector({3, 4}, {2}));
    b.set_grad(from_vector({-12}, {1}, DType::F32));
    // c has no gradient and is ignored.
    CHECK(optim::clip_grad_norm({a, b, c}, 20.0) == Approx(13.0).epsilon(1e-12));
    CHECK(a.grad().to_vector() == std::vector<double>{3, 4});  // under the limit: unchanged
    CHECK(optim::clip_grad_norm({a, b, c}, 1.0) == Approx(13.0).epsilon(1e-12));
    const double coef = 1.0 / (13.0 + 1e-6);
    CHECK(a.grad().to_vector()[0] == Approx(3 * coef).epsilon(1e-6));
    CHECK(a.grad().to_vector()[1] == Approx(4 * coef).epsilon(1e-6));
    CHECK(b.grad().to_vector()[0] == Approx(-12 * coef).epsilon(1e-6));
    CHECK(optim::clip_grad_norm({c}, 1.0) == 0.0);
    a.set_grad(from_vector({3, -4}, {2}));
    CHECK(optim::clip_grad_norm({a}, 100.0, INFINITY) == 4.0);
    CHECK(optim::clip_grad_norm({a}, 100.0, 1.0) == 7.0);

    for (const auto& item : fixture()["clip"].items()) {
        const json& want = item.value();
        auto params = make_params(DType::F32);
        set_grads(params, 0, DType::F32);
        std::vector<Tensor> ps = tensors_of(params);
        const double norm_type = want["norm_type"].is_string() ? INFINITY : want["norm_type"].get<double>();
        const double total = optim::clip_grad_norm(ps, 1.0, norm_type);
        INFO(item.key());
        CHECK(total == Approx(want["total"].get<double>()).epsilon(1e-6));
        for (auto& kv : params)
            CHECK(compare("clipped " + kv.first, kv.second.grad(), want["grads"][kv.first], 1e-5, 1e-8) == "");
    }
}

TEST_CASE("clip_grad_norm does not depend on the thread count", "[optim][clip]") {
    // Sizes around the chunk and parallel thresholds, a float64 gradient, every norm type.
    Generator gen(7);
    std::vector<Tensor> params;
    for (int64_t n : {5, 16383, 16385, 100003, 300000}) {
        Tensor p = zeros({n});
        p.set_grad(mul(randn({n}, DType::F32, &gen), 3.0));
        params.push_back(p);
    }
    Tensor p64 = zeros({70001}, DType::F64);
    p64.set_grad(randn({70001}, DType::F64, &gen));
    params.push_back(p64);
    for (double norm_type : {2.0, 1.0, 3.0, (double)INFINITY}) {
        auto run = [&](int threads) {
            set_num_threads(threads);
            std::vector<Tensor> ps;
            for (auto& p : params) {
                Tensor q = zeros(p.shape(), p.dtype());
                q.set_grad(p.grad().clone());
                ps.push_back(q);
            }
            std::vector<double> out = {optim::clip_grad_norm(ps, 0.5, norm_type)};
            for (auto& q : ps)
                for (double v : q.grad().to_vector()) out.push_back(v);
            return out;
        };
        auto one = run(1), two = run(2), three = run(3);
        set_num_threads(0);
        INFO("norm_type " << norm_type);
        CHECK(one[0] > 0.5);  // the gradients were clipped
        CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(double)) == 0);
        CHECK(std::memcmp(one.data(), three.data(), one.size() * sizeof(double)) == 0);
    }
}

TEST_CASE("GradAccumulator steps every N micro-batches", "[optim][clip]") {
    optim::GradAccumulator acc(3);
    CHECK(acc.loss_scale() == Approx(1.0 / 3));
    std::vector<int> steps;
    for (int i = 1; i <= 7; ++i)
        if (acc.ready()) steps.push_back(i);
    CHECK(steps == std::vector<int>{3, 6});
    CHECK(acc.pending() == 1);
    CHECK_THROWS(optim::GradAccumulator(0));
}

TEST_CASE("ModelEMA follows ema = d*ema + (1-d)*value", "[optim][ema]") {
    Tensor w = from_vector({1.0, -2.0, 0.5}, {3}), bn = from_vector({10.0}, {1});
    optim::NamedTensors model = {{"w", w}, {"buf", bn}};
    CHECK(optim::ModelEMA(model).decay() == 0.9999);
    const double d = 0.9;
    optim::ModelEMA ema(model, d);
    std::vector<double> expect = {1.0, -2.0, 0.5}, expect_buf = {10.0};
    const std::vector<std::vector<double>> values = {{2.0, 0.0, 1.0}, {-1.0, 3.0, 0.25}, {0.5, 0.5, -4.0}};
    for (size_t k = 0; k < values.size(); ++k) {
        copy_(w, from_vector(values[k], {3}));
        fill_(bn, 10.0 + (double)k);
        ema.update(model);
        for (size_t i = 0; i < 3; ++i) expect[i] = d * expect[i] + (1 - d) * values[k][i];
        expect_buf[0] = d * expect_buf[0] + (1 - d) * (10.0 + (double)k);
    }
    CHECK(ema.num_updates() == 3);
    CHECK(compare("ema w", ema.shadow()[0].second.to_vector(), expect, 1e-6) == "");
    CHECK(compare("ema buf", ema.shadow()[1].second.to_vector(), expect_buf, 1e-6) == "");
    CHECK_FALSE(ema.shadow()[0].second.same_storage(w));

    const optim::OptimizerState st = ema.state_dict();
    CHECK(st.tensors[0].first == "ema.w");
    optim::ModelEMA other(model, 0.5);
    other.load_state_dict(st);
    CHECK(other.decay() == d);
    CHECK(other.num_updates() == 3);
    CHECK(bitwise_equal(other.shadow()[0].second, ema.shadow()[0].second));

    optim::NamedTensors renamed = {{"w2", w}, {"buf", bn}};
    CHECK_THROWS_WITH(ema.update(renamed), Catch::Contains("w2"));
    optim::NamedTensors wrong_shape = {{"w", zeros({4})}, {"buf", bn}};
    CHECK_THROWS_WITH(ema.update(wrong_shape), Catch::Contains("'w'"));
    ema.set(model);
    CHECK(bitwise_equal(ema.shadow()[0].second, w));
}

TEST_CASE("large tensors (threaded path) update like small ones", "[optim]") {
    // One 100000-value parameter vs the same values as four 25000-value parameters (below the
    // threading threshold): elementwise updates must agree bitwise.
    Generator gen(7);
    Tensor big = randn({100000}, DType::F32, &gen);
    Tensor grads = randn({100000}, DType::F32, &gen);
    big.requires_grad_(true);
    optim::NamedTensors parts;
    for (int k = 0; k < 4; ++k) {
        Tensor t = from_buffer(big.data<float>() + k * 25000, {25000});
        t.requires_grad_(true);
        parts.emplace_back("part" + std::to_string(k), t);
    }
    optim::AdamW a({{"big", big}}, optim::AdamWOptions(1e-2).amsgrad(true));
    optim::AdamW b(parts, optim::AdamWOptions(1e-2).amsgrad(true));
    for (int step = 0; step < 3; ++step) {
        big.set_grad(grads);
        for (int k = 0; k < 4; ++k) parts[k].second.set_grad(from_buffer(grads.data<float>() + k * 25000, {25000}));
        a.step();
        b.step();
    }
    for (int k = 0; k < 4; ++k)
        CHECK(std::memcmp(big.data<float>() + k * 25000, parts[k].second.data<float>(), 25000 * sizeof(float)) == 0);
    // The threaded norm reduction against a serial double sum.
    double sq = 0;
    for (double g : grads.to_vector()) sq += g * g;
    std::vector<Tensor> part_params = tensors_of(parts);
    CHECK(optim::clip_grad_norm({big}, 1e9) == Approx(std::sqrt(sq)).epsilon(1e-12));
    CHECK(optim::clip_grad_norm(part_params, 1e9) == Approx(std::sqrt(sq)).epsilon(1e-12));
}
