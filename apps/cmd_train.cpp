// convnext train: the classic ConvNeXt fine-tuning workflow (image folder or Fashion-MNIST),
// with that script's options and defaults: AdamW without decay on biases and norms, warmup then
// cosine stepped per iteration, --freeze-layers, class_indices.json, best weights by val accuracy.
//
// Under mpirun it trains data-parallel (dist/dist.h): rank 0's weights are broadcast, each rank
// takes its DistributedSampler share of every epoch with --batch-size images per step, gradients
// are averaged across ranks before clipping and the optimiser step (so every rank takes the same
// step), validation is sharded and its counts summed. Rank 0 alone prints and writes files.
#include <array>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "apps/command.h"
#include "apps/mixup.h"
#include "apps/run_common.h"
#include "apps/train_state.h"
#include "core/autograd.h"
#include "core/rng.h"
#include "core/threads.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "io/curves.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "optim/optim.h"

namespace {
namespace fs = std::filesystem;
using namespace cnx;
using json = nlohmann::json;

struct TrainOptions {
    app::DataConfig data;
    app::ModelSpec model;
    std::string weights, out;
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

// Salt for per-rank random streams (drop path, mixup): rank 0 keeps the single-process streams,
// so a one-rank mpirun trains exactly like a plain launch.
constexpr uint64_t kRankSalt = 0x72616e6b;

// Checkpoints hold every rank's generator state joined by '|' (rank 0 first); a single-process
// checkpoint is the one-part case, which keeps the file format unchanged.
std::vector<std::string> split_states(const std::string& s) {
    std::vector<std::string> parts;
    size_t from = 0;
    for (;;) {
        size_t bar = s.find('|', from);
        parts.push_back(s.substr(from, bar == std::string::npos ? std::string::npos : bar - from));
        if (bar == std::string::npos) return parts;
        from = bar + 1;
    }
}
std::string join_states(const std::vector<std::string>& parts) {
    std::string s;
    for (size_t i = 0; i < parts.size(); ++i) s += (i ? "|" : "") + parts[i];
    return s;
}
// The saved state of `rank`, or, for a run saved with fewer ranks, a stream derived from rank 0's.
// A metrics line that cannot be written (disk full) stops the run rather than silently leaving
// gaps in metrics.jsonl; --resume trims the file back to the checkpoint and rewrites the rest.
void flush_or_fail(std::ofstream& metrics, const std::string& path, const std::string& out) {
    metrics.flush();
    CNX_CHECK(metrics.good(), "cannot write ", path, ": ", std::strerror(errno), "; the last checkpoint in ", out,
              " is intact (free some space and continue with --resume)");
}

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

std::string state_for_rank(const std::string& saved, int rank) {
    auto parts = split_states(saved);
    if (rank < (int)parts.size()) return parts[rank];
    Generator g;
    g.set_state(parts[0]);
    return Generator(data::derive_seed(g.next_u64(), kRankSalt, (uint64_t)rank)).state();
}
uint64_t mix_seed(uint64_t seed, int64_t epoch, int rank) {
    uint64_t s = data::derive_seed(seed, 0x6d6978, epoch);
    return rank == 0 ? s : data::derive_seed(s, kRankSalt, (uint64_t)rank);
}

// Every rank must hold the same weights after each step; a cheap hash compared once per epoch
// catches an all-reduce that did not give every rank the same bits.
uint64_t weights_checksum(const NamedTensors& tensors) {
    uint64_t h = 1469598103934665603ull;
    for (auto& [name, t] : tensors) {
        const unsigned char* p = static_cast<const unsigned char*>(t.raw_data());
        const size_t n = t.nbytes();
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            h = (h ^ w) * 1099511628211ull;
        }
        for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

// Where ranks other than 0 send their log: nowhere.
struct NullBuffer : std::streambuf {
    int overflow(int c) override { return c; }
};

std::string read_file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    CNX_CHECK(f.good(), "cannot read '", path, "'");
    return std::string(std::istreambuf_iterator<char>(f), {});
}

std::function<int()> setup(CLI::App& root) {
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
    return [o]() -> int {
        TrainOptions& opt = *o;
        // Rank 0 owns the output folder; the others only need its name (they never write to it,
        // and may run on machines that cannot see it).
        const int rank = dist::rank(), world = dist::world_size();
        const bool root = rank == 0, distributed = world > 1;
        NullBuffer null_buffer;
        std::ostream null_log(&null_buffer);
        std::ostream& log = root ? std::cout : null_log;
        if (opt.out.empty()) {
            CNX_CHECK(!opt.resume, "--resume needs --out (the folder holding checkpoint.safetensors)");
            opt.out = dist::broadcast_bytes("runs/" + app::now_stamp());
        }
        const std::string ckpt_path = (fs::path(opt.out) / "checkpoint.safetensors").string();
        if (root) {
            app::ensure_writable_dir(opt.out);
            if (opt.resume)
                CNX_CHECK(fs::exists(ckpt_path), "--resume: no checkpoint at '", ckpt_path, "'");
            else
                CNX_CHECK(opt.overwrite || !fs::exists(ckpt_path), "'", opt.out,
                          "' already holds a training run (checkpoint.safetensors): continue it with --resume, or "
                          "start afresh with --overwrite, or choose another --out");
        }
        autograd::set_anomaly_enabled(opt.detect_anomaly);

        opt.data.augment = !opt.no_augment;
        if (root) opt.data.class_indices_out = (fs::path(opt.out) / "class_indices.json").string();
        app::DataSets ds = app::make_datasets(opt.data, log);
        int64_t num_classes = opt.num_classes > 0 ? opt.num_classes : (int64_t)ds.classes.size();
        CNX_CHECK(num_classes >= (int64_t)ds.classes.size(), "--num-classes ", num_classes, " is less than the ",
                  ds.classes.size(), " classes in the data");

        manual_seed(opt.data.seed);
        models::ConvNeXtOptions mo;
        mo.num_classes = num_classes;
        mo.in_chans = ds.in_chans;
        mo.drop_path_rate = opt.drop_path;
        auto model = app::make_model(opt.model, mo);
        if (!opt.weights.empty() && !opt.resume && root) app::load_pretrained(*model, opt.weights, true, log);
        dist::broadcast(model->state_dict());
        // Each rank draws its own drop-path masks (rank 0 keeps the single-process stream).
        if (rank > 0) default_generator().manual_seed(data::derive_seed(opt.data.seed, kRankSalt, (uint64_t)rank));
        if (opt.freeze_layers)  // as the classic script: everything whose name lacks "head" is frozen
            for (auto& [name, p] : model->named_parameters())
                if (name.find("head") == std::string::npos) p.requires_grad_(false);

        optim::ParamGroupOptions pgo;
        pgo.weight_decay = opt.wd;
        pgo.layer_decay = opt.layer_decay;
        auto groups = optim::get_params_groups(model->named_parameters(), pgo);
        int64_t trainable = 0, total = 0;
        for (auto& [n, p] : model->named_parameters()) total += p.numel(), trainable += p.requires_grad() ? p.numel() : 0;
        optim::AdamW opt_adamw(groups, optim::AdamWOptions(opt.lr).weight_decay(opt.wd));

        data::LoaderOptions lo;
        lo.batch_size = opt.batch_size;
        lo.shuffle = !opt.no_shuffle;
        lo.drop_last = true;
        lo.num_workers = opt.workers;
        lo.seed = opt.data.seed;
        lo.skip_bad_images = opt.skip_bad_images;
        lo.num_replicas = world, lo.rank = rank;
        lo.keep_empty_batches = distributed;  // a rank whose images were all skipped still joins the step
        data::DataLoader loader(ds.train, lo);
        const int64_t batches = loader.batches_per_epoch();
        if (distributed)
            CNX_CHECK(batches > 0, "batch size ", opt.batch_size, " per rank is larger than the ",
                      loader.samples_per_epoch(), " training images each of the ", world, " ranks gets (of ",
                      ds.train->size(), "; the last partial batch is dropped)");
        CNX_CHECK(batches > 0, "batch size ", opt.batch_size, " is larger than the ", ds.train->size(),
                  " training images (the last partial batch is dropped)");
        const int64_t steps_per_epoch = (batches + opt.accum_steps - 1) / opt.accum_steps;
        CNX_CHECK(opt.warmup_epochs < opt.epochs || opt.warmup_epochs == 0, "--warmup-epochs ", opt.warmup_epochs,
                  " must be less than --epochs ", opt.epochs);
        optim::WarmupCosine schedule(steps_per_epoch, opt.epochs, opt.warmup_epochs > 0, opt.warmup_epochs);
        optim::LambdaLR sched(opt_adamw, schedule);
        std::unique_ptr<optim::ModelEMA> ema;
        if (opt.ema) ema = std::make_unique<optim::ModelEMA>(model->state_dict(), opt.ema_decay);

        app::RunState st;
        st.model = opt.model.name;
        if (opt.resume) {
            // Rank 0 reads the checkpoint and sends its bytes: the other ranks restore the same
            // weights, moments and run state even where they cannot see --out.
            std::string load_path = ckpt_path;
            std::unique_ptr<fs::path, void (*)(fs::path*)> copy(nullptr, [](fs::path* p) {
                std::error_code ec;
                fs::remove(*p, ec);
                delete p;
            });
            if (distributed) {
                std::string bytes = dist::broadcast_bytes(root ? read_file_bytes(ckpt_path) : std::string());
                if (!root) {
                    copy.reset(new fs::path(fs::temp_directory_path() /
                                            ("convnext_resume_" + std::to_string(getpid()) + "_rank" +
                                             std::to_string(rank) + ".safetensors")));
                    std::ofstream f(*copy, std::ios::binary | std::ios::trunc);
                    f.write(bytes.data(), (std::streamsize)bytes.size());
                    CNX_CHECK(f.good(), "cannot write the received checkpoint to ", copy->string());
                    load_path = copy->string();
                }
            }
            st = app::load_training_checkpoint(load_path, *model, opt_adamw, sched, ema.get());
            CNX_CHECK(st.model == opt.model.name, "checkpoint '", ckpt_path, "' is a ", st.model, ", not a ",
                      opt.model.name);
            CNX_CHECK(st.batch_in_epoch <= batches, "checkpoint '", ckpt_path, "' stands at batch ", st.batch_in_epoch,
                      " of an epoch that now has ", batches, " (different data or batch size?)");
            const int saved_ranks = (int)split_states(st.rng).size();
            CNX_CHECK(st.batch_in_epoch == 0 || saved_ranks == world, "checkpoint '", ckpt_path,
                      "' was written mid-epoch by a ", saved_ranks, "-process run, so its batch position counts ",
                      saved_ranks, " ranks' shares, not ", world, "'s: resume it with ", saved_ranks,
                      " process(es) (mpirun -np ", saved_ranks, ")");
            dist::broadcast(model->state_dict());
            default_generator().set_state(state_for_rank(st.rng, rank));
            log << "resumed from " << ckpt_path << " at epoch " << st.epoch + 1 << ", batch " << st.batch_in_epoch
                << " (step " << st.global_step << ")\n";
        }

        if (root) {
            // A full disk found here costs nothing; found at the first save it costs an epoch.
            app::RunFiles files;
            uint64_t state_bytes = 0, tensors = 0;
            for (auto& [n, t] : model->state_dict()) state_bytes += t.nbytes(), ++tensors;
            const uint64_t header = 65536 + 256 * tensors;  // names, offsets, run state, history
            files.weights = state_bytes + header;
            files.ema_weights = ema ? state_bytes + header : 0;
            files.checkpoint = state_bytes + 2 * (uint64_t)trainable * sizeof(float) +  // AdamW moments
                               (ema ? state_bytes : 0) + 4 * header;
            app::ensure_free_space(opt.out, files);
            std::printf("%s: %s parameters (%s trainable), %lld classes, input %lldx%lldx%lld\n",
                        opt.model.name.c_str(), param_count(total).c_str(), param_count(trainable).c_str(),
                        (long long)num_classes,
                        (long long)ds.image_size, (long long)ds.image_size, (long long)ds.in_chans);
            if (distributed)
                std::printf("data-parallel: %d ranks x %d thread(s), batch %lld per rank = global batch %lld (the lr "
                            "is not scaled with it)\n",
                            world, get_num_threads(), (long long)opt.batch_size, (long long)opt.batch_size * world);
            std::printf("%sbatch %lld x %lld accumulation, %lld steps/epoch, %lld epochs, lr %g, wd %g, warmup %lld "
                        "epoch(s)\n",
                        distributed ? "global " : "", (long long)opt.batch_size * world, (long long)opt.accum_steps,
                        (long long)steps_per_epoch, (long long)opt.epochs, opt.lr, opt.wd,
                        (long long)opt.warmup_epochs);
            std::printf("writing to %s\n", opt.out.c_str());
            std::fflush(stdout);
        }

        const std::string metrics_path = (fs::path(opt.out) / "metrics.jsonl").string();
        std::ofstream metrics;
        if (root) {
            if (opt.resume) app::trim_metrics(metrics_path, st);
            metrics.open(metrics_path, opt.resume ? std::ios::app : std::ios::trunc);
            CNX_CHECK(metrics.good(), "cannot write ", metrics_path);
        }
        app::MixupOptions mix{opt.mixup, opt.cutmix, opt.label_smoothing};
        Generator mix_gen(mix_seed(opt.data.seed, 0, rank));

        int64_t end_epoch = opt.epochs;
        if (opt.stop_after_epochs > 0) end_epoch = std::min(end_epoch, st.epoch + opt.stop_after_epochs);
        std::vector<Tensor> params;  // the trainable ones
        for (auto& p : model->parameters())
            if (p.requires_grad()) params.push_back(p);
        dist::GradReducer reducer(params);  // no-op in a single process
        auto save_checkpoint = [&] {  // every rank calls it (the generator states are gathered)
            st.rng = join_states(dist::allgather_strings(default_generator().state()));
            st.mix_rng = join_states(dist::allgather_strings(mix_gen.state()));
            if (root) app::save_training_checkpoint(ckpt_path, *model, opt_adamw, sched, ema.get(), st);
        };
        for (; st.epoch < end_epoch; ++st.epoch) {
            const int64_t epoch = st.epoch;
            auto t0 = std::chrono::steady_clock::now();
            double seconds_before = st.epoch_seconds;
            auto epoch_seconds = [&] {
                return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            };
            model->train();
            loader.start_epoch(epoch, st.batch_in_epoch);
            if (st.batch_in_epoch > 0 && !st.mix_rng.empty())
                mix_gen.set_state(state_for_rank(st.mix_rng, rank));
            else
                mix_gen.manual_seed(mix_seed(opt.data.seed, epoch, rank));
            std::unique_ptr<app::Progress> progress;
            if (root)
                progress = std::make_unique<app::Progress>(
                    "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opt.epochs), batches,
                    app::stderr_is_tty());
            optim::GradAccumulator acc(opt.accum_steps);
            double pending_loss = 0, last_lr = NAN;
            dist::ReduceStats comm;  // this epoch's gradient all-reduce, summed over steps
            int64_t comm_steps = 0;
            int64_t pending_n = 0;
            data::Batch batch;
            opt_adamw.zero_grad();
            while (loader.next(batch)) {
                ++st.batch_in_epoch;
                // Every image of the batch was skipped. Under MPI the rank still joins the step
                // (contributing nothing), or the others would wait for it.
                if (batch.size() == 0 && !distributed) continue;
                double lv = 0;
                int64_t correct = 0;
                Tensor loss;
                if (batch.size() > 0) {
                    Tensor x = batch.images;
                    Tensor soft;
                    if (mix.enabled()) soft = app::mix_batch(x, batch.labels, num_classes, mix, mix_gen);
                    Tensor logits = model->forward(x);
                    loss = soft.defined() ? cross_entropy(logits, soft)
                                          : cross_entropy(logits, batch.labels, opt.label_smoothing);
                    lv = loss.item();
                    if (!std::isfinite(lv))
                        fail("training diverged: non-finite loss (", lv, ") at epoch ", epoch + 1, " step ",
                             st.step_in_epoch + 1, " (global step ", st.global_step + 1, "); the last checkpoint in ",
                             opt.out, " is intact. Try a lower --lr or --clip-grad.");
                    const float* lp = logits.data<float>();
                    for (int64_t i = 0; i < batch.size(); ++i) {
                        const float* row = lp + i * num_classes;
                        correct += argmax(row, num_classes) == batch.labels[i];
                    }
                }
                // The running statistics are the global batch's: every rank holds the same sums,
                // so the checkpoint (written by rank 0) is the whole job's. Summed before backward:
                // backward may start gradient all-reduces, and every rank (an empty-batch one runs
                // no backward) must issue its collectives in the same order.
                double batch_loss = lv;
                int64_t batch_n = batch.size();
                if (distributed) {
                    double sums[3] = {lv * batch.size(), (double)batch.size(), (double)correct};
                    dist::allreduce_sum(sums, 3);
                    if (sums[1] == 0) continue;  // every rank's batch was empty
                    batch_loss = sums[0] / sums[1];
                    batch_n = (int64_t)sums[1], correct = (int64_t)sums[2];
                    st.loss_sum += sums[0];
                } else {
                    st.loss_sum += lv * batch.size();
                }
                if (loss.defined()) {
                    if (opt.accum_steps > 1) loss = mul(loss, 1.0 / opt.accum_steps);
                    // The micro-batch that completes the step sends each bucket of gradients as
                    // soon as backward has finished it.
                    const bool completes_step = acc.pending() + 1 >= acc.steps() || st.batch_in_epoch == batches;
                    autograd::GradReadyScope overlap(distributed && completes_step ? reducer.hook() : nullptr);
                    loss.backward();
                }
                st.correct += correct;
                st.seen += batch_n;
                pending_loss += batch_loss, pending_n++;
                if (acc.ready() || st.batch_in_epoch == batches) {
                    acc.reset();
                    // The global batch's gradient on every rank, before clipping sees its norm.
                    if (distributed) {
                        dist::ReduceStats rs = reducer.finish();
                        comm.seconds += rs.seconds, comm.bytes += rs.bytes, comm.buckets += rs.buckets;
                        comm.started_in_backward += rs.started_in_backward;
                        ++comm_steps;
                    }
                    double gnorm = optim::clip_grad_norm(params, opt.clip_grad > 0 ? opt.clip_grad : INFINITY);
                    if (!std::isfinite(gnorm))
                        fail("training diverged: non-finite gradient norm at epoch ", epoch + 1, " step ",
                             st.step_in_epoch + 1, " (global step ", st.global_step + 1, "); the last checkpoint in ",
                             opt.out, " is intact. Try a lower --lr or --clip-grad.");
                    last_lr = opt.lr * schedule(st.global_step);
                    opt_adamw.step();
                    sched.step();
                    opt_adamw.zero_grad();
                    if (ema) ema->update(model->state_dict());
                    if (root)
                        metrics << json{{"epoch", epoch}, {"step", st.global_step}, {"loss", pending_loss / pending_n},
                                    {"lr", last_lr}, {"grad_norm", gnorm}}
                                       .dump()
                                << "\n";
                    if (root) flush_or_fail(metrics, metrics_path, opt.out);
                    pending_loss = 0, pending_n = 0;
                    ++st.global_step, ++st.step_in_epoch;
                    if (opt.checkpoint_every > 0 && st.global_step % opt.checkpoint_every == 0 &&
                        st.batch_in_epoch < batches) {
                        st.epoch_seconds = epoch_seconds();
                        save_checkpoint();
                    }
                }
                char stats[160];
                std::snprintf(stats, sizeof stats, "loss %.4f acc %.4f lr %.2e %.1f img/s", st.loss_sum / st.seen,
                              (double)st.correct / st.seen, last_lr,
                              st.seen / std::max(epoch_seconds(), 1e-9));
                if (progress) progress->update(st.batch_in_epoch, stats);
            }
            app::EpochRecord rec;
            rec.train_loss = st.seen ? st.loss_sum / st.seen : NAN;
            rec.train_acc = st.seen ? (double)st.correct / st.seen : NAN;
            rec.lr = opt.lr * schedule(std::max<int64_t>(0, st.global_step - 1));
            char stats[160];
            std::snprintf(stats, sizeof stats, "train loss %.4f acc %.4f lr %.2e", rec.train_loss, rec.train_acc,
                          rec.lr);
            if (progress) progress->finish(stats);
            if (distributed && root && comm_steps > 0)
                std::printf("gradient all-reduce: %lld steps x %.1f MB in %lld bucket(s) (%.0f%% started during "
                            "backward), %.2f s waited after backward (%.1f%% of %.2f s training)\n",
                            (long long)comm_steps, comm.bytes / 1e6 / comm_steps, (long long)(comm.buckets / comm_steps),
                            100.0 * comm.started_in_backward / std::max<int64_t>(comm.buckets, 1), comm.seconds, 100 * comm.seconds / std::max(epoch_seconds() - seconds_before, 1e-9),
                            epoch_seconds() - seconds_before);
            if (distributed) {
                auto sums = dist::allgather_strings(std::to_string(weights_checksum(model->state_dict())));
                for (int r = 1; r < world; ++r)
                    CNX_CHECK(sums[r] == sums[0], "after epoch ", epoch + 1, " rank ", r,
                              "'s weights differ from rank 0's (the gradient all-reduce gave the ranks different "
                              "results)");
            }
            if (ds.val) {
                auto vr = app::evaluate(*model, ds.val, num_classes, opt.batch_size, opt.workers, opt.skip_bad_images,
                                        "", true);
                rec.val_loss = vr.loss, rec.val_acc = vr.top1;
                if (root)
                    std::printf("[valid epoch %lld] loss %.4f acc %.4f (%lld images)", (long long)epoch + 1, vr.loss,
                                vr.top1, (long long)vr.count);
                if (ema) {
                    auto shadow_model = app::make_model(opt.model, mo);
                    shadow_model->load_state_dict(ema->shadow(), true);
                    auto er = app::evaluate(*shadow_model, ds.val, num_classes, opt.batch_size, opt.workers,
                                            opt.skip_bad_images, "", true);
                    if (root) std::printf(", ema acc %.4f", er.top1);
                }
                if (root) std::printf("\n");
            }
            rec.seconds = epoch_seconds();
            st.history.push_back(rec);
            double score = ds.val ? rec.val_acc : rec.train_acc;
            io::Metadata wmeta{{"model", opt.model.name}, {"num_classes", std::to_string(num_classes)},
                               {"in_chans", std::to_string(ds.in_chans)}, {"image_size", std::to_string(ds.image_size)},
                               {"epoch", std::to_string(epoch + 1)}, {"mean", json(ds.mean).dump()},
                               {"std", json(ds.std).dump()}, {"classes", json(ds.classes).dump()}};
            // A failed write (disk full) ends the run; the checkpoint written last is whole.
            auto or_fail = [&](const std::function<void()>& write) {
                try {
                    write();
                } catch (const Error& e) {
                    fail(e.what(), "; the last checkpoint in ", opt.out,
                         " is intact (free some space and continue with --resume)");
                }
            };
            if (score > st.best_acc) {
                st.best_acc = score;
                if (root)
                    or_fail([&] {
                        io::save_safetensors((fs::path(opt.out) / "best.safetensors").string(), model->state_dict(),
                                             wmeta);
                    });
            }
            if (ema && root)
                or_fail([&] {
                    io::save_safetensors((fs::path(opt.out) / "ema.safetensors").string(), ema->shadow(), wmeta);
                });
            // The epoch boundary: the next epoch starts fresh.
            st.epoch += 1;
            st.batch_in_epoch = 0, st.step_in_epoch = 0, st.seen = 0, st.correct = 0, st.loss_sum = 0;
            st.epoch_seconds = 0;
            save_checkpoint();
            st.epoch -= 1;  // the for loop increments it
            if (root) {
                or_fail([&] { app::write_curves((fs::path(opt.out) / "curves.png").string(), st.history); });
                metrics << rec.to_json(epoch).dump() << "\n";
                flush_or_fail(metrics, metrics_path, opt.out);
            }
        }

        if (!root) return 0;
        std::printf("done: best %s accuracy %.4f; weights %s, checkpoint %s, curves %s\n", ds.val ? "validation" : "training",
                    st.best_acc, (fs::path(opt.out) / "best.safetensors").c_str(), ckpt_path.c_str(),
                    (fs::path(opt.out) / "curves.png").c_str());
        if (ds.val && opt.show_predictions > 0) {
            NoGradGuard ng;
            model->eval();
            int64_t n = std::min<int64_t>(opt.show_predictions, ds.val->size());
            std::printf("predictions on %lld validation images:\n", (long long)n);
            Generator g(0);
            for (int64_t i = 0; i < n; ++i) {
                data::Sample s;
                try {
                    s = ds.val->get(i, g);
                } catch (const data::BadImageError&) {
                    continue;
                }
                Tensor logits = model->forward(s.image.reshape({1, s.image.size(0), s.image.size(1), s.image.size(2)}));
                Tensor prob = softmax(logits, -1);
                const float* p = prob.data<float>();
                const int64_t best = argmax(p, num_classes);
                auto name = [&](int64_t c) { return c < (int64_t)ds.classes.size() ? ds.classes[c] : std::to_string(c); };
                std::printf("  %-40s true %-12s predicted %-12s (%.3f)%s\n", ds.val->describe(i).c_str(),
                            name(s.label).c_str(), name(best).c_str(), p[best], best == s.label ? "" : "  <- wrong");
            }
        }
        return 0;
    };
}

}  // namespace

CONVNEXT_COMMAND(train, setup)
