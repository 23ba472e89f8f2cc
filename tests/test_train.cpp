// The training and evaluation CLI end to end: step-for-step equality with PyTorch on a tiny
// image folder, learning, resume, bad images, divergence, eval's report.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <cstring>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "cli_util.h"
#include "core/json.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace cli_test;

namespace {

// Every tensor of two checkpoints (weights, optimiser moments, EMA) bit for bit.
void require_same_checkpoint_tensors(const fs::path& x, const fs::path& y) {
    auto a = cnx::io::load_safetensors(x.string());
    auto b = cnx::io::load_safetensors(y.string());
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
        INFO(a.tensors[i].first);
        REQUIRE(a.tensors[i].first == b.tensors[i].first);
        CHECK(std::memcmp(a.tensors[i].second.raw_data(), b.tensors[i].second.raw_data(), a.tensors[i].second.nbytes()) == 0);
    }
}

}  // namespace

// `convnext train` with the classic recipe's settings (batch 4, 2 epochs, lr 2e-3, wd 0.05, no
// warmup, augmentation, shuffling or validation split) from `init`, each step's loss and lr
// against PyTorch's (`ref`, tools/gen_train_fixture.py) within 1e-4 relative. Returns the run's folder.
fs::path train_like_pytorch(const std::string& model_args, const std::string& init, const json& ref,
                            const std::string& name) {
    fs::path out = temp_dir(name);
    auto r = run("train --data " + fixture("train_folder") + " " + model_args + "--weights " + init +
                 " --batch-size 4 --epochs 2 --lr 2e-3 --wd 0.05 --warmup-epochs 0 --no-augment --no-shuffle"
                 " --val-rate 0 --workers 1 --threads 1 --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    std::vector<json> steps;
    for (auto& rec : read_jsonl(out / "metrics.jsonl"))
        if (rec.contains("step")) steps.push_back(rec);
    REQUIRE(steps.size() == ref["losses"].size());
    for (size_t i = 0; i < steps.size(); ++i) {
        double loss = steps[i]["loss"], want = ref["losses"][i];
        double lr = steps[i]["lr"], want_lr = ref["lrs"][i];
        INFO("step " << i << ": loss " << loss << " vs " << want << ", lr " << lr << " vs " << want_lr);
        CHECK(std::fabs(loss - want) <= 1e-4 * std::fabs(want));
        CHECK(std::fabs(lr - want_lr) <= 1e-4 * want_lr);
    }
    return out;
}

TEST_CASE("train: 12 AdamW steps equal PyTorch's losses, learning rates and final weights") {
    std::ifstream rf(fixture("train_reference.json"));
    json ref = cnx::parse_json(rf);
    fs::path out = train_like_pytorch(kMicro, fixture("train_init.safetensors"), ref, "torch");
    auto ours = cnx::io::load_safetensors((out / "checkpoint.safetensors").string());
    auto theirs = cnx::io::load_safetensors(fixture("train_final.safetensors"));
    for (auto& [name, t] : theirs.tensors) {
        cnx::Tensor mine = ours.get("model." + name);
        REQUIRE(mine.numel() == t.numel());
        const float* a = mine.data<float>();
        const float* b = t.data<float>();
        double scale = 0, diff = 0;
        for (int64_t i = 0; i < t.numel(); ++i) scale = std::max(scale, (double)std::fabs(b[i]));
        for (int64_t i = 0; i < t.numel(); ++i) diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
        INFO(name << ": max diff " << diff << " at scale " << scale);
        CHECK(diff <= 1e-4 * std::max(1.0, scale));
    }
}

TEST_CASE("train: 12 AdamW steps of convnextv2_atto equal PyTorch's losses and learning rates") {
    // tools/gen_train_fixture.py --family convnext_v2: a micro V2 (depths 1,1,1,1, dims 8,16,24,32)
    // with random GRN parameters; GRN's 4-D gamma and beta are not weight-decayed (the V2 rule).
    std::ifstream rf(fixture("v2/train_reference.json"));
    json ref = cnx::parse_json(rf);
    fs::path out = train_like_pytorch("--model convnextv2_atto --depths 1,1,1,1 --dims 8,16,24,32 --image-size 32 "
                                      "--crop-pct 1 ",
                                      fixture("v2/train_init.safetensors"), ref, "torch_v2");
    fs::remove_all(out);
}

// Trains the micro model on the tiny folder into a fresh temporary folder `out` (named `name`);
// the run must succeed.
static RunResult train_tiny_folder(const std::string& name, const std::string& args, fs::path& out) {
    out = temp_dir(name);
    auto r = run("train --data " + fixture("train_folder") + " " + kMicro + args + " --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    return r;
}

TEST_CASE("train: a micro ConvNeXt learns the tiny folder, writes its outputs, and eval reports it") {
    fs::path out;
    auto r = train_tiny_folder("learn", "--batch-size 4 --epochs 20 --lr 3e-3 --no-augment --val-rate 0.25 --seed 3", out);
    for (auto f : {"class_indices.json", "metrics.jsonl", "best.safetensors", "checkpoint.safetensors", "curves.png"})
        CHECK(fs::exists(out / f));
    CHECK(read_bytes(out / "class_indices.json") == "{\n    \"0\": \"circles\",\n    \"1\": \"squares\",\n    \"2\": \"stripes\"\n}");
    auto recs = read_jsonl(out / "metrics.jsonl");
    json last_epoch;
    for (auto& rec : recs)
        if (rec.contains("train_acc")) last_epoch = rec;
    REQUIRE(!last_epoch.is_null());
    CHECK(last_epoch["train_acc"].get<double>() >= 0.95);
    CHECK(last_epoch["val_acc"].get<double>() >= 0.6);

    auto e = run("eval " + kMicro + "--weights " + (out / "best.safetensors").string() + " --data " +
                 fixture("train_folder") + " --json");
    INFO(e.output);
    REQUIRE(e.code == 0);
    json j = cnx::parse_json(e.output.substr(e.output.find('{')));
    CHECK(j["top1_acc"].get<double>() >= 0.8);
    CHECK(j["top5_acc"].get<double>() == 1.0);
    CHECK(j["confusion"].size() == 3);
    CHECK(j["per_class_acc"].contains("stripes"));
}

TEST_CASE("train: --resume continues bit-identically to an uninterrupted run") {
    std::string common = "train --data " + fixture("train_folder") + " " + kMicro +
                         "--batch-size 4 --lr 2e-3 --val-rate 0.25 --drop-path 0.1 --seed 5 --workers 2 ";
    fs::path full = temp_dir("full"), part = temp_dir("part");
    REQUIRE(run(common + "--epochs 3 --out " + full.string()).code == 0);
    REQUIRE(run(common + "--epochs 3 --out " + part.string() + " --stop-after-epochs 1").code == 0);
    auto r = run(common + "--epochs 3 --out " + part.string() + " --resume");
    INFO(r.output);
    REQUIRE(r.code == 0);
    require_same_checkpoint_tensors(full / "checkpoint.safetensors", part / "checkpoint.safetensors");
}

TEST_CASE("train: --freeze-layers from --weights trains the head only, as the classic script") {
    std::string common = "train --data " + fixture("train_folder") + " " + kMicro +
                         "--batch-size 4 --lr 2e-3 --warmup-epochs 0 --val-rate 0.25 --seed 4 --epochs 1 ";
    fs::path base = temp_dir("freeze_base"), tuned = temp_dir("freeze_tuned");
    REQUIRE(run(common + "--out " + base.string()).code == 0);
    auto r = run(common + "--weights " + (base / "best.safetensors").string() + " --freeze-layers --out " +
                 tuned.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("(195 trainable)") != std::string::npos);  // head: 64 x 3 + 3
    auto start = cnx::io::load_safetensors((base / "best.safetensors").string());
    auto end = cnx::io::load_safetensors((tuned / "checkpoint.safetensors").string());
    int heads_changed = 0;
    for (auto& [name, t] : start.tensors) {
        INFO(name);
        const cnx::Tensor* after = nullptr;
        for (auto& [n2, t2] : end.tensors)
            if (n2 == "model." + name) after = &t2;
        REQUIRE(after != nullptr);
        const bool same = std::memcmp(t.raw_data(), after->raw_data(), t.nbytes()) == 0;
        if (name.rfind("head.", 0) == 0)
            heads_changed += !same;
        else
            CHECK(same);
    }
    CHECK(heads_changed == 2);
}

TEST_CASE("train: a corrupt image is a named error, or skipped with --skip-bad-images") {
    fs::path data = temp_dir("bad_data");
    fs::copy(fixture("train_folder"), data, fs::copy_options::recursive);
    { std::ofstream(data / "circles" / "broken.jpg") << "this is not a jpeg"; }
    { std::ofstream(data / "squares" / "notes.txt") << "stray file"; }
    fs::path out = temp_dir("bad_out");
    std::string args = "train --data " + data.string() + " " + kMicro + "--batch-size 4 --epochs 1 --warmup-epochs 0 --val-rate 0 --out " +
                       out.string();
    auto r = run(args);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("error:") != std::string::npos);
    CHECK(r.output.find("broken.jpg") != std::string::npos);
    auto s = run(args + " --skip-bad-images");
    INFO(s.output);
    CHECK(s.code == 0);
    CHECK(s.output.find("broken.jpg") != std::string::npos);
}

TEST_CASE("train: divergence stops with an error naming epoch and step, the checkpoint intact") {
    fs::path out = temp_dir("diverge");
    auto r = run("train --data " + fixture("train_folder") + " " + kMicro +
                 "--batch-size 4 --epochs 2 --lr 1e30 --warmup-epochs 0 --val-rate 0 --checkpoint-every 1 --out " +
                 out.string());
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("non-finite") != std::string::npos);
    CHECK(r.output.find("epoch 1 step") != std::string::npos);
    REQUIRE(fs::exists(out / "checkpoint.safetensors"));
    auto ck = cnx::io::load_safetensors((out / "checkpoint.safetensors").string());
    CHECK(std::stoll(ck.metadata.at("global_step")) >= 1);
}

TEST_CASE("train: killed with SIGKILL at random moments and resumed, ends bit-identical") {
    std::string common = "train --data " + fixture("train_folder") + " " + kMicro +
                         "--batch-size 4 --epochs 40 --lr 2e-3 --val-rate 0.25 --drop-path 0.1 --seed 9 --workers 2 "
                         "--checkpoint-every 1 --show-predictions 0 ";
    fs::path full = temp_dir("kill_full"), part = temp_dir("kill_part");
    REQUIRE(run(common + "--out " + full.string()).code == 0);
    std::mt19937 rng(12345);
    int kills = 0;
    for (int attempt = 0; attempt < 40 && kills < 4; ++attempt) {
        bool resume = fs::exists(part / "checkpoint.safetensors");
        pid_t pid = start(common + "--out " + part.string() + (resume ? " --resume" : ""), part / "log.txt");
        std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 300));
        bool killed = kill(pid, SIGKILL) == 0;
        int status = 0;
        waitpid(pid, &status, 0);
        if (killed && WIFSIGNALED(status)) ++kills;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) break;  // it finished before the kill
    }
    INFO("killed " << kills << " times");
    CHECK(kills >= 1);
    bool resume = fs::exists(part / "checkpoint.safetensors");
    auto r = run(common + "--out " + part.string() + (resume ? " --resume" : ""));
    INFO(r.output);
    REQUIRE(r.code == 0);
    require_same_checkpoint_tensors(full / "checkpoint.safetensors", part / "checkpoint.safetensors");
    std::vector<double> la, lb;
    for (auto& rec : read_jsonl(full / "metrics.jsonl"))
        if (rec.contains("step")) la.push_back(rec["loss"]);
    for (auto& rec : read_jsonl(part / "metrics.jsonl"))
        if (rec.contains("step")) lb.push_back(rec["loss"]);
    CHECK(la == lb);
}

TEST_CASE("train: an output folder holding a run is not overwritten by accident") {
    fs::path out = temp_dir("guard");
    std::string args = "train --data " + fixture("train_folder") + " " + kMicro +
                       "--batch-size 4 --epochs 1 --warmup-epochs 0 --val-rate 0 --show-predictions 0 --out " + out.string();
    REQUIRE(run(args).code == 0);
    std::string before = read_bytes(out / "checkpoint.safetensors");
    auto r = run(args);
    CHECK(r.code == 1);
    CHECK(r.output.find("--resume") != std::string::npos);
    CHECK(read_bytes(out / "checkpoint.safetensors") == before);
    CHECK(run(args + " --overwrite").code == 0);
}

TEST_CASE("train: an unwritable --out is refused before training") {
    fs::path blocker = temp_dir("blocker") / "a_file";
    { std::ofstream(blocker) << "x"; }
    auto r = run("train --data " + fixture("train_folder") + " " + kMicro + "--epochs 1 --out " + (blocker / "sub").string());
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("cannot be created") != std::string::npos);
}

TEST_CASE("train and eval: usage and input errors are clean") {
    CHECK(run("train --data /nonexistent/folder --model convnext_atto").code == 1);
    CHECK(run("train --dataset imagenet --model convnext_atto").code == 1);
    CHECK(run("train --epochs -3").code == 2);
    auto r = run("eval --model convnext_atto --weights /nonexistent.safetensors --data " + fixture("train_folder"));
    CHECK(r.code == 1);
    CHECK(r.output.find("nonexistent.safetensors") != std::string::npos);
}

TEST_CASE("train: --epochs 1 with the default --warmup-epochs 1 warms up over the whole run, as the classic script") {
    fs::path out;
    auto r = train_tiny_folder("one_epoch", "--batch-size 4 --epochs 1 --lr 1e-3 --val-rate 0 --show-predictions 0", out);
    CHECK(r.output.find("1 epochs, lr 0.001, wd 0.05, warmup 1 epoch(s)") != std::string::npos);
    std::vector<double> lrs;
    for (auto& rec : read_jsonl(out / "metrics.jsonl"))
        if (rec.contains("step")) lrs.push_back(rec["lr"]);
    REQUIRE(lrs.size() == 6);  // 24 images in batches of 4
    for (size_t i = 0; i < lrs.size(); ++i) {
        const double a = i / 6.0;  // create_lr_scheduler's warmup factor, never reaching the cosine
        CHECK(lrs[i] == Approx(1e-3 * (1e-3 * (1 - a) + a)).epsilon(1e-12));
    }
    CHECK(fs::exists(out / "best.safetensors"));
}
