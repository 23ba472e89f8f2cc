// convnext train: the classic ConvNeXt fine-tuning workflow (image folder or Fashion-MNIST),
// with that script's options and defaults: AdamW without decay on biases and norms, warmup then
// cosine stepped per iteration, --freeze-layers, class_indices.json, best weights by val accuracy.
// The options are parsed here; the run is train::fit (train/trainer.h), which also trains
// data-parallel under mpirun. Rank 0 alone prints and writes files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "apps/precision_option.h"
#include "apps/run_common.h"
#include "core/autograd.h"
#include "core/rng.h"
#include "core/threads.h"
#include "dist/dist.h"
#include "io/model_metadata.h"
#include "ops/gemm.h"
#include "train/train.h"

namespace {
namespace fs = std::filesystem;
using namespace cnx;
using json = nlohmann::json;

struct TrainOptions {
    train::DataConfig data;
    app::ModelSpec model;
    std::string weights, out;
    std::string precision = "fp32", recompute = "auto";
    int64_t num_classes = 0, epochs = 10, batch_size = 8, accum_steps = 1, warmup_epochs = 1;
    double lr = 5e-4, wd = 0.05, drop_path = 0, label_smoothing = 0, mixup = 0, cutmix = 0, clip_grad = 0;
    double ema_decay = 0.9999, layer_decay = 1.0;
    int workers = 2;
    bool freeze_layers = false, ema = false, resume = false, no_augment = false, no_shuffle = false;
    bool skip_bad_images = false, detect_anomaly = false;
    int64_t show_predictions = 8;
    int64_t stop_after_epochs = 0, checkpoint_every = 0;
    bool overwrite = false;
};

// "28.59M", or the exact count below 100k (a frozen backbone's head: "3,845", not "0.00M").
std::string param_count(int64_t n) {
    char buf[32];
    if (n >= 100000) {
        std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
        return buf;
    }
    std::string digits = std::to_string(n), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

// Where ranks other than 0 send their log: nowhere.
struct NullBuffer : std::streambuf {
    int overflow(int c) override { return c; }
};

// What the run shows on the terminal: the library's callbacks drawn as the progress bar and the
// per-epoch lines.
train::Callbacks terminal_report(const TrainOptions& opt, const train::DataSets& ds, int64_t num_classes) {
    auto progress = std::make_shared<std::unique_ptr<app::Progress>>();
    train::Callbacks cb;
    cb.on_start = [&opt, &ds, num_classes](const train::RunInfo& info) {
        const bool distributed = info.world_size > 1;
        std::printf("%s: %s parameters (%s trainable), %lld classes, input %lldx%lldx%lld\n", opt.model.name.c_str(),
                    param_count(info.total_params).c_str(), param_count(info.trainable_params).c_str(),
                    (long long)num_classes, (long long)ds.image_size, (long long)ds.image_size, (long long)ds.in_chans);
        if (distributed)
            std::printf("data-parallel: %d ranks x %d thread(s), batch %lld per rank = global batch %lld (the lr "
                        "is not scaled with it)\n",
                        info.world_size, get_num_threads(), (long long)opt.batch_size,
                        (long long)opt.batch_size * info.world_size);
        std::printf("%sbatch %lld x %lld accumulation, %lld steps/epoch, %lld epochs, lr %g, wd %g, warmup %lld "
                    "epoch(s)\n",
                    distributed ? "global " : "", (long long)opt.batch_size * info.world_size,
                    (long long)opt.accum_steps, (long long)info.steps_per_epoch, (long long)opt.epochs, opt.lr, opt.wd,
                    (long long)opt.warmup_epochs);
        if (precision() == Precision::BF16)  // fit() has set it on this thread
            std::printf("precision bf16: %s GEMMs, activations saved for backward in bfloat16; weights, gradients "
                        "and optimiser state float32\n",
                        gemm_precision_name());
        if (recomputes_cheap())  // fit() has set the policy too
            std::printf("recompute: layer-norm and depthwise-conv outputs are computed again in backward, not kept\n");
        std::printf("writing to %s\n", opt.out.c_str());
        std::fflush(stdout);
    };
    cb.on_epoch_begin = [progress](const train::EpochBegin& e) {
        *progress = std::make_unique<app::Progress>(
            "epoch " + std::to_string(e.epoch + 1) + "/" + std::to_string(e.epochs), e.batches, app::stderr_is_tty());
    };
    cb.on_batch_end = [progress](const train::BatchEnd& b) {
        char stats[160];
        std::snprintf(stats, sizeof stats, "loss %.4f acc %.4f lr %.2e %.1f img/s", b.loss, b.acc, b.lr,
                      b.images_per_second);
        (*progress)->update(b.batch, stats);
    };
    cb.on_train_epoch_end = [progress](const train::TrainEpochEnd& e) {
        char stats[160];
        std::snprintf(stats, sizeof stats, "train loss %.4f acc %.4f lr %.2e", e.loss, e.acc, e.lr);
        (*progress)->finish(stats);
        progress->reset();
        if (e.comm_steps > 0)
            std::printf("gradient all-reduce: %lld steps x %.1f MB in %lld bucket(s) (%.0f%% started during "
                        "backward), %.2f s waited after backward (%.1f%% of %.2f s training)\n",
                        (long long)e.comm_steps, e.comm.bytes / 1e6 / e.comm_steps,
                        (long long)(e.comm.buckets / e.comm_steps),
                        100.0 * e.comm.started_in_backward / std::max<int64_t>(e.comm.buckets, 1), e.comm.seconds,
                        100 * e.comm.seconds / std::max(e.seconds, 1e-9), e.seconds);
    };
    cb.on_validation_end = [](const train::ValidationEnd& v) {
        std::printf("[valid epoch %lld] loss %.4f acc %.4f (%lld images)", (long long)v.epoch + 1, v.val.loss,
                    v.val.top1, (long long)v.val.count);
        if (v.ema) std::printf(", ema acc %.4f", v.ema->top1);
        std::printf("\n");
    };
    return cb;
}

// The trained model on the first validation images, with their true labels.
void show_predictions(nn::Module& model, const train::DataSets& ds, int64_t count) {
    const int64_t n = std::min<int64_t>(count, ds.val->size());
    std::printf("predictions on %lld validation images:\n", (long long)n);
    auto name = [&](int64_t c) { return c < (int64_t)ds.classes.size() ? ds.classes[c] : std::to_string(c); };
    for (const train::Prediction& p : train::predict_samples(model, *ds.val, n))
        std::printf("  %-40s true %-12s predicted %-12s (%.3f)%s\n", ds.val->describe(p.index).c_str(),
                    name(p.label).c_str(), name(p.predicted).c_str(), p.probability,
                    p.predicted == p.label ? "" : "  <- wrong");
}

std::function<int()> setup_train(CLI::App& root) {
    auto* cmd = root.add_subcommand("train", "Train or fine-tune a ConvNeXt on an image folder or Fashion-MNIST");
    auto o = std::make_shared<TrainOptions>();
    cmd->add_option("--data", o->data.data_dir, "Image folder with one subfolder per class (or the Fashion-MNIST folder)");
    cmd->add_option("--dataset", o->data.dataset, "Built-in dataset: fashion-mnist");
    o->model.add_options(cmd);
    cmd->add_option("--num-classes", o->num_classes, "Classes (default: from the data)");
    cmd->add_option("--epochs", o->epochs, "Epochs")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--batch-size", o->batch_size, "Batch size (per rank under mpirun)")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
    cmd->add_option("--wd", o->wd, "AdamW weight decay (not on biases and norms)")->capture_default_str();
    cmd->add_option("--weights", o->weights, "Initial weights (.safetensors or .pth); head dropped if its shape differs");
    cmd->add_flag("--freeze-layers", o->freeze_layers, "Train only the head");
    cmd->add_option("--image-size", o->data.image_size, "Input size for image folders")->capture_default_str();
    cmd->add_option("--crop-pct", o->data.crop_pct, "Eval resize = image_size / crop_pct, then centre crop")
        ->capture_default_str();
    cmd->add_option("--val-rate", o->data.val_rate, "Fraction of each class held out (0: none)")->capture_default_str();
    cmd->add_option("--seed", o->data.seed, "Seed for split, init, shuffle and augmentation")->capture_default_str();
    cmd->add_option("--drop-path", o->drop_path, "Stochastic depth rate")->capture_default_str();
    cmd->add_option("--warmup-epochs", o->warmup_epochs, "Linear warmup epochs (0: none)")->capture_default_str();
    cmd->add_option("--label-smoothing", o->label_smoothing, "Label smoothing")->capture_default_str();
    cmd->add_option("--mixup", o->mixup, "Mixup alpha (0: off)")->capture_default_str();
    cmd->add_option("--cutmix", o->cutmix, "CutMix alpha (0: off)")->capture_default_str();
    cmd->add_flag("--ema", o->ema, "Keep an exponential moving average of the weights");
    cmd->add_option("--ema-decay", o->ema_decay, "EMA decay")->capture_default_str();
    cmd->add_option("--clip-grad", o->clip_grad, "Clip the global gradient norm (0: off)")->capture_default_str();
    cmd->add_option("--accum-steps", o->accum_steps, "Micro-batches per optimiser step")->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--layer-decay", o->layer_decay, "Layer-wise lr decay (1: off)")->capture_default_str();
    cmd->add_option("--out", o->out, "Output folder (default runs/<date-time>)");
    cmd->add_flag("--resume", o->resume, "Continue from checkpoint.safetensors in --out");
    cmd->add_flag("--no-augment", o->no_augment, "Use the eval transform for training too");
    cmd->add_flag("--no-shuffle", o->no_shuffle, "Keep the training order fixed");
    cmd->add_flag("--skip-bad-images", o->skip_bad_images, "Warn about undecodable images and leave them out");
    cmd->add_flag("--detect-anomaly", o->detect_anomaly, "Name the first op whose output is not finite");
    cmd->add_option("--workers", o->workers, "Data loading threads")->capture_default_str();
    cmd->add_option("--train-limit", o->data.train_limit, "Use only the first N training samples");
    cmd->add_option("--val-limit", o->data.val_limit, "Use only the first N validation samples");
    cmd->add_option("--stop-after-epochs", o->stop_after_epochs,
                    "End this run after N epochs (the schedule still spans --epochs; continue with --resume)");
    cmd->add_option("--checkpoint-every", o->checkpoint_every,
                    "Also checkpoint every N optimiser steps within an epoch (0: at epoch ends only)");
    cmd->add_flag("--overwrite", o->overwrite, "Start afresh in an --out folder that already holds a run");
    cmd->add_option("--show-predictions", o->show_predictions, "Validation images to predict at the end")
        ->capture_default_str();
    app::add_precision_option(cmd, o->precision);
    app::add_recompute_option(cmd, o->recompute);
    return [o]() -> int {
        TrainOptions& opt = *o;
        const int rank = dist::rank();
        const bool root = rank == 0;
        NullBuffer null_buffer;
        std::ostream null_log(&null_buffer);
        std::ostream& log = root ? std::cout : null_log;
        if (opt.out.empty()) {
            CNX_CHECK(!opt.resume, "--resume needs --out (the folder holding checkpoint.safetensors)");
            opt.out = dist::broadcast_bytes("runs/" + app::now_stamp());
        }
        // Checked before the data is read (fit checks again): a bad --out costs nothing.
        if (root) train::prepare_output_dir(opt.out, opt.resume, opt.overwrite);
        autograd::set_anomaly_enabled(opt.detect_anomaly);

        opt.data.augment = !opt.no_augment;
        if (root) opt.data.class_indices_out = (fs::path(opt.out) / "class_indices.json").string();
        train::DataSets ds = train::make_datasets(opt.data, log);
        int64_t num_classes = opt.num_classes > 0 ? opt.num_classes : (int64_t)ds.classes.size();
        CNX_CHECK(num_classes >= (int64_t)ds.classes.size(), "--num-classes ", num_classes, " is less than the ",
                  ds.classes.size(), " classes in the data");

        manual_seed(opt.data.seed);
        models::ConvNeXtOptions mo;
        mo.num_classes = num_classes;
        mo.in_chans = ds.in_chans;
        mo.drop_path_rate = opt.drop_path;
        auto model = app::make_model(opt.model, mo);
        if (!opt.weights.empty() && !opt.resume && root) train::load_pretrained(*model, opt.weights, true, log);
        if (opt.freeze_layers)  // as the classic script: everything whose name lacks "head" is frozen
            for (auto& [name, p] : model->named_parameters())
                if (name.find("head") == std::string::npos) p.requires_grad_(false);

        train::TrainerOptions to;
        to.out = opt.out;
        to.num_classes = num_classes;
        to.epochs = opt.epochs, to.batch_size = opt.batch_size, to.accum_steps = opt.accum_steps;
        to.lr = opt.lr, to.weight_decay = opt.wd, to.layer_decay = opt.layer_decay;
        to.warmup_epochs = opt.warmup_epochs;
        to.clip_grad = opt.clip_grad;
        to.label_smoothing = opt.label_smoothing, to.mixup = opt.mixup, to.cutmix = opt.cutmix;
        to.ema = opt.ema, to.ema_decay = opt.ema_decay;
        to.seed = opt.data.seed;
        to.shuffle = !opt.no_shuffle;
        to.workers = opt.workers;
        to.skip_bad_images = opt.skip_bad_images;
        to.resume = opt.resume, to.overwrite = opt.overwrite;
        to.stop_after_epochs = opt.stop_after_epochs, to.checkpoint_every = opt.checkpoint_every;
        to.model_name = opt.model.name;
        to.precision = parse_precision(opt.precision);
        to.recompute = parse_recompute(opt.recompute);
        io::ModelMetadata meta;  // what predict, eval and gradcam read back (io/model_metadata.h)
        meta.model = opt.model.name;
        meta.depths = model->options().depths, meta.dims = model->options().dims;
        meta.num_classes = num_classes, meta.in_chans = ds.in_chans;
        meta.image_size = ds.image_size, meta.resize = ds.eval_resize, meta.crop_pct = ds.crop_pct;
        meta.mean = ds.mean, meta.std = ds.std;
        meta.classes = ds.classes;
        to.weights_metadata = io::to_metadata(meta);
        to.log = &log;
        // The EMA weights are evaluated in a model built as the trained one was.
        to.make_eval_model = [&] { return app::make_model(opt.model, mo); };
        to.callbacks = terminal_report(opt, ds, num_classes);
        train::FitResult result = train::fit(*model, train::cross_entropy_loss(opt.label_smoothing), ds.train, ds.val, to);

        if (!root) return 0;
        std::printf("done: best %s accuracy %.4f; weights %s, checkpoint %s, curves %s\n",
                    ds.val ? "validation" : "training", result.best_acc, (fs::path(opt.out) / "best.safetensors").c_str(),
                    (fs::path(opt.out) / "checkpoint.safetensors").c_str(), (fs::path(opt.out) / "curves.png").c_str());
        if (ds.val && opt.show_predictions > 0) show_predictions(*model, ds, opt.show_predictions);
        return 0;
    };
}

}  // namespace

CONVNEXT_COMMAND(train, setup_train)
