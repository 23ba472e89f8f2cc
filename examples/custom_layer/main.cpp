// A layer of one's own (rms_norm.h), from a project built against the installed package:
//   custom_layer gradcheck    its float64 gradients against finite differences
//   custom_layer train OUT    a small network using it, trained with train::fit (AdamW) into OUT
//   custom_layer atto         convnext_atto built by name, one forward pass
// Each exits 1 when its check fails; with no arguments all three run (OUT: custom_layer_run).
#include <convnext/convnext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "rms_norm.h"

using namespace cnx;

namespace {

bool report(const char* what, const GradcheckResult& r) {
    std::printf("gradcheck %-44s max rel err %.2e  %s\n", what, r.max_rel_err, r.pass ? "ok" : "FAILED");
    if (!r.pass) std::printf("  worst: %s\n", r.worst.c_str());
    return r.pass;
}

// Linear (no bias) -> RMSNorm -> GELU -> Linear. Without a bias before it, the norm makes the
// network blind to the scale of its input, which is what the data below needs.
class Classifier : public nn::Module {
public:
    Classifier(int64_t in, int64_t hidden, int64_t classes, Generator* gen) : Module("Classifier") {
        fc1 = register_module("fc1", std::make_shared<nn::Linear>(in, hidden, /*bias=*/false, gen));
        norm = register_module("norm", std::make_shared<custom::RMSNorm>(hidden));
        fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, classes, /*bias=*/true, gen));
    }
    Tensor forward(const Tensor& x) override {  // [B, ..., in] (the loader's [B, 1, 1, in])
        return fc2->forward(gelu(norm->forward(fc1->forward(x.reshape({x.size(0), -1})))));
    }
    std::shared_ptr<nn::Linear> fc1, fc2;
    std::shared_ptr<custom::RMSNorm> norm;
};

// The layer as a function of (x, weight), the module around it, and a network using it.
bool run_gradcheck() {
    Generator gen(1);
    bool ok = true;
    Tensor x = randn({3, 5, 7}, DType::F64, &gen), weight = randn({7}, DType::F64, &gen);
    auto fn = [](const std::vector<Tensor>& in) { return custom::rms_norm(in[0], in[1]); };
    ok &= report("rms_norm(x, weight) wrt x and weight", gradcheck(fn, {x, weight}));

    const double f32_err = forward_f32_vs_f64(fn, {x, weight});
    std::printf("float32 forward against float64: max rel err %.2e\n", f32_err);
    ok &= f32_err < 1e-5;

    custom::RMSNorm layer(7);
    layer.to(DType::F64);
    layer.load_state_dict({{"weight", weight}});
    ok &= report("RMSNorm module wrt its input", gradcheck([&](const std::vector<Tensor>& in) { return layer(in[0]); }, {x}));
    {
        NoGradGuard no_grad;  // the module is exactly the function with its own parameter
        const std::vector<double> a = layer(x).to_vector(), b = custom::rms_norm(x, weight).to_vector();
        double diff = 0;
        for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
        std::printf("RMSNorm module against rms_norm: max abs diff %g\n", diff);
        ok &= diff == 0;
    }

    Classifier net(6, 9, 4, &gen);
    net.to(DType::F64);
    ok &= report("Linear -> RMSNorm -> GELU -> Linear wrt input",
                 gradcheck([&](const std::vector<Tensor>& in) { return net(in[0]); }, {randn({5, 1, 1, 6}, DType::F64, &gen)}));
    return ok;
}

// K classes, each a direction in D dimensions; a sample is its class's direction plus noise,
// scaled by a factor from 0.01 to 100 (log-uniform). A sample depends only on its index.
class Directions : public data::Dataset {
public:
    static constexpr int64_t kDims = 8, kClasses = 4;
    Directions(int64_t n, uint64_t salt) : n_(n), salt_(salt) {}
    int64_t size() const override { return n_; }
    data::Sample get(int64_t i, Generator&) const override {
        Generator prototypes(42), g(salt_ * 1000003 + (uint64_t)i);
        const int64_t label = i % kClasses;
        std::vector<double> v(kDims * kClasses);
        for (double& p : v) p = prototypes.normal();
        const double scale = std::pow(10.0, g.uniform(-2, 2));
        std::vector<double> x(kDims);
        for (int64_t d = 0; d < kDims; ++d) x[d] = scale * (v[label * kDims + d] + 0.3 * g.normal());
        return {from_vector(x, {1, 1, kDims}), label};
    }

private:
    int64_t n_;
    uint64_t salt_;
};

bool run_train(const std::string& out) {
    manual_seed(0);
    Generator gen(0);
    Classifier net(Directions::kDims, 32, Directions::kClasses, &gen);
    auto train_set = std::make_shared<Directions>(512, 1), val_set = std::make_shared<Directions>(128, 2);

    train::TrainerOptions o;  // fit trains with AdamW, warmup then cosine
    o.out = out;
    o.overwrite = true;
    o.num_classes = Directions::kClasses;
    o.epochs = 12;
    o.batch_size = 32;
    o.lr = 1e-2;
    o.workers = 1;
    double first_loss = NAN;
    o.callbacks.on_batch_end = [&](const train::BatchEnd& b) {
        if (b.epoch == 0 && b.batch == 1) first_loss = b.loss;  // the running mean of one batch
    };
    o.callbacks.on_epoch_end = [](const train::EpochEnd& e) {
        std::printf("epoch %2lld  train loss %.4f  val loss %.4f  val acc %.3f\n", (long long)e.epoch + 1,
                    e.record.train_loss, e.record.val_loss, e.record.val_acc);
    };
    train::FitResult r = train::fit(net, train::cross_entropy_loss(), train_set, val_set, o);

    const double last = r.history.back().train_loss;  // the mean over the whole last epoch
    std::printf("first loss %.4f, last epoch's mean %.4f (must be below %.4f); best val acc %.3f; files in %s\n",
                first_loss, last, first_loss / 10, r.best_acc, out.c_str());
    return last < first_loss / 10;
}

bool run_atto() {
    models::ConvNeXtOptions options;
    options.num_classes = 10;
    Generator gen(0);
    auto model = models::create_model("convnext_atto", options, &gen);
    model->eval();
    NoGradGuard no_grad;
    Tensor images = randn({2, 64, 64, 3}, DType::F32, &gen);  // NHWC
    Tensor logits = (*model)(images);
    bool finite = true;
    for (double v : logits.to_vector()) finite &= std::isfinite(v);
    std::printf("convnext_atto: %lld parameters, %s -> %s%s\n", (long long)model->num_parameters(),
                images.str().c_str(), logits.str().c_str(), finite ? "" : " (not finite)");
    return logits.shape() == Shape{2, 10} && finite;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string what = argc > 1 ? argv[1] : "all";
        bool ok = true;
        if (what == "gradcheck" || what == "all") ok &= run_gradcheck();
        if (what == "train" || what == "all") ok &= run_train(argc > 2 ? argv[2] : "custom_layer_run");
        if (what == "atto" || what == "all") ok &= run_atto();
        if (what != "gradcheck" && what != "train" && what != "atto" && what != "all") {
            std::fprintf(stderr, "usage: %s [gradcheck | train [OUT] | atto]\n", argv[0]);
            return 2;
        }
        std::printf("%s\n", ok ? "passed" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
