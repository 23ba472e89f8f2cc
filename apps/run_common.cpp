#include "apps/run_common.h"

#include "apps/command.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "data/image_folder.h"
#include "data/transforms.h"
#include "io/weights.h"

namespace cnx::app {
namespace fs = std::filesystem;

DataSets make_datasets(const DataConfig& cfg, std::ostream& log) {
    DataSets ds;
    if (cfg.dataset == "fashion-mnist") {
        std::string dir = cfg.data_dir.empty() ? data::kFashionMnistDir : cfg.data_dir;
        data::FashionMnistOptions train_opts;
        train_opts.augment = cfg.augment;
        data::FashionMnistOptions val_opts;
        ds.val = data::FashionMnistDataset::load(dir, false, val_opts);
        if (!cfg.eval_all) ds.train = data::FashionMnistDataset::load(dir, true, train_opts);
        ds.classes = data::kFashionMnistClasses;
        ds.in_chans = 1;
        ds.image_size = 28 + 2 * train_opts.pad;
        ds.mean = {data::kFashionMnistMean};
        ds.std = {data::kFashionMnistStd};
        log << "Fashion-MNIST from " << dir << ": " << (ds.train ? ds.train->size() : 0) << " training, "
            << ds.val->size() << " test images (28x28 padded to " << ds.image_size << "x" << ds.image_size
            << ", 1 channel)\n";
        if (!cfg.class_indices_out.empty()) data::write_class_indices(cfg.class_indices_out, ds.classes);
    } else if (!cfg.dataset.empty()) {
        fail("unknown --dataset '", cfg.dataset, "' (known: fashion-mnist; or use --data DIR for an image folder)");
    } else {
        CNX_CHECK(!cfg.data_dir.empty(), "no data: pass --data DIR (an image folder) or --dataset fashion-mnist");
        ds.image_size = cfg.image_size;
        ds.mean = data::kImageNetMean;
        ds.std = data::kImageNetStd;
        data::Transform eval_tf = data::eval_transform(cfg.image_size, cfg.crop_pct);
        data::TrainTransformOptions tto;
        tto.image_size = cfg.image_size;
        data::Transform train_tf = cfg.augment ? data::train_transform(tto) : eval_tf;
        if (cfg.eval_all) {
            data::ImageFolderIndex idx = data::scan_image_folder(cfg.data_dir);
            ds.classes = idx.classes;
            ds.val = std::make_shared<data::ImageFolderDataset>(idx.paths, idx.labels, eval_tf);
            log << idx.paths.size() << " images in " << idx.classes.size() << " classes under " << cfg.data_dir
                << "\n";
        } else {
            data::SplitOptions so;
            so.val_rate = cfg.val_rate;
            so.seed = cfg.seed;
            so.class_indices_path = cfg.class_indices_out;
            so.log = &log;
            data::SplitData split = data::read_split_data(cfg.data_dir, so);
            ds.classes = split.classes;
            ds.train = std::make_shared<data::ImageFolderDataset>(split.train_paths, split.train_labels, train_tf);
            if (!split.val_paths.empty())
                ds.val = std::make_shared<data::ImageFolderDataset>(split.val_paths, split.val_labels, eval_tf);
        }
    }
    if (ds.train && cfg.train_limit > 0 && cfg.train_limit < ds.train->size())
        ds.train = std::make_shared<SubsetDataset>(ds.train, cfg.train_limit);
    if (ds.val && cfg.val_limit > 0 && cfg.val_limit < ds.val->size())
        ds.val = std::make_shared<SubsetDataset>(ds.val, cfg.val_limit);
    if (ds.train) CNX_CHECK(ds.train->size() > 0, "no training images under ", cfg.data_dir);
    return ds;
}

void load_pretrained(nn::Module& model, const std::string& path, bool drop_mismatched_head, std::ostream& log) {
    io::LoadedWeights w = io::read_weights(path);
    NamedTensors own = model.state_dict();
    std::map<std::string, Shape> own_shapes;
    for (auto& [name, t] : own) own_shapes[name] = t.shape();
    NamedTensors keep;
    std::vector<std::string> dropped;
    for (auto& [name, t] : w.tensors) {
        auto it = own_shapes.find(name);
        bool is_head = name.rfind("head.", 0) == 0;
        if (drop_mismatched_head && is_head && it != own_shapes.end() && it->second != t.shape()) {
            dropped.push_back(name + " " + shape_str(t.shape()) + " (model has " + shape_str(it->second) + ")");
            continue;
        }
        keep.push_back({name, t});
    }
    nn::LoadReport rep = model.load_state_dict(keep, false);
    int64_t loaded = (int64_t)keep.size() - (int64_t)rep.unexpected.size() - (int64_t)rep.mismatched.size();
    CNX_CHECK(loaded > 0, "weights '", path, "': none of its ", w.tensors.size(),
              " tensors matches the model's parameter names (is it a ConvNeXt checkpoint?)");
    CNX_CHECK(rep.mismatched.empty(), "weights '", path, "' do not fit the model:\n", rep.str());
    log << "loaded " << loaded << "/" << own.size() << " tensors from " << path << " (" << w.format
        << (w.key.empty() ? "" : ", entry '" + w.key + "'") << ", " << io::name_style_name(w.source_names)
        << " names)\n";
    for (auto& d : dropped) log << "  dropped (class count differs): " << d << "\n";
    for (auto& m : rep.missing) log << "  missing (kept at init): " << m << "\n";
    for (auto& u : rep.unexpected) log << "  unexpected (ignored): " << u << "\n";
}

void ModelSpec::add_options(CLI::App* cmd) {
    cmd->add_option("--model", name, "Model variant: convnext_atto ... convnext_xlarge")->capture_default_str();
    cmd->add_option("--depths", depths, "Custom blocks per stage, e.g. 1,1,3,1 (overrides the variant's)")
        ->delimiter(',')->expected(4);
    cmd->add_option("--dims", dims, "Custom channels per stage, e.g. 16,32,64,128 (with --depths)")
        ->delimiter(',')->expected(4);
}

std::shared_ptr<models::ConvNeXt> make_model(const ModelSpec& spec, models::ConvNeXtOptions options) {
    if (spec.depths.empty() && spec.dims.empty()) return models::create_model(spec.name, options);
    CNX_CHECK(spec.depths.size() == 4 && spec.dims.size() == 4, "--depths and --dims need four values each (got ",
              spec.depths.size(), " and ", spec.dims.size(), ")");
    for (size_t i = 0; i < 4; ++i)
        CNX_CHECK(spec.depths[i] >= 0 && spec.dims[i] > 0, "--depths/--dims: stage ", i, " has depth ",
                  spec.depths[i], " and dim ", spec.dims[i]);
    options.depths = spec.depths;
    options.dims = spec.dims;
    return std::make_shared<models::ConvNeXt>(options);
}

WeightsShape peek_weights_shape(const std::string& path) {
    io::LoadedWeights w = io::read_weights(path);
    WeightsShape s;
    for (auto& [name, t] : w.tensors) {
        if (name == "head.weight" && t.dim() == 2) s.num_classes = t.size(0);
        if (name == "downsample_layers.0.0.weight" && t.dim() == 4) s.in_chans = t.size(1);
    }
    return s;
}

Progress::Progress(std::string title, int64_t total, bool tty)
    : title_(std::move(title)), total_(total), tty_(tty), start_(std::chrono::steady_clock::now()), last_(start_) {}

void Progress::update(int64_t done, const std::string& stats, bool force) {
    auto now = std::chrono::steady_clock::now();
    double since = std::chrono::duration<double>(now - last_).count();
    double elapsed = std::chrono::duration<double>(now - start_).count();
    if (!force && since < (tty_ ? 0.2 : 5.0)) return;
    last_ = now;
    double eta = done > 0 ? elapsed / done * (total_ - done) : 0;
    if (tty_) {
        const int width = 24;
        int filled = total_ > 0 ? (int)(width * done / total_) : width;
        std::string bar(filled, '#');
        bar += std::string(width - filled, '.');
        std::fprintf(stderr, "\r%s [%s] %lld/%lld %s ETA %s\033[K", title_.c_str(), bar.c_str(), (long long)done,
                     (long long)total_, stats.c_str(), format_duration(eta).c_str());
        std::fflush(stderr);
    } else {
        std::printf("%s %lld/%lld %s ETA %s\n", title_.c_str(), (long long)done, (long long)total_, stats.c_str(),
                    format_duration(eta).c_str());
        std::fflush(stdout);
    }
}

void Progress::finish(const std::string& stats) {
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (tty_) std::fprintf(stderr, "\r\033[K");
    std::printf("%s %lld/%lld %s in %s\n", title_.c_str(), (long long)total_, (long long)total_, stats.c_str(),
                format_duration(elapsed).c_str());
    std::fflush(stdout);
}

std::string format_duration(double s) {
    if (!std::isfinite(s) || s < 0) s = 0;
    char buf[32];
    int64_t t = (int64_t)std::llround(s);
    if (t >= 3600)
        std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60),
                      (long long)(t % 60));
    else
        std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
    return buf;
}

std::string now_stamp() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d_%H-%M-%S", &tm);
    return buf;
}

void ensure_writable_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    CNX_CHECK(fs::is_directory(dir), "output folder '", dir, "' cannot be created",
              ec ? ": " + ec.message() : std::string());
    std::string probe = (fs::path(dir) / ".write_test").string();
    FILE* f = std::fopen(probe.c_str(), "wb");
    CNX_CHECK(f, "output folder '", dir, "' is not writable: ", std::strerror(errno));
    bool ok = std::fwrite("ok", 1, 2, f) == 2 && std::fflush(f) == 0;
    ok = std::fclose(f) == 0 && ok;
    std::remove(probe.c_str());
    CNX_CHECK(ok, "output folder '", dir, "' is not writable (disk full?)");
}

void ensure_free_space(const std::string& dir, const RunFiles& files) {
    struct statvfs fsinfo;
    if (::statvfs(dir.c_str(), &fsinfo) != 0) return;  // cannot tell; the writes report it themselves
    const uint64_t free_bytes = (uint64_t)fsinfo.f_bavail * fsinfo.f_frsize;
    const uint64_t largest = std::max(files.checkpoint, files.weights);
    uint64_t needed = files.checkpoint + files.weights + files.ema_weights + largest + (1u << 20);
    uint64_t reusable = 0;
    for (const char* name : {"checkpoint.safetensors", "best.safetensors", "ema.safetensors"}) {
        std::error_code ec;
        const auto size = fs::file_size(fs::path(dir) / name, ec);
        if (!ec) reusable += size;
    }
    needed = needed > reusable ? needed - reusable : 0;
    auto mb = [](uint64_t b) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
        return std::string(buf);
    };
    CNX_CHECK(free_bytes >= needed, "output folder '", dir, "' has ", mb(free_bytes), " free, but the run needs about ",
              mb(needed), " more there (a ", mb(files.checkpoint),
              " checkpoint, written beside the previous one before it replaces it, and ",
              mb(files.weights + files.ema_weights), " of weights): free some space or choose another --out");
}

}  // namespace cnx::app

#include "core/autograd.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "ops/reduce.h"
#include "ops/softmax.h"

namespace cnx::app {

EvalResult evaluate(nn::Module& model, std::shared_ptr<const data::Dataset> dataset, int64_t num_classes,
                    int64_t batch_size, int workers, bool skip_bad_images, const std::string& progress_title,
                    bool sharded) {
    sharded = sharded && dist::distributed();
    bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    data::LoaderOptions lo;
    lo.batch_size = batch_size;
    lo.shuffle = false;
    lo.drop_last = false;
    lo.num_workers = workers;
    lo.skip_bad_images = skip_bad_images;
    if (sharded) lo.num_replicas = dist::world_size(), lo.rank = dist::rank(), lo.pad_shards = false;
    data::DataLoader loader(dataset, lo);
    EvalResult r;
    r.confusion.assign(num_classes, std::vector<int64_t>(num_classes, 0));
    double loss_sum = 0;
    int64_t correct1 = 0, correct5 = 0;
    std::unique_ptr<Progress> progress;
    if (!progress_title.empty() && dist::is_root())
        progress = std::make_unique<Progress>(progress_title, loader.batches_per_epoch(), stderr_is_tty());
    loader.start_epoch(0);
    data::Batch batch;
    int64_t done = 0;
    while (loader.next(batch)) {
        if (batch.size() == 0) continue;
        Tensor logits = model.forward(batch.images);
        CNX_CHECK(logits.size(1) == num_classes, "evaluate: model gives ", logits.size(1), " classes, data has ",
                  num_classes);
        loss_sum += cross_entropy(logits, batch.labels).item() * batch.size();
        const float* p = logits.data<float>();
        for (int64_t i = 0; i < batch.size(); ++i) {
            const float* row = p + i * num_classes;
            int64_t label = batch.labels[i];
            const int64_t best = argmax(row, num_classes);
            int64_t rank = 0;
            for (int64_t c = 0; c < num_classes; ++c)
                if (c != label && (row[c] > row[label] || (row[c] == row[label] && c < label))) ++rank;
            correct1 += best == label;
            correct5 += rank < 5;
            r.confusion[label][best]++;
        }
        r.count += batch.size();
        if (progress) progress->update(++done, "");
    }
    if (progress) progress->finish("");
    if (sharded) {
        std::vector<int64_t> counts{correct1, correct5, r.count};
        for (auto& row : r.confusion) counts.insert(counts.end(), row.begin(), row.end());
        dist::allreduce_sum(counts.data(), (int64_t)counts.size());
        dist::allreduce_sum(&loss_sum, 1);
        correct1 = counts[0], correct5 = counts[1], r.count = counts[2];
        for (int64_t c = 0; c < num_classes; ++c)
            std::copy_n(counts.begin() + 3 + c * num_classes, num_classes, r.confusion[c].begin());
    }
    CNX_CHECK(r.count > 0, "evaluate: no sample could be read");
    r.loss = loss_sum / r.count;
    r.top1 = (double)correct1 / r.count;
    r.top5 = (double)correct5 / r.count;
    for (int64_t c = 0; c < num_classes; ++c) {
        int64_t n = 0;
        for (auto v : r.confusion[c]) n += v;
        r.per_class_acc.push_back(n ? (double)r.confusion[c][c] / n : std::nan(""));
    }
    model.train(was_training);
    return r;
}

}  // namespace cnx::app
