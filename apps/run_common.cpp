#include "apps/run_common.h"

#include <cmath>
#include <cstdio>
#include <ctime>

#include "io/weights.h"

namespace cnx::app {

void ModelSpec::add_options(CLI::App* cmd) {
    std::string names;
    for (auto& n : models::model_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("--model", name, "Model variant: " + names)->capture_default_str();
    cmd->add_option("--depths", depths, "Custom blocks per stage, e.g. 1,1,3,1 (overrides the variant's)")
        ->delimiter(',')->expected(4);
    cmd->add_option("--dims", dims, "Custom channels per stage, e.g. 16,32,64,128 (with --depths)")
        ->delimiter(',')->expected(4);
}

models::ConvNeXtOptions spec_options(const ModelSpec& spec, models::ConvNeXtOptions options) {
    options = models::model_options(spec.name, options);  // the family's block; throws for unknown names
    if (spec.depths.empty() && spec.dims.empty()) return options;
    CNX_CHECK(spec.depths.size() == 4 && spec.dims.size() == 4, "--depths and --dims need four values each (got ",
              spec.depths.size(), " and ", spec.dims.size(), ")");
    for (size_t i = 0; i < 4; ++i)
        CNX_CHECK(spec.depths[i] >= 0 && spec.dims[i] > 0, "--depths/--dims: stage ", i, " has depth ",
                  spec.depths[i], " and dim ", spec.dims[i]);
    options.depths = spec.depths;
    options.dims = spec.dims;
    return options;
}

std::shared_ptr<models::ConvNeXt> make_model(const ModelSpec& spec, models::ConvNeXtOptions options) {
    if (spec.depths.empty() && spec.dims.empty()) return models::create_model(spec.name, options);
    return std::make_shared<models::ConvNeXt>(spec_options(spec, options));
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

}  // namespace cnx::app
