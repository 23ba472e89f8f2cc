// convnext bench: the workloads of the peer benchmark (shared/peer/torch_bench.py), same arguments
// and JSON fields, so the two can be run interleaved and compared.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "core/autograd.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/convnext.h"
#include "ops/ops.h"
#include "optim/optim.h"

namespace {
using namespace cnx;

struct BenchOptions {
    std::string model = "convnext_tiny", mode = "train";
    int64_t batch_size = 16, image_size = 224, num_classes = 1000, in_chans = 3, steps = 3, warmup = 1;
    int threads = 0;
    bool json = false, profile = false;
};

double peak_rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

std::function<int()> setup(CLI::App& root) {
    auto* cmd = root.add_subcommand("bench", "Time training or inference steps (same workloads as the PyTorch peer)");
    auto o = std::make_shared<BenchOptions>();
    cmd->add_option("--model", o->model)->capture_default_str();
    cmd->add_option("--batch-size", o->batch_size)->capture_default_str();
    cmd->add_option("--image-size", o->image_size)->capture_default_str();
    cmd->add_option("--num-classes", o->num_classes)->capture_default_str();
    cmd->add_option("--in-chans", o->in_chans)->capture_default_str();
    cmd->add_option("--mode", o->mode)->check(CLI::IsMember({"train", "infer"}))->capture_default_str();
    cmd->add_option("--steps", o->steps, "Timed steps")->capture_default_str();
    cmd->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str();
    cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
    cmd->add_flag("--json", o->json, "One JSON line");
    cmd->add_flag("--profile", o->profile, "Time per op kind, forward and backward");
    return [o]() -> int {
        if (o->threads > 0) set_num_threads(o->threads);
        manual_seed(0);
        models::ConvNeXtOptions mo;
        mo.num_classes = o->num_classes;
        mo.in_chans = o->in_chans;
        auto model = models::create_model(o->model, mo);
        Tensor x = randn({o->batch_size, o->image_size, o->image_size, o->in_chans});
        std::vector<int64_t> y(o->batch_size);
        Generator g(1);
        for (auto& v : y) v = (int64_t)g.randint(o->num_classes);
        bool train = o->mode == "train";
        std::unique_ptr<optim::AdamW> opt;
        if (train) {
            model->train();
            opt = std::make_unique<optim::AdamW>(model->named_parameters(), optim::AdamWOptions(5e-4).weight_decay(0.05));
        } else {
            model->eval();
        }
        auto step = [&] {
            if (train) {
                opt->zero_grad();
                autograd::profile_mark();
                Tensor loss = cross_entropy(model->forward(x), y);
                loss.backward();
                opt->step();
            } else {
                NoGradGuard ng;
                model->forward(x);
            }
        };
        for (int64_t i = 0; i < o->warmup; ++i) step();
        if (o->profile) {
            autograd::profile_reset();
            autograd::set_profiling(true);
        }
        auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < o->steps; ++i) step();
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / std::max<int64_t>(1, o->steps);
        autograd::set_profiling(false);
        const char* coretype = std::getenv("OPENBLAS_CORETYPE");
        nlohmann::json j{{"peer", "convnext.cpp"},
                         {"model", o->model},
                         {"mode", o->mode},
                         {"batch_size", o->batch_size},
                         {"image_size", o->image_size},
                         {"img_per_s", o->batch_size / dt},
                         {"step_s", dt},
                         {"peak_rss_mb", peak_rss_mb()},
                         {"threads", get_num_threads()},
                         {"openblas_coretype", coretype ? coretype : ""}};
        if (o->json)
            std::cout << j.dump() << "\n";
        else
            std::printf("%s %s batch %lld at %lld: %.2f img/s, %.3f s/step, peak RSS %.0f MB, %d threads\n",
                        o->model.c_str(), o->mode.c_str(), (long long)o->batch_size, (long long)o->image_size,
                        o->batch_size / dt, dt, peak_rss_mb(), get_num_threads());
        if (o->profile) {
            auto rep = autograd::profile_report();
            double total = 0;
            for (auto& p : rep) total += p.forward_s + p.backward_s;
            std::fprintf(o->json ? stderr : stdout, "%-22s %10s %10s %8s  (per step, %lld steps)\n", "op", "forward_ms",
                         "backward_ms", "share", (long long)o->steps);
            for (auto& p : rep)
                std::fprintf(o->json ? stderr : stdout, "%-22s %10.1f %10.1f %7.1f%%\n", p.name.c_str(),
                             1e3 * p.forward_s / o->steps, 1e3 * p.backward_s / o->steps,
                             100 * (p.forward_s + p.backward_s) / std::max(total, 1e-12));
            std::fprintf(o->json ? stderr : stdout, "profiled ops: %.1f ms of %.1f ms per step (rest: optimiser, "
                         "gradient accumulation, engine)\n", 1e3 * total / o->steps, 1e3 * dt);
        }
        return 0;
    };
}

}  // namespace

CONVNEXT_COMMAND(bench, setup)
