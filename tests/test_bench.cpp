// The machine's limits and the benchmark command: CPU identification, the peak measurements and
// their per-CPU cache file, and `convnext bench` (--peak, --gemm, and the peer benchmark's JSON
// with gflops / fraction_of_peak added). Timing is never asserted, only that figures are there,
// positive and consistent.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_util.h"
#include "core/cpu_info.h"
#include "core/cpu_peak.h"
#include "core/json.h"
#include "ops/gemm.h"

using namespace cnx;
using nlohmann::json;

namespace {

// The last line of the output that parses as a JSON object.
json last_json(const std::string& out) {
    json j;
    size_t pos = 0;
    while (pos < out.size()) {
        size_t end = out.find('\n', pos);
        if (end == std::string::npos) end = out.size();
        const std::string line = out.substr(pos, end - pos);
        if (!line.empty() && line[0] == '{') j = parse_json_or_discarded(line);
        pos = end + 1;
    }
    return j;
}

// Runs a command line that must succeed and print a JSON object; returns that object.
json json_of_command(const std::string& command) {
    auto run = cli_test::shell(command, false);
    INFO(run.output);
    REQUIRE(run.code == 0);
    json j = last_json(run.output);
    REQUIRE(j.is_object());
    return j;
}

}  // namespace

TEST_CASE("cpu_info names the CPU and sizes its caches", "[bench]") {
    const CpuInfo& ci = cpu_info();
    REQUIRE(!ci.model_name.empty());
    REQUIRE(ci.l1d_bytes >= 8 * 1024);
    REQUIRE(ci.l2_bytes >= ci.l1d_bytes);
    REQUIRE(ci.hardware_threads >= 1);
    REQUIRE((!ci.avx512_bf16 || ci.avx512));
    const std::string key = ci.key();
    REQUIRE(key.find('/') == std::string::npos);
    REQUIRE(key.find(' ') == std::string::npos);
    REQUIRE(ci.summary().find(ci.model_name) != std::string::npos);
    const double t0 = thread_cpu_seconds();
    volatile double s = 0;
    for (int i = 0; i < 2000000; ++i) s = s + i;
    REQUIRE(thread_cpu_seconds() > t0);
}

TEST_CASE("measure_peak: positive FMA rates, bf16 exactly where the CPU has it", "[bench]") {
    const PeakRates r = measure_peak(true, false, 2);
    REQUIRE(r.threads == 2);
    REQUIRE(r.fp32_core > 0);
    REQUIRE(r.fp32_all > 0);
    REQUIRE(!r.fp32_kind.empty());
    REQUIRE((r.bf16_core > 0) == cpu_info().avx512_bf16);
    REQUIRE(r.mem_core == 0);  // not asked for
}

TEST_CASE("convnext bench: --peak caches per CPU, the model bench reports gflops and fraction_of_peak",
          "[bench][cli]") {
    const auto dir = cli_test::temp_dir("bench");
    const std::string env = "XDG_CACHE_HOME=" + dir.string() + " ";
    const json p = json_of_command(env + CONVNEXT_CLI + " bench --peak --json");
    for (const char* k : {"fp32_gflops_per_core", "fp32_gflops_all", "mem_gbs_per_core", "mem_gbs_all"})
        REQUIRE(p.at(k).get<double>() > 0);
    REQUIRE(p.at("fp32_gflops_all").get<double>() >= p.at("fp32_gflops_per_core").get<double>() * 0.5);
    REQUIRE(p.at("threads").get<int>() == cpu_info().hardware_threads);
    const std::string file = p.at("cache_file").get<std::string>();
    REQUIRE(file.rfind(dir.string(), 0) == 0);
    REQUIRE(std::ifstream(file).good());

    const json j = json_of_command(env + CONVNEXT_CLI +
                                   " bench --model convnext_atto --batch-size 2 --image-size 32 --num-classes 10 "
                                   "--mode train --steps 1 --warmup 0 --threads 1 --json");
    // the peer benchmark's fields, unchanged
    for (const char* k : {"peer", "model", "mode", "batch_size", "image_size", "img_per_s", "step_s", "peak_rss_mb",
                          "threads", "openblas_coretype"})
        REQUIRE(j.contains(k));
    REQUIRE(j.at("peer") == "convnext.cpp");
    // and the added ones: one thread's share of the cached all-core limit
    REQUIRE(j.at("peak_source") == "cache");
    const double gflops = j.at("gflops").get<double>(), frac = j.at("fraction_of_peak").get<double>();
    REQUIRE(gflops > 0);
    REQUIRE(frac > 0);
    REQUIRE(j.at("peak_gflops").get<double>() ==
            Approx(p.at("fp32_gflops_all").get<double>() / p.at("threads").get<int>()));
    REQUIRE(gflops / frac == Approx(j.at("peak_gflops").get<double>()));
    // the bf16 limit beside it (null where the CPU has no bf16 dot product)
    if (p.at("bf16_gflops_all").get<double>() > 0) {
        REQUIRE(j.at("bf16_peak_gflops").get<double>() ==
                Approx(p.at("bf16_gflops_all").get<double>() / p.at("threads").get<int>()));
        REQUIRE(gflops / j.at("fraction_of_bf16_peak").get<double>() == Approx(j.at("bf16_peak_gflops").get<double>()));
    } else {
        REQUIRE(j.at("bf16_peak_gflops").is_null());
        REQUIRE(j.at("fraction_of_bf16_peak").is_null());
    }
    // what the allocator held: at least the live tensors, at most the whole process
    REQUIRE(j.at("peak_reserved_mb").get<double>() >= j.at("peak_tensor_mb").get<double>());
    REQUIRE(j.at("peak_reserved_mb").get<double>() <= j.at("peak_rss_mb").get<double>());
    REQUIRE(j.at("matmul_precision") == "fp32");
    std::filesystem::remove_all(dir);
}

TEST_CASE("convnext bench --gemm: every pointwise GEMM of the model, fp32 and bf16", "[bench][cli]") {
    const json j = json_of_command(std::string("CNX_PEAK_CACHE=off ") + CONVNEXT_CLI +
                                   " bench --gemm --model convnext_atto --batch-size 2 --image-size 32 --threads 2 "
                                   "--reps 1 --json");
    const auto& rows = j.at("gemm");
    REQUIRE(rows.size() == 24);  // 4 stages x (2 forward, 2 dX, 2 dW)
    for (const auto& r : rows) {
        INFO(dump_json(r));
        REQUIRE(r.at("fp32_gflops_cpu_1t").get<double>() > 0);
        REQUIRE(r.at("fp32_gflops_cpu_nt").get<double>() > 0);
        REQUIRE((r.at("bf16_gflops_cpu_1t").get<double>() > 0) == gemm_bf16_supported());
    }
    REQUIRE(rows[0].at("shape") == "stage0/pw1_fwd_NT");
    REQUIRE(rows[0].at("M").get<int64_t>() == 2 * 8 * 8);  // 32 px / 4 = 8 x 8 pixels per image
}

TEST_CASE("convnext bench --profile: per-op times in training and in inference", "[bench][cli]") {
    const std::string common = " bench --model convnext_atto --batch-size 2 --image-size 32 --num-classes 10 "
                               "--steps 1 --warmup 0 --threads 1 --profile";
    for (const char* mode : {"train", "infer"}) {
        INFO(mode);
        const cli_test::RunResult r = cli_test::run(common + " --mode " + mode);
        REQUIRE(r.code == 0);
        // inference ops record nothing for backward; they are timed all the same
        for (const char* op : {"convnext_mlp", "depthwise_conv2d", "layer_norm", "conv2d", "linear"})
            CHECK(r.output.find(std::string("\n") + op + " ") != std::string::npos);
        CHECK(r.output.find("profiled ops: 0.0 ms") == std::string::npos);
    }
}
