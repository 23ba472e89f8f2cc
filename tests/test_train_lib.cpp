// The training library called from C++ on a module that is not a ConvNeXt: a 2-layer MLP on four
// separable point clusters, trained with a custom loss (squared error against the one-hot or
// mixed targets) through train::fit. It learns, writes its files, resumes bit-identically after
// an interruption mid-epoch, stops on divergence; train::evaluate is checked against hand counts.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/rng.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "nn/nn.h"
#include "ops/ops.h"
#include "train/train.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace cnx;

namespace {

constexpr int64_t kClasses = 4;

// Four clusters around (+-1, +-1), label = quadrant, each point a [1, 1, 2] "image". A sample
// depends only on its index.
struct Clusters : data::Dataset {
    int64_t n;
    uint64_t salt;
    Clusters(int64_t n_, uint64_t salt_) : n(n_), salt(salt_) {}
    int64_t size() const override { return n; }
    data::Sample get(int64_t i, Generator&) const override {
        Generator g(salt * 1000003 + (uint64_t)i);
        const int64_t label = i % kClasses;
        const double cx = label & 1 ? 1.0 : -1.0, cy = label & 2 ? 1.0 : -1.0;
        return {from_vector({cx + 0.2 * g.normal(), cy + 0.2 * g.normal()}, {1, 1, 2}), label};
    }
};

struct Mlp : nn::Module {
    std::shared_ptr<nn::Linear> fc1, fc2;
    explicit Mlp(uint64_t seed) : Module("Mlp") {
        Generator g(seed);
        fc1 = register_module("fc1", std::make_shared<nn::Linear>(2, 16, true, &g));
        fc2 = register_module("fc2", std::make_shared<nn::Linear>(16, kClasses, true, &g));
    }
    Tensor forward(const Tensor& x) override {
        return fc2->forward(gelu(fc1->forward(x.reshape({x.size(0), x.numel() / x.size(0)}))));
    }
};

Tensor one_hot(const std::vector<int64_t>& labels, int64_t classes) {
    Tensor t = zeros({(int64_t)labels.size(), classes});
    for (size_t i = 0; i < labels.size(); ++i) t.data<float>()[i * classes + labels[i]] = 1.0f;
    return t;
}

// Mean squared error between the logits and the targets (the mixed ones when mixup is on).
train::LossFn squared_error(int* calls = nullptr) {
    return [calls](const Tensor& logits, const train::Targets& t) {
        if (calls) ++*calls;
        Tensor d = sub(logits, t.soft.defined() ? t.soft : one_hot(t.labels, logits.size(1)));
        return mean(mul(d, d));
    };
}

// An empty folder under the system temp dir, unique to this process, removed at scope exit.
struct TempDir {
    fs::path path;
    explicit TempDir(const std::string& name)
        : path(fs::temp_directory_path() / ("convnext_trainlib_" + name + "_" + std::to_string(getpid()))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    operator const fs::path&() const { return path; }
    fs::path operator/(const char* name) const { return path / name; }
};

std::vector<json> read_jsonl(const fs::path& p, const char* key) {
    std::ifstream f(p);
    std::vector<json> out;
    std::string line;
    while (std::getline(f, line)) {
        json j = parse_json(line);
        if (j.contains(key)) out.push_back(j);
    }
    return out;
}

train::TrainerOptions base_options(const fs::path& out) {
    train::TrainerOptions o;
    o.out = out.string();
    o.num_classes = kClasses;
    o.epochs = 12;
    o.batch_size = 16;
    o.lr = 1e-2;
    o.workers = 1;
    o.seed = 7;
    o.model_name = "mlp";
    return o;
}

void require_same_tensors(const fs::path& a, const fs::path& b) {
    auto x = io::load_safetensors(a.string()), y = io::load_safetensors(b.string());
    REQUIRE(x.tensors.size() == y.tensors.size());
    for (size_t i = 0; i < x.tensors.size(); ++i) {
        INFO(x.tensors[i].first);
        REQUIRE(x.tensors[i].first == y.tensors[i].first);
        REQUIRE(x.tensors[i].second.nbytes() == y.tensors[i].second.nbytes());
        CHECK(std::memcmp(x.tensors[i].second.raw_data(), y.tensors[i].second.raw_data(), x.tensors[i].second.nbytes()) ==
              0);
    }
}

}  // namespace

TEST_CASE("train lib: an MLP learns with a custom loss, reports through callbacks and writes its files") {
    auto train_set = std::make_shared<Clusters>(256, 1), val_set = std::make_shared<Clusters>(64, 2);
    TempDir out("learn");
    Mlp net(3);
    int loss_calls = 0, starts = 0, epochs_begun = 0, batches = 0, validations = 0;
    std::vector<train::EpochEnd> ends;
    train::TrainerOptions o = base_options(out);
    o.weights_metadata = {{"model", "mlp"}};
    o.callbacks.on_start = [&](const train::RunInfo& info) {
        ++starts;
        CHECK(info.total_params == 2 * 16 + 16 + 16 * kClasses + kClasses);
        CHECK(info.trainable_params == info.total_params);
        CHECK(info.steps_per_epoch == 16);
        CHECK_FALSE(info.resumed);
    };
    o.callbacks.on_epoch_begin = [&](const train::EpochBegin& e) {
        CHECK(e.epoch == epochs_begun++);
        CHECK(e.batches == 16);
    };
    o.callbacks.on_batch_end = [&](const train::BatchEnd& b) {
        ++batches;
        CHECK(std::isfinite(b.loss));
    };
    o.callbacks.on_validation_end = [&](const train::ValidationEnd& v) {
        ++validations;
        CHECK(v.val.count == 64);
        CHECK_FALSE(v.ema.has_value());
    };
    o.callbacks.on_epoch_end = [&](const train::EpochEnd& e) { ends.push_back(e); };
    train::FitResult r = train::fit(net, squared_error(&loss_calls), train_set, val_set, o);

    CHECK(starts == 1);
    CHECK(epochs_begun == 12);
    CHECK(batches == 12 * 16);
    CHECK(loss_calls == 12 * 16);  // the custom loss was the one trained on (validation uses its own)
    CHECK(validations == 12);
    REQUIRE(ends.size() == 12);
    CHECK(r.epochs_done == 12);
    CHECK(r.global_step == 12 * 16);
    CHECK(r.history.size() == 12);

    auto steps = read_jsonl(out / "metrics.jsonl", "step");
    auto epochs = read_jsonl(out / "metrics.jsonl", "train_loss");
    REQUIRE(steps.size() == 12 * 16);
    REQUIRE(epochs.size() == 12);
    const double first = steps.front()["loss"], last = epochs.back()["train_loss"];
    INFO("first step loss " << first << ", last epoch's mean " << last);
    CHECK(last <= first / 10);
    CHECK(epochs.back()["val_acc"].get<double>() >= 0.95);
    CHECK(r.best_acc >= 0.95);
    for (auto f : {"metrics.jsonl", "curves.png", "best.safetensors", "checkpoint.safetensors"}) CHECK(fs::exists(out / f));
    CHECK_FALSE(fs::exists(out / "ema.safetensors"));
    auto best = io::load_safetensors((out / "best.safetensors").string());
    CHECK(best.metadata.at("model") == "mlp");
    CHECK(best.tensors.size() == 4);
    CHECK(best.get("fc2.weight").shape() == Shape{kClasses, 16});

    // Evaluation of the trained module, with the library's default loss (cross-entropy).
    train::EvalOptions eo;
    eo.batch_size = 10;
    train::EvalResult ev = train::evaluate(net, val_set, eo);
    CHECK(ev.count == 64);
    CHECK(ev.top1 >= 0.95);
    CHECK(ev.top5 == 1.0);
    REQUIRE(ev.confusion.size() == kClasses);
    int64_t total = 0;
    for (int64_t c = 0; c < kClasses; ++c) {
        CHECK(ev.per_class_acc[c] == Approx((double)ev.confusion[c][c] / 16));
        for (auto v : ev.confusion[c]) total += v;
    }
    CHECK(total == 64);
    CHECK(std::isfinite(ev.loss));
    CHECK(net.is_training());  // evaluate restores the mode
}

TEST_CASE("train lib: interrupted mid-epoch and resumed, the run ends bit-identical to an uninterrupted one") {
    auto train_set = std::make_shared<Clusters>(256, 1), val_set = std::make_shared<Clusters>(40, 2);
    auto options = [&](const fs::path& out) {
        train::TrainerOptions o = base_options(out);
        o.epochs = 4;
        o.accum_steps = 2;
        o.checkpoint_every = 3;
        o.clip_grad = 1.0;
        o.mixup = 0.4, o.cutmix = 0.0, o.label_smoothing = 0.1;
        o.ema = true, o.ema_decay = 0.9;
        o.workers = 2;
        return o;
    };
    TempDir full("resume_full"), part("resume_part");
    {
        Mlp net(5);
        train::fit(net, squared_error(), train_set, val_set, options(full));
    }
    {
        // Stopped by an exception after optimiser step 10 (epoch 2, step 2 of 8); the last
        // checkpoint is step 9's.
        Mlp net(5);
        train::TrainerOptions o = options(part);
        o.callbacks.on_batch_end = [](const train::BatchEnd& b) {
            if (b.global_step == 10) throw std::runtime_error("interrupted");
        };
        CHECK_THROWS_WITH(train::fit(net, squared_error(), train_set, val_set, o), "interrupted");
        auto ck = io::load_safetensors((part / "checkpoint.safetensors").string());
        CHECK(ck.metadata.at("global_step") == "9");
        CHECK(ck.metadata.at("batch_in_epoch") != "0");
    }
    {
        Mlp net(11);  // a different init: every weight must come from the checkpoint
        train::TrainerOptions o = options(part);
        o.resume = true;
        bool resumed = false;
        o.callbacks.on_start = [&](const train::RunInfo& info) {
            resumed = info.resumed;
            CHECK(info.start_epoch == 1);
            CHECK(info.global_step == 9);
        };
        train::FitResult r = train::fit(net, squared_error(), train_set, val_set, o);
        CHECK(resumed);
        CHECK(r.epochs_done == 4);
        CHECK(r.history.size() == 4);
    }
    require_same_tensors(full / "checkpoint.safetensors", part / "checkpoint.safetensors");
    require_same_tensors(full / "ema.safetensors", part / "ema.safetensors");
    auto a = read_jsonl(full / "metrics.jsonl", "step"), b = read_jsonl(part / "metrics.jsonl", "step");
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        INFO("step " << i);
        CHECK(a[i]["loss"] == b[i]["loss"]);
        CHECK(a[i]["lr"] == b[i]["lr"]);
    }
    CHECK(read_jsonl(part / "metrics.jsonl", "train_loss").size() == 4);
}

TEST_CASE("train lib: the EMA is evaluated by swapping its weights in and out, or in a module from a factory") {
    auto train_set = std::make_shared<Clusters>(64, 1), val_set = std::make_shared<Clusters>(16, 2);
    TempDir swapped("ema_swap"), factory("ema_factory");
    std::vector<double> ema_acc[2];
    for (int use_factory = 0; use_factory < 2; ++use_factory) {
        Mlp net(5);
        train::TrainerOptions o = base_options(use_factory ? factory.path : swapped.path);
        o.epochs = 3;
        o.ema = true, o.ema_decay = 0.5;
        int built = 0;
        if (use_factory) o.make_eval_model = [&] { return ++built, std::make_shared<Mlp>(99); };
        o.callbacks.on_validation_end = [&](const train::ValidationEnd& v) {
            REQUIRE(v.ema.has_value());
            ema_acc[use_factory].push_back(v.ema->top1);
        };
        train::fit(net, squared_error(), train_set, val_set, o);
        CHECK(built == (use_factory ? 3 : 0));
        // The model holds its own trained weights again, not the EMA's.
        auto ck = io::load_safetensors(((use_factory ? factory.path : swapped.path) / "checkpoint.safetensors").string());
        for (auto& [name, t] : net.state_dict()) {
            INFO(name);
            Tensor saved = ck.get("model." + name);
            CHECK(std::memcmp(saved.raw_data(), t.raw_data(), t.nbytes()) == 0);
        }
    }
    CHECK(ema_acc[0] == ema_acc[1]);
    require_same_tensors(swapped / "checkpoint.safetensors", factory / "checkpoint.safetensors");
}

TEST_CASE("train lib: a warmup as long as the run ramps the lr linearly to its end (one-epoch try-out)") {
    auto train_set = std::make_shared<Clusters>(80, 1);
    TempDir out("warmup");
    Mlp net(5);
    train::TrainerOptions o = base_options(out);
    o.epochs = 1, o.warmup_epochs = 1;
    train::FitResult r = train::fit(net, squared_error(), train_set, nullptr, o);
    auto steps = read_jsonl(out / "metrics.jsonl", "step");
    REQUIRE(steps.size() == 5);
    for (size_t i = 0; i < steps.size(); ++i) {
        const double a = i / 5.0;  // the classic script's warmup factor at step i of 5
        CHECK(steps[i]["lr"].get<double>() == Approx(1e-2 * (1e-3 * (1 - a) + a)).epsilon(1e-12));
    }
    // Without a validation set the best weights are chosen by training accuracy.
    CHECK(r.best_acc == Approx(read_jsonl(out / "metrics.jsonl", "train_acc").back()["train_acc"].get<double>()));
}

TEST_CASE("train lib: divergence, a wrong output shape and bad options are errors naming the problem") {
    auto train_set = std::make_shared<Clusters>(64, 1);
    SECTION("a non-finite loss stops the run, the last checkpoint intact") {
        TempDir out("diverge");
        Mlp net(5);
        train::TrainerOptions o = base_options(out);
        o.checkpoint_every = 2;
        int calls = 0;
        train::LossFn nan_at_5 = [&](const Tensor& logits, const train::Targets& t) {
            Tensor l = squared_error()(logits, t);
            return ++calls == 5 ? mul(l, NAN) : l;
        };
        CHECK_THROWS_WITH(train::fit(net, nan_at_5, train_set, nullptr, o),
                          Catch::Contains("non-finite loss") && Catch::Contains("epoch 2 step 1") &&
                              Catch::Contains("intact"));
        auto ck = io::load_safetensors((out / "checkpoint.safetensors").string());
        CHECK(ck.metadata.at("global_step") == "4");
    }
    SECTION("an output that is not [batch, num_classes]") {
        Mlp net(5);
        TempDir dir("shape");
        train::TrainerOptions o = base_options(dir);
        o.num_classes = 3;
        CHECK_THROWS_WITH(train::fit(net, nullptr, train_set, nullptr, o),
                          Catch::Contains("[16,4]") && Catch::Contains("num_classes 3"));
    }
    SECTION("options") {
        Mlp net(5);
        TempDir dir("opts");
        train::TrainerOptions o = base_options(dir);
        o.num_classes = 0;
        CHECK_THROWS_WITH(train::fit(net, nullptr, train_set, nullptr, o), Catch::Contains("num_classes"));
        o = base_options("");
        CHECK_THROWS_WITH(train::fit(net, nullptr, train_set, nullptr, o), Catch::Contains("output folder"));
        o = base_options(dir);
        o.batch_size = 100;
        CHECK_THROWS_WITH(train::fit(net, nullptr, train_set, nullptr, o), Catch::Contains("batch size 100"));
    }
}

namespace {

// Its input is its output: the dataset's "images" are the logits.
struct Passthrough : nn::Module {
    Tensor forward(const Tensor& x) override { return x.reshape({x.size(0), x.numel() / x.size(0)}); }
};

struct FixedLogits : data::Dataset {
    std::vector<std::vector<double>> rows;
    std::vector<int64_t> labels;
    int64_t size() const override { return (int64_t)rows.size(); }
    data::Sample get(int64_t i, Generator&) const override {
        return {from_vector(rows[i], {1, 1, (int64_t)rows[i].size()}), labels[i]};
    }
};

}  // namespace

TEST_CASE("train lib: evaluate counts top-1, top-5 (ties to the lower class), confusion and per-class accuracy") {
    auto ds = std::make_shared<FixedLogits>();
    ds->rows = {{5, 0, 0, 0, 0, 0},    // label 0: right
                {3, 2, 0, 0, 0, 0},    // label 1: predicted 0, second: top-5
                {5, 4, -1, 3, 2, 1},   // label 2: predicted 0, last: not top-5
                {0, 0, 0, 0, 0, 1},    // label 5: right
                {0, 0, 0, 0, 0, 0}};   // label 3: a tie, predicted 0, fourth: top-5
    ds->labels = {0, 1, 2, 5, 3};
    double want_loss = 0;
    for (size_t i = 0; i < ds->rows.size(); ++i) {
        double z = 0;
        for (double v : ds->rows[i]) z += std::exp(v);
        want_loss += std::log(z) - ds->rows[i][ds->labels[i]];
    }
    want_loss /= 5;
    Passthrough model;
    for (int workers : {0, 2}) {
        INFO(workers << " workers");
        train::EvalOptions eo;
        eo.batch_size = 2;
        eo.workers = workers;
        int64_t begun = -1, done = 0, ended = 0;
        eo.on_begin = [&](int64_t batches) { begun = batches; };
        eo.on_batch_end = [&](int64_t d) { done = d; };
        eo.on_end = [&] { ++ended; };
        train::EvalResult r = train::evaluate(model, ds, eo);
        CHECK(begun == 3);
        CHECK(done == 3);
        CHECK(ended == 1);
        CHECK(r.count == 5);
        CHECK(r.top1 == Approx(2.0 / 5));
        CHECK(r.top5 == Approx(4.0 / 5));
        CHECK(r.loss == Approx(want_loss).epsilon(1e-5));
        REQUIRE(r.confusion.size() == 6);
        CHECK(r.confusion[0][0] == 1);
        CHECK(r.confusion[1][0] == 1);
        CHECK(r.confusion[2][0] == 1);
        CHECK(r.confusion[3][0] == 1);
        CHECK(r.confusion[5][5] == 1);
        CHECK(r.per_class_acc[0] == 1.0);
        CHECK(r.per_class_acc[1] == 0.0);
        CHECK(std::isnan(r.per_class_acc[4]));
        CHECK(r.per_class_acc[5] == 1.0);
    }
    // A custom loss: the mean logit, averaged over samples.
    train::EvalOptions eo;
    eo.num_classes = 6;
    eo.loss = [](const Tensor& logits, const train::Targets&) { return mean(logits); };
    CHECK(train::evaluate(model, ds, eo).loss == Approx((5.0 + 5 + 14 + 1 + 0) / 30));
    eo.num_classes = 4;
    CHECK_THROWS_WITH(train::evaluate(model, ds, eo), Catch::Contains("6 classes"));

    auto preds = train::predict_samples(model, *ds, 10);
    REQUIRE(preds.size() == 5);
    CHECK(preds[1].index == 1);
    CHECK(preds[1].label == 1);
    CHECK(preds[1].predicted == 0);
    CHECK(preds[1].probability == Approx(std::exp(3.0) / (std::exp(3.0) + std::exp(2.0) + 4)));
}
