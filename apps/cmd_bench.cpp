// convnext bench: the workloads of the peer benchmark (shared/peer/torch_bench.py), same arguments
// and JSON fields, so the two can be run interleaved and compared; plus the machine's limits
// (--peak) and the model's GEMMs one by one (--gemm).
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "apps/precision_option.h"
#include "bench/gemm_shapes.h"
#include "core/autograd.h"
#include "core/cpu_info.h"
#include "core/cpu_peak.h"
#include "core/rng.h"
#include "core/storage.h"
#include "core/threads.h"
#include "core/json.h"
#include "models/convnext.h"
#include "ops/ops.h"
#include "ops/packed_weights.h"
#include "ops/precision.h"
#include "ops/saved.h"
#include "optim/optim.h"

namespace {
using namespace cnx;

struct BenchOptions {
    std::string model = "convnext_tiny", mode = "train", precision = "fp32", recompute = "auto";
    int64_t batch_size = 16, image_size = 224, num_classes = 1000, in_chans = 3, steps = 3, warmup = 1;
    int threads = 0;
    bool json = false, profile = false, peak = false, gemm = false, bf16 = false, channels_last = false;
    bool pack_weights = false;
    int reps = 5;
};

double peak_rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

// User + system CPU seconds of the whole process (all threads) so far.
double process_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

// What the timed steps ran: "bf16" / "fp32" when every call (or tensor) took that path, "mixed"
// otherwise, "none" when there was nothing.
const char* path_name(int64_t bf16, int64_t other, const char* other_name) {
    if (bf16 == 0 && other == 0) return "none";
    if (other == 0) return "bf16";
    return bf16 == 0 ? other_name : "mixed";
}

// Which GEMM kernels ran: "bf16", "fp16" or "fp32" when one did, "mixed" when several, "none".
const char* gemm_kernels_name(const GemmCallCounts& c) {
    const int64_t fp32 = c.fp32 + c.openblas;
    const int kinds = (c.bf16 > 0) + (c.fp16 > 0) + (fp32 > 0);
    if (kinds == 0) return "none";
    if (kinds > 1) return "mixed";
    return c.bf16 > 0 ? "bf16" : c.fp16 > 0 ? "fp16" : "fp32";
}

// --peak: measure now, store in the per-CPU cache, print.
int run_peak(const BenchOptions& o) {
    const CpuInfo& ci = cpu_info();
    const PeakRates r = measure_peak(true, true, ci.hardware_threads);
    const std::string path = store_peak(r);
    if (o.json) {
        nlohmann::json j{{"cpu", ci.model_name},
                         {"cpu_family", ci.family},
                         {"cpu_model", ci.model},
                         {"l1d_kb", ci.l1d_bytes / 1024},
                         {"l2_kb", ci.l2_bytes / 1024},
                         {"l3_kb", ci.l3_bytes / 1024},
                         {"threads", r.threads},
                         {"fp32_kind", r.fp32_kind},
                         {"fp32_gflops_per_core", r.fp32_core},
                         {"fp32_gflops_all", r.fp32_all},
                         {"bf16_gflops_per_core", r.bf16_core},
                         {"bf16_gflops_all", r.bf16_all},
                         {"bf16_over_fp32", r.fp32_core > 0 ? r.bf16_core / r.fp32_core : 0.0},
                         {"fp16_gflops_per_core", r.fp16_core},
                         {"fp16_gflops_all", r.fp16_all},
                         {"fp16_over_fp32", r.fp32_core > 0 ? r.fp16_core / r.fp32_core : 0.0},
                         {"mem_gbs_per_core", r.mem_core},
                         {"mem_gbs_all", r.mem_all},
                         {"cache_file", path}};
        std::cout << dump_json(j) << "\n";
        return 0;
    }
    std::printf("CPU: %s\n", ci.summary().c_str());
    std::printf("fp32 FMA (%s):   %7.1f GFLOP/s one core, %7.1f all %d threads\n", r.fp32_kind.c_str(), r.fp32_core,
                r.fp32_all, r.threads);
    if (r.bf16_core > 0)
        std::printf("bf16 dot (vdpbf16ps): %7.1f GFLOP/s one core, %7.1f all %d threads (%.2fx fp32)\n", r.bf16_core,
                    r.bf16_all, r.threads, r.bf16_core / r.fp32_core);
    else
        std::printf("bf16 dot: this CPU has no AVX512_BF16\n");
    if (r.fp16_core > 0)
        std::printf("fp16 FMA (vfmadd*ph): %7.1f GFLOP/s one core, %7.1f all %d threads (%.2fx fp32)\n", r.fp16_core,
                    r.fp16_all, r.threads, r.fp16_core / r.fp32_core);
    else
        std::printf("fp16 FMA: this CPU has no AVX512_FP16\n");
    std::printf("memory (triad):       %7.1f GB/s one core, %7.1f all %d threads\n", r.mem_core, r.mem_all, r.threads);
    std::printf("(rates per CPU-second of each thread, best of several runs; %s)\n",
                path.empty() ? "not cached" : ("cached in " + path).c_str());
    return 0;
}

// --gemm: the model's pointwise-conv GEMMs at this batch and image size, float32 on one thread
// (per CPU-second of that thread) and on --threads, and the bf16 and fp16 kernels on one thread
// where the CPU has them.
int run_gemm(const BenchOptions& o) {
    const int threads = o.threads > 0 ? o.threads : hardware_threads();
    const PeakRates peak = compute_peak();
    const bool bf16 = gemm_bf16_supported(), fp16 = gemm_fp16_supported();
    const auto shapes = bench::convnext_gemm_shapes(models::model_options(o.model), o.batch_size, o.image_size);
    const Bf16Kernel prev_kernel = bf16_kernel();
    nlohmann::json rows = nlohmann::json::array();
    if (!o.json)
        std::printf("%-20s %6s %6s %6s  %9s %6s  %9s %9s  %9s %6s  %9s %6s\n", "shape", "M", "N", "K", "fp32_1t",
                    "peak", "fp32_nt", "nt_wall", "bf16_1t", "peak", "fp16_1t", "peak");
    for (const auto& s : shapes) {
        manual_seed(0);
        bench::GemmOperands ops(s);
        set_num_threads(1);
        const bench::GemmRate one = bench::time_gemm(s, ops, 1, o.reps);
        set_num_threads(threads);
        const bench::GemmRate many = bench::time_gemm(s, ops, threads, o.reps);
        auto sixteen_bit = [&](bool supported, Bf16Kernel k) {
            bench::GemmRate r;
            if (!supported) return r;
            set_bf16_kernel(k);
            MatmulPrecisionGuard pg(MatmulPrecision::BFloat16);
            set_num_threads(1);
            r = bench::time_gemm(s, ops, 1, o.reps);
            set_num_threads(threads);
            return r;
        };
        const bench::GemmRate b16 = sixteen_bit(bf16, Bf16Kernel::Always), h16 = sixteen_bit(fp16, Bf16Kernel::Fp16);
        rows.push_back({{"shape", s.name},
                        {"M", s.M},
                        {"N", s.N},
                        {"K", s.K},
                        {"fp32_gflops_cpu_1t", one.cpu_gflops},
                        {"fp32_fraction_of_core_peak", one.cpu_gflops / peak.fp32_core},
                        {"fp32_gflops_cpu_nt", many.cpu_gflops},
                        {"fp32_gflops_wall_nt", many.wall_gflops},
                        {"bf16_gflops_cpu_1t", b16.cpu_gflops},
                        {"bf16_fraction_of_core_peak", peak.bf16_core > 0 ? b16.cpu_gflops / peak.bf16_core : 0.0},
                        {"fp16_gflops_cpu_1t", h16.cpu_gflops},
                        {"fp16_fraction_of_core_peak", peak.fp16_core > 0 ? h16.cpu_gflops / peak.fp16_core : 0.0}});
        if (!o.json)
            std::printf("%-20s %6lld %6lld %6lld  %9.1f %5.0f%%  %9.1f %9.1f  %9.1f %5.0f%%  %9.1f %5.0f%%\n",
                        s.name.c_str(), (long long)s.M, (long long)s.N, (long long)s.K, one.cpu_gflops,
                        100 * one.cpu_gflops / peak.fp32_core, many.cpu_gflops, many.wall_gflops, b16.cpu_gflops,
                        peak.bf16_core > 0 ? 100 * b16.cpu_gflops / peak.bf16_core : 0.0, h16.cpu_gflops,
                        peak.fp16_core > 0 ? 100 * h16.cpu_gflops / peak.fp16_core : 0.0);
    }
    set_bf16_kernel(prev_kernel);
    if (o.json) {
        nlohmann::json j{{"model", o.model},
                         {"batch_size", o.batch_size},
                         {"image_size", o.image_size},
                         {"threads", threads},
                         {"fp32_peak_gflops_per_core", peak.fp32_core},
                         {"bf16_peak_gflops_per_core", peak.bf16_core},
                         {"fp16_peak_gflops_per_core", peak.fp16_core},
                         {"gemm", rows}};
        std::cout << dump_json(j) << "\n";
    } else {
        std::printf("GFLOP per CPU-second (1t: the calling thread; %dt: the process, so per core), best of %d; "
                    "peak: fraction of the one-core peak (fp32 %.1f, bf16 %.1f, fp16 %.1f GFLOP/s)\n",
                    threads, o.reps, peak.fp32_core, peak.bf16_core, peak.fp16_core);
    }
    return 0;
}

std::function<int()> setup_bench(CLI::App& root) {
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
    auto* precision = app::add_precision_option(cmd, o->precision);
    app::add_recompute_option(cmd, o->recompute);
    // The PyTorch peer's spellings: --bf16 (its autocast) and --channels-last (ours is always NHWC).
    cmd->add_flag("--bf16", o->bf16, "Same as --precision bf16 (the PyTorch peer's flag)")->excludes(precision);
    cmd->add_flag("--channels-last", o->channels_last,
                  "Accepted for the PyTorch peer's command line: activations here are always channels-last (NHWC)");
    cmd->add_flag("--json", o->json, "One JSON line");
    cmd->add_flag("--profile", o->profile, "Time per op kind, forward and backward");
    cmd->add_flag("--pack-weights", o->pack_weights,
                  "With --mode infer: pack the weights for the matrix products once and keep them (as predict "
                  "--pack-weights)");
    cmd->add_flag("--peak", o->peak,
                  "Measure this machine's fp32 FMA, bf16 dot-product and fp16 FMA throughput and memory bandwidth, one core "
                  "and all hardware threads (cached per CPU model for fraction_of_peak), then exit");
    cmd->add_flag("--gemm", o->gemm,
                  "Time the model's pointwise-conv GEMMs (forward, dX, dW) at --batch-size/--image-size, fp32 and "
                  "the bf16 and fp16 kernels, in GFLOP per CPU-second, then exit");
    cmd->add_option("--reps", o->reps, "Runs per GEMM shape with --gemm (best is reported)")->capture_default_str();
    return [o]() -> int {
        if (o->peak) return run_peak(*o);
        if (o->threads > 0) set_num_threads(o->threads);
        if (o->gemm) return run_gemm(*o);
        PrecisionGuard precision_scope(o->bf16 ? Precision::BF16 : parse_precision(o->precision));
        RecomputeGuard recompute_scope(parse_recompute(o->recompute));
        // The limit fraction_of_peak compares with: cached per CPU model, or measured now (~0.3 s),
        // before anything is timed.
        bool peak_cached = false;
        const PeakRates peak = compute_peak(&peak_cached);
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
        // --pack-weights (inference): the GEMMs pack the weights once and keep them, as predict and
        // eval do with the same flag.
        std::unique_ptr<PackedWeightsScope> packed;
        if (!train && o->pack_weights) packed = std::make_unique<PackedWeightsScope>(model->parameters());
        auto step = [&] {
            if (train) {
                opt->zero_grad();
                autograd::profile_mark();
                Tensor loss = cross_entropy(model->forward(x), y);
                loss.backward();
                opt->step();
            } else {
                NoGradGuard ng;
                autograd::profile_mark();
                model->forward(x);
            }
        };
        for (int64_t i = 0; i < o->warmup; ++i) step();
        if (o->profile) {
            autograd::profile_reset();
            autograd::set_profiling(true);
        }
        reset_gemm_call_counts();
        reset_saved_stats();
        const double cpu0 = process_cpu_seconds();
        auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < o->steps; ++i) step();
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / std::max<int64_t>(1, o->steps);
        const double cpu_step = (process_cpu_seconds() - cpu0) / std::max<int64_t>(1, o->steps);
        const GemmCallCounts calls = gemm_call_counts();
        const SavedStats saved = saved_stats();
        autograd::set_profiling(false);
        const char* coretype = std::getenv("OPENBLAS_CORETYPE");
        // Conv + linear FLOPs of the step (a training step: forward, and backward's two GEMMs per
        // layer, 3x), over the fp32 FMA limit of the threads used.
        const double step_flops = 2.0 * (double)model->macs(o->image_size) * (double)o->batch_size * (train ? 3 : 1);
        const double gflops = step_flops / dt / 1e9;
        const int threads = get_num_threads();
        const double peak_gflops = peak.fp32_all / peak.threads * std::min(threads, cpu_info().hardware_threads);
        // A bf16 run's arithmetic limit is the bf16 dot-product rate, or the fp16 FMA rate where
        // the fp16 kernel runs; fraction_of_peak stays against the fp32 one (the contract),
        // so the others are given besides.
        const double used = std::min(threads, cpu_info().hardware_threads);
        const double bf16_peak_gflops = peak.bf16_all / peak.threads * used;
        const double bf16_fraction = bf16_peak_gflops > 0 ? gflops / bf16_peak_gflops : 0.0;
        const double fp16_peak_gflops = peak.fp16_all / peak.threads * used;
        const double fp16_fraction = fp16_peak_gflops > 0 ? gflops / fp16_peak_gflops : 0.0;
        nlohmann::json j{{"peer", "convnext.cpp"},
                         {"model", o->model},
                         {"mode", o->mode},
                         {"batch_size", o->batch_size},
                         {"image_size", o->image_size},
                         {"img_per_s", o->batch_size / dt},
                         {"step_s", dt},
                         {"peak_rss_mb", peak_rss_mb()},
                         {"peak_tensor_mb", allocator::peak_live_bytes() / 1048576.0},
                         {"peak_reserved_mb", allocator::peak_reserved_bytes() / 1048576.0},
                         {"packed_weights_mb", packed_weights_stats().bytes / 1048576.0},
                         {"threads", get_num_threads()},
                         {"openblas_coretype", coretype ? coretype : ""},
                         {"gflops", gflops},
                         {"fraction_of_peak", gflops / peak_gflops},
                         {"peak_gflops", peak_gflops},
                         {"bf16_peak_gflops", bf16_peak_gflops > 0 ? nlohmann::json(bf16_peak_gflops) : nlohmann::json()},
                         {"fraction_of_bf16_peak", bf16_peak_gflops > 0 ? nlohmann::json(bf16_fraction) : nlohmann::json()},
                         {"fp16_peak_gflops", fp16_peak_gflops > 0 ? nlohmann::json(fp16_peak_gflops) : nlohmann::json()},
                         {"fraction_of_fp16_peak", fp16_peak_gflops > 0 ? nlohmann::json(fp16_fraction) : nlohmann::json()},
                         {"peak_source", peak_cached ? "cache" : "measured"},
                         {"cpu", cpu_info().model_name},
                         {"gemm_backend", gemm_backend_name()},
                         {"matmul_precision", gemm_precision_name()},
                         {"precision", precision_name(cnx::precision())},
                         {"bf16", cnx::precision() == Precision::BF16},
                         {"channels_last", true},
                         {"gemm_kernels", gemm_kernels_name(calls)},
                         {"bf16_gemm_calls", calls.bf16},
                         {"fp16_gemm_calls", calls.fp16},
                         {"fp32_gemm_calls", calls.fp32 + calls.openblas},
                         {"saved_activations", path_name(saved.bf16_tensors, saved.kept_tensors, "fp32")},
                         {"saved_mb_per_step", (saved.bf16_bytes + saved.kept_bytes) / 1048576.0 /
                                                   std::max<int64_t>(1, o->steps)},
                         {"recompute", recomputes_cheap() ? "cheap" : "none"},
                         {"recomputed_mb_per_step", saved.recomputed_bytes / 1048576.0 / std::max<int64_t>(1, o->steps)},
                         {"cpu_s_per_step", cpu_step}};
        std::string bf16_share;
        if (calls.bf16 > 0 && bf16_peak_gflops > 0)
            bf16_share = ", " + std::to_string((int)std::lround(100 * bf16_fraction)) + "% of the bf16 limit";
        else if (calls.fp16 > 0 && fp16_peak_gflops > 0)
            bf16_share = ", " + std::to_string((int)std::lround(100 * fp16_fraction)) + "% of the fp16 limit";
        if (o->json)
            std::cout << dump_json(j) << "\n";
        else
            std::printf("%s %s batch %lld at %lld, %s: %.2f img/s, %.3f s/step (%.3f CPU-s), peak RSS %.0f MB, %d "
                        "threads, %.1f GFLOP/s = %.0f%% of the fp32 limit (%.1f GFLOP/s, %s)%s; GEMMs %s, saved "
                        "activations %s%s\n",
                        o->model.c_str(), o->mode.c_str(), (long long)o->batch_size, (long long)o->image_size,
                        j.at("precision").get<std::string>().c_str(), o->batch_size / dt, dt, cpu_step, peak_rss_mb(),
                        get_num_threads(), gflops, 100 * gflops / peak_gflops, peak_gflops,
                        peak_cached ? "cached" : "measured now", bf16_share.c_str(),
                        j.at("gemm_kernels").get<std::string>().c_str(),
                        j.at("saved_activations").get<std::string>().c_str(),
                        saved.recomputed_tensors > 0 ? " (layer-norm and depthwise-conv outputs recomputed)" : "");
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
            std::fprintf(o->json ? stderr : stdout, "profiled ops: %.1f ms of %.1f ms per step (rest: %s)\n",
                         1e3 * total / o->steps, 1e3 * dt,
                         train ? "optimiser, gradient accumulation, engine" : "outside the ops");
        }
        return 0;
    };
}

}  // namespace

CONVNEXT_COMMAND(bench, setup_bench)
