#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/json.h"
#include "core/rng.h"
#include "data/loader.h"
#include "ops/ops.h"
#include "optim/optim.h"
#include "train/mixup.h"
#include "train/output_dir.h"

namespace cnx::train {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

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

// A metrics line that cannot be written (disk full) stops the run rather than silently leaving
// gaps in metrics.jsonl; --resume trims the file back to the checkpoint and rewrites the rest.
void flush_or_fail(std::ofstream& metrics, const std::string& path, const std::string& out) {
    metrics.flush();
    CNX_CHECK(metrics.good(), "cannot write ", path, ": ", std::strerror(errno), "; the last checkpoint in ", out,
              " is intact (free some space and continue with --resume)");
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

std::string read_file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    CNX_CHECK(f.good(), "cannot read '", path, "'");
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// One call of fit: the state of the run and its steps.
class Run {
public:
    Run(nn::Module& model, LossFn loss, std::shared_ptr<const data::Dataset> train_set,
        std::shared_ptr<const data::Dataset> val_set, const TrainerOptions& options);
    FitResult fit();

private:
    void set_up();
    void resume();
    void check_free_space();
    TrainEpochEnd train_epoch();
    void finish_epoch(EpochRecord rec);
    EvalResult evaluate_ema(const EvalOptions& eo);
    void save_checkpoint();
    void write_or_fail(const std::function<void()>& write);
    double epoch_seconds() const {
        return seconds_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    }

    nn::Module& model_;
    LossFn loss_;
    std::shared_ptr<const data::Dataset> train_set_, val_set_;
    const TrainerOptions& o_;
    const int rank_, world_;
    const bool root_, distributed_;
    const std::string ckpt_path_, metrics_path_;

    std::unique_ptr<optim::AdamW> opt_;
    std::unique_ptr<optim::WarmupCosine> schedule_;
    std::unique_ptr<optim::LambdaLR> sched_;
    std::unique_ptr<optim::ModelEMA> ema_;
    std::unique_ptr<data::DataLoader> loader_;
    std::unique_ptr<dist::GradReducer> reducer_;
    std::vector<Tensor> params_;  // the trainable ones
    int64_t total_params_ = 0, trainable_ = 0, batches_ = 0, steps_per_epoch_ = 0;
    bool resumed_ = false;
    RunState st_;
    std::ofstream metrics_;
    Generator mix_gen_;
    std::chrono::steady_clock::time_point t0_;
    double seconds_before_ = 0;  // of the current epoch, spent before a resume
};

Run::Run(nn::Module& model, LossFn loss, std::shared_ptr<const data::Dataset> train_set,
         std::shared_ptr<const data::Dataset> val_set, const TrainerOptions& options)
    : model_(model), loss_(loss ? std::move(loss) : cross_entropy_loss(options.label_smoothing)),
      train_set_(std::move(train_set)), val_set_(std::move(val_set)), o_(options), rank_(dist::rank()),
      world_(dist::world_size()), root_(rank_ == 0), distributed_(world_ > 1),
      ckpt_path_((fs::path(options.out) / "checkpoint.safetensors").string()),
      metrics_path_((fs::path(options.out) / "metrics.jsonl").string()) {
    CNX_CHECK(!o_.out.empty(), "fit: no output folder (TrainerOptions::out)");
    CNX_CHECK(train_set_, "fit: no training set");
    CNX_CHECK(o_.num_classes > 0, "fit: num_classes must be positive (the width of the model's output), got ",
              o_.num_classes);
    CNX_CHECK(o_.epochs > 0 && o_.batch_size > 0 && o_.accum_steps > 0, "fit: epochs (", o_.epochs,
              "), batch_size (", o_.batch_size, ") and accum_steps (", o_.accum_steps, ") must be positive");
}

void Run::set_up() {
    // Rank 0 owns the output folder; the others only need its name (they never write to it,
    // and may run on machines that cannot see it).
    if (root_) prepare_output_dir(o_.out, o_.resume, o_.overwrite);
    dist::broadcast(model_.state_dict());
    // Each rank draws its own drop-path masks (rank 0 keeps the single-process stream).
    if (rank_ > 0) default_generator().manual_seed(data::derive_seed(o_.seed, kRankSalt, (uint64_t)rank_));

    auto groups = o_.param_groups ? o_.param_groups(model_)
                                  : optim::get_params_groups(model_.named_parameters(), o_.weight_decay, o_.layer_decay);
    for (auto& [n, p] : model_.named_parameters())
        total_params_ += p.numel(), trainable_ += p.requires_grad() ? p.numel() : 0;
    opt_ = std::make_unique<optim::AdamW>(groups, optim::AdamWOptions(o_.lr).weight_decay(o_.weight_decay));

    data::LoaderOptions lo;
    lo.batch_size = o_.batch_size;
    lo.shuffle = o_.shuffle;
    lo.drop_last = true;
    lo.num_workers = o_.workers;
    lo.seed = o_.seed;
    lo.skip_bad_images = o_.skip_bad_images;
    lo.log = o_.warnings;
    lo.num_replicas = world_, lo.rank = rank_;
    lo.keep_empty_batches = distributed_;  // a rank whose images were all skipped still joins the step
    loader_ = std::make_unique<data::DataLoader>(train_set_, lo);
    batches_ = loader_->batches_per_epoch();
    if (distributed_)
        CNX_CHECK(batches_ > 0, "batch size ", o_.batch_size, " per rank is larger than the ",
                  loader_->samples_per_epoch(), " training images each of the ", world_, " ranks gets (of ",
                  train_set_->size(), "; the last partial batch is dropped)");
    CNX_CHECK(batches_ > 0, "batch size ", o_.batch_size, " is larger than the ", train_set_->size(),
              " training images (the last partial batch is dropped)");
    steps_per_epoch_ = (batches_ + o_.accum_steps - 1) / o_.accum_steps;
    schedule_ = std::make_unique<optim::WarmupCosine>(steps_per_epoch_, o_.epochs, o_.warmup_epochs > 0,
                                                      o_.warmup_epochs);
    sched_ = std::make_unique<optim::LambdaLR>(*opt_, *schedule_);
    if (o_.ema) ema_ = std::make_unique<optim::ModelEMA>(model_.state_dict(), o_.ema_decay);

    st_.model = o_.model_name;
    if (o_.resume) resume();
    if (root_) check_free_space();
    if (root_ && o_.callbacks.on_start) {
        RunInfo info;
        info.total_params = total_params_, info.trainable_params = trainable_;
        info.batches_per_epoch = batches_, info.steps_per_epoch = steps_per_epoch_;
        info.world_size = world_;
        info.resumed = resumed_;
        info.start_epoch = st_.epoch, info.start_batch = st_.batch_in_epoch, info.global_step = st_.global_step;
        o_.callbacks.on_start(info);
    }
    if (root_) {
        if (o_.resume) trim_metrics(metrics_path_, st_);
        metrics_.open(metrics_path_, o_.resume ? std::ios::app : std::ios::trunc);
        CNX_CHECK(metrics_.good(), "cannot write ", metrics_path_);
    }
    mix_gen_.manual_seed(mix_seed(o_.seed, 0, rank_));
    for (auto& p : model_.parameters())
        if (p.requires_grad()) params_.push_back(p);
    reducer_ = std::make_unique<dist::GradReducer>(params_);  // no-op in a single process
}

void Run::resume() {
    // Rank 0 reads the checkpoint and sends its bytes: the other ranks restore the same weights,
    // moments and run state even where they cannot see the output folder.
    std::string load_path = ckpt_path_;
    std::unique_ptr<fs::path, void (*)(fs::path*)> copy(nullptr, [](fs::path* p) {
        std::error_code ec;
        fs::remove(*p, ec);
        delete p;
    });
    if (distributed_) {
        std::string bytes = dist::broadcast_bytes(root_ ? read_file_bytes(ckpt_path_) : std::string());
        if (!root_) {
            copy.reset(new fs::path(fs::temp_directory_path() /
                                    ("convnext_resume_" + std::to_string(getpid()) + "_rank" + std::to_string(rank_) +
                                     ".safetensors")));
            std::ofstream f(*copy, std::ios::binary | std::ios::trunc);
            f.write(bytes.data(), (std::streamsize)bytes.size());
            CNX_CHECK(f.good(), "cannot write the received checkpoint to ", copy->string());
            load_path = copy->string();
        }
    }
    st_ = load_training_checkpoint(load_path, model_, *opt_, *sched_, ema_.get());
    CNX_CHECK(st_.model == o_.model_name, "checkpoint '", ckpt_path_, "' is a ", st_.model, ", not a ", o_.model_name);
    CNX_CHECK(st_.batch_in_epoch <= batches_, "checkpoint '", ckpt_path_, "' stands at batch ", st_.batch_in_epoch,
              " of an epoch that now has ", batches_, " (different data or batch size?)");
    const int saved_ranks = (int)split_states(st_.rng).size();
    CNX_CHECK(st_.batch_in_epoch == 0 || saved_ranks == world_, "checkpoint '", ckpt_path_,
              "' was written mid-epoch by a ", saved_ranks, "-process run, so its batch position counts ", saved_ranks,
              " ranks' shares, not ", world_, "'s: resume it with ", saved_ranks, " process(es) (mpirun -np ",
              saved_ranks, ")");
    dist::broadcast(model_.state_dict());
    default_generator().set_state(state_for_rank(st_.rng, rank_));
    resumed_ = true;
    if (root_ && o_.log)
        *o_.log << "resumed from " << ckpt_path_ << " at epoch " << st_.epoch + 1 << ", batch " << st_.batch_in_epoch
                << " (step " << st_.global_step << ")\n";
}

// A full disk found here costs nothing; found at the first save it costs an epoch.
void Run::check_free_space() {
    RunFiles files;
    uint64_t state_bytes = 0, tensors = 0;
    for (auto& [n, t] : model_.state_dict()) state_bytes += t.nbytes(), ++tensors;
    const uint64_t header = 65536 + 256 * tensors;  // names, offsets, run state, history
    files.weights = state_bytes + header;
    files.ema_weights = ema_ ? state_bytes + header : 0;
    files.checkpoint = state_bytes + 2 * (uint64_t)trainable_ * sizeof(float) +  // AdamW moments
                       (ema_ ? state_bytes : 0) + 4 * header;
    ensure_free_space(o_.out, files);
}

void Run::save_checkpoint() {  // every rank calls it (the generator states are gathered)
    st_.rng = join_states(dist::allgather_strings(default_generator().state()));
    st_.mix_rng = join_states(dist::allgather_strings(mix_gen_.state()));
    if (root_) save_training_checkpoint(ckpt_path_, model_, *opt_, *sched_, ema_.get(), st_);
}

// A failed write (disk full) ends the run; the checkpoint written last is whole.
void Run::write_or_fail(const std::function<void()>& write) {
    try {
        write();
    } catch (const Error& e) {
        fail(e.what(), "; the last checkpoint in ", o_.out, " is intact (free some space and continue with --resume)");
    }
}

TrainEpochEnd Run::train_epoch() {
    const int64_t epoch = st_.epoch;
    const MixupOptions mix{o_.mixup, o_.cutmix, o_.label_smoothing};
    model_.train();
    loader_->start_epoch(epoch, st_.batch_in_epoch);
    if (st_.batch_in_epoch > 0 && !st_.mix_rng.empty())
        mix_gen_.set_state(state_for_rank(st_.mix_rng, rank_));
    else
        mix_gen_.manual_seed(mix_seed(o_.seed, epoch, rank_));
    if (root_ && o_.callbacks.on_epoch_begin) o_.callbacks.on_epoch_begin({epoch, o_.epochs, batches_, st_.batch_in_epoch});
    optim::GradAccumulator acc(o_.accum_steps);
    double pending_loss = 0, last_lr = NAN;
    TrainEpochEnd end;
    int64_t pending_n = 0;
    data::Batch batch;
    opt_->zero_grad();
    while (loader_->next(batch)) {
        ++st_.batch_in_epoch;
        // Every image of the batch was skipped. Under MPI the rank still joins the step
        // (contributing nothing), or the others would wait for it.
        if (batch.size() == 0 && !distributed_) continue;
        double lv = 0;
        int64_t correct = 0;
        Tensor loss;
        if (batch.size() > 0) {
            Tensor x = batch.images;
            Tensor soft;
            if (mix.enabled()) soft = mix_batch(x, batch.labels, o_.num_classes, mix, mix_gen_);
            Tensor logits = model_.forward(x);
            CNX_CHECK(logits.dim() == 2 && logits.size(0) == batch.size() && logits.size(1) == o_.num_classes,
                      "fit: the model's output ", shape_str(logits.shape()), " is not [batch ", batch.size(),
                      ", num_classes ", o_.num_classes, "]");
            loss = loss_(logits, Targets{batch.labels, soft});
            lv = loss.item();
            if (!std::isfinite(lv))
                fail("training diverged: non-finite loss (", lv, ") at epoch ", epoch + 1, " step ",
                     st_.step_in_epoch + 1, " (global step ", st_.global_step + 1, "); the last checkpoint in ", o_.out,
                     " is intact. Try a lower --lr or --clip-grad.");
            const float* lp = logits.data<float>();
            for (int64_t i = 0; i < batch.size(); ++i)
                correct += argmax(lp + i * o_.num_classes, o_.num_classes) == batch.labels[i];
        }
        // The running statistics are the global batch's: every rank holds the same sums, so the
        // checkpoint (written by rank 0) is the whole job's. Summed before backward: backward may
        // start gradient all-reduces, and every rank (an empty-batch one runs no backward) must
        // issue its collectives in the same order.
        double batch_loss = lv;
        int64_t batch_n = batch.size();
        if (distributed_) {
            double sums[3] = {lv * batch.size(), (double)batch.size(), (double)correct};
            dist::allreduce_sum(sums, 3);
            if (sums[1] == 0) continue;  // every rank's batch was empty
            batch_loss = sums[0] / sums[1];
            batch_n = (int64_t)sums[1], correct = (int64_t)sums[2];
            st_.loss_sum += sums[0];
        } else {
            st_.loss_sum += lv * batch.size();
        }
        if (loss.defined()) {
            if (o_.accum_steps > 1) loss = mul(loss, 1.0 / o_.accum_steps);
            // The micro-batch that completes the step sends each bucket of gradients as soon as
            // backward has finished it.
            const bool completes_step = acc.pending() + 1 >= acc.steps() || st_.batch_in_epoch == batches_;
            autograd::GradReadyScope overlap(distributed_ && completes_step ? reducer_->hook() : nullptr);
            loss.backward();
        }
        st_.correct += correct;
        st_.seen += batch_n;
        pending_loss += batch_loss, pending_n++;
        if (acc.ready() || st_.batch_in_epoch == batches_) {
            acc.reset();
            // The global batch's gradient on every rank, before clipping sees its norm.
            if (distributed_) {
                dist::ReduceStats rs = reducer_->finish();
                end.comm.seconds += rs.seconds, end.comm.bytes += rs.bytes, end.comm.buckets += rs.buckets;
                end.comm.started_in_backward += rs.started_in_backward;
                ++end.comm_steps;
            }
            double gnorm = optim::clip_grad_norm(params_, o_.clip_grad > 0 ? o_.clip_grad : INFINITY);
            if (!std::isfinite(gnorm))
                fail("training diverged: non-finite gradient norm at epoch ", epoch + 1, " step ",
                     st_.step_in_epoch + 1, " (global step ", st_.global_step + 1, "); the last checkpoint in ", o_.out,
                     " is intact. Try a lower --lr or --clip-grad.");
            last_lr = o_.lr * (*schedule_)(st_.global_step);
            opt_->step();
            sched_->step();
            opt_->zero_grad();
            if (ema_) ema_->update(model_.state_dict());
            if (root_) {
                metrics_ << dump_json({{"epoch", epoch}, {"step", st_.global_step}, {"loss", pending_loss / pending_n},
                                       {"lr", last_lr}, {"grad_norm", gnorm}})
                         << "\n";
                flush_or_fail(metrics_, metrics_path_, o_.out);
            }
            pending_loss = 0, pending_n = 0;
            ++st_.global_step, ++st_.step_in_epoch;
            if (o_.checkpoint_every > 0 && st_.global_step % o_.checkpoint_every == 0 && st_.batch_in_epoch < batches_) {
                st_.epoch_seconds = epoch_seconds();
                save_checkpoint();
            }
        }
        if (root_ && o_.callbacks.on_batch_end)
            o_.callbacks.on_batch_end({epoch, st_.batch_in_epoch, batches_, st_.global_step, st_.loss_sum / st_.seen,
                                       (double)st_.correct / st_.seen, last_lr,
                                       st_.seen / std::max(epoch_seconds(), 1e-9)});
    }
    end.epoch = epoch;
    end.loss = st_.seen ? st_.loss_sum / st_.seen : NAN;
    end.acc = st_.seen ? (double)st_.correct / st_.seen : NAN;
    end.lr = o_.lr * (*schedule_)(std::max<int64_t>(0, st_.global_step - 1));
    end.seconds = epoch_seconds() - seconds_before_;
    return end;
}

EvalResult Run::evaluate_ema(const EvalOptions& eo) {
    if (o_.make_eval_model) {
        auto shadow_model = o_.make_eval_model();
        shadow_model->load_state_dict(ema_->shadow(), true);
        return evaluate(*shadow_model, val_set_, eo);
    }
    NamedTensors live;
    for (auto& [name, t] : model_.state_dict()) live.push_back({name, t.clone()});
    model_.load_state_dict(ema_->shadow(), true);
    EvalResult r;
    try {
        r = evaluate(model_, val_set_, eo);
    } catch (...) {
        model_.load_state_dict(live, true);
        throw;
    }
    model_.load_state_dict(live, true);
    return r;
}

void Run::finish_epoch(EpochRecord rec) {
    const int64_t epoch = st_.epoch;
    if (distributed_) {
        auto sums = dist::allgather_strings(std::to_string(weights_checksum(model_.state_dict())));
        for (int r = 1; r < world_; ++r)
            CNX_CHECK(sums[r] == sums[0], "after epoch ", epoch + 1, " rank ", r,
                      "'s weights differ from rank 0's (the gradient all-reduce gave the ranks different results)");
    }
    if (val_set_) {
        EvalOptions eo;
        eo.num_classes = o_.num_classes;
        eo.batch_size = o_.batch_size;
        eo.workers = o_.workers;
        eo.skip_bad_images = o_.skip_bad_images;
        eo.warnings = o_.warnings;
        eo.sharded = true;
        eo.loss = o_.val_loss;
        ValidationEnd v;
        v.epoch = epoch;
        v.val = evaluate(model_, val_set_, eo);
        rec.val_loss = v.val.loss, rec.val_acc = v.val.top1;
        if (ema_) v.ema = evaluate_ema(eo);
        if (root_ && o_.callbacks.on_validation_end) o_.callbacks.on_validation_end(v);
    }
    rec.seconds = epoch_seconds();
    st_.history.push_back(rec);
    const double score = val_set_ ? rec.val_acc : rec.train_acc;
    io::Metadata wmeta = o_.weights_metadata;
    wmeta["epoch"] = std::to_string(epoch + 1);
    const bool improved = score > st_.best_acc;
    if (improved) {
        st_.best_acc = score;
        if (root_)
            write_or_fail([&] {
                io::save_safetensors((fs::path(o_.out) / "best.safetensors").string(), model_.state_dict(), wmeta);
            });
    }
    if (ema_ && root_)
        write_or_fail(
            [&] { io::save_safetensors((fs::path(o_.out) / "ema.safetensors").string(), ema_->shadow(), wmeta); });
    // The epoch boundary: the next epoch starts fresh.
    st_.epoch += 1;
    st_.batch_in_epoch = 0, st_.step_in_epoch = 0, st_.seen = 0, st_.correct = 0, st_.loss_sum = 0;
    st_.epoch_seconds = 0;
    save_checkpoint();
    if (root_) {
        write_or_fail([&] { write_curves((fs::path(o_.out) / "curves.png").string(), st_.history); });
        metrics_ << dump_json(rec.to_json(epoch)) << "\n";
        flush_or_fail(metrics_, metrics_path_, o_.out);
        if (o_.callbacks.on_epoch_end) o_.callbacks.on_epoch_end({epoch, rec, improved});
    }
}

FitResult Run::fit() {
    set_up();
    int64_t end_epoch = o_.epochs;
    if (o_.stop_after_epochs > 0) end_epoch = std::min(end_epoch, st_.epoch + o_.stop_after_epochs);
    while (st_.epoch < end_epoch) {
        t0_ = std::chrono::steady_clock::now();
        seconds_before_ = st_.epoch_seconds;
        TrainEpochEnd trained = train_epoch();
        if (root_ && o_.callbacks.on_train_epoch_end) o_.callbacks.on_train_epoch_end(trained);
        EpochRecord rec;
        rec.train_loss = trained.loss, rec.train_acc = trained.acc, rec.lr = trained.lr;
        finish_epoch(rec);
    }
    return {st_.best_acc, st_.epoch, st_.global_step, st_.history};
}

}  // namespace

FitResult fit(nn::Module& model, LossFn loss, std::shared_ptr<const data::Dataset> train_set,
              std::shared_ptr<const data::Dataset> val_set, const TrainerOptions& options) {
    PrecisionGuard precision(options.precision);
    RecomputeGuard recompute(options.recompute);
    return Run(model, std::move(loss), std::move(train_set), std::move(val_set), options).fit();
}

}  // namespace cnx::train
