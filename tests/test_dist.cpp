// Data parallelism: DistributedSampler sharding in the loader (in process), the MPI collectives
// (this binary re-run under mpirun, one hidden test case per rank), and `convnext train` under
// `mpirun -np 2`: the same weights as one process at twice the batch, sharded validation,
// bit-identical resume, and an error on one rank ending the job instead of hanging it.
#include <catch2/catch.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_util.h"
#include "core/autograd.h"
#include "ops/ops.h"
#include "data/loader.h"
#include "dist/dist.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace cnx;
using namespace cli_test;

namespace {

// The mpirun prefix, or "" (with a warning) when this machine cannot run the MPI tests.
std::string mpirun(int ranks) {
    if (!dist::compiled_with_mpi()) {
        WARN("convnext was built without MPI (CONVNEXT_MPI=OFF or no MPI library found): MPI test skipped");
        return "";
    }
    if (shell("command -v mpirun").code != 0) {
        WARN("mpirun not found (apt-get install openmpi-bin libopenmpi-dev): MPI test skipped");
        return "";
    }
    // A guard against a hang: a test that waits forever is worse than one that fails.
    // Open MPI's own allocations outlive MPI_Finalize; under a sanitizer build LeakSanitizer would
    // blame them on the CLI (our code's leaks are still caught by the plain-launch tests).
    return "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 timeout 300 mpirun -np " + std::to_string(ranks) + " --oversubscribe" +
           (geteuid() == 0 ? " --allow-run-as-root" : "") + " ";
}

RunResult cli(const std::string& args) { return run(args); }

std::vector<json> step_records(const fs::path& out) {
    std::vector<json> r;
    for (auto& rec : read_jsonl(out / "metrics.jsonl"))
        if (rec.contains("step")) r.push_back(rec);
    return r;
}

// Samples whose label is their index; `bad` indices throw BadImageError.
struct IndexDataset : data::Dataset {
    int64_t n;
    std::set<int64_t> bad;
    explicit IndexDataset(int64_t n_, std::set<int64_t> b = {}) : n(n_), bad(std::move(b)) {}
    int64_t size() const override { return n; }
    data::Sample get(int64_t i, Generator&) const override {
        if (bad.count(i)) throw data::BadImageError("sample " + std::to_string(i) + " is bad");
        return {zeros({2, 2, 1}), i};
    }
    std::string describe(int64_t i) const override { return "sample " + std::to_string(i); }
};

std::vector<std::vector<int64_t>> epoch_batches(std::shared_ptr<data::Dataset> ds, data::LoaderOptions lo,
                                                int64_t epoch) {
    lo.log = nullptr;
    data::DataLoader loader(ds, lo);
    loader.start_epoch(epoch);
    std::vector<std::vector<int64_t>> out;
    data::Batch b;
    while (loader.next(b)) out.push_back(b.labels);
    CHECK((int64_t)out.size() == loader.batches_per_epoch());
    return out;
}

}  // namespace

TEST_CASE("dist: shard positions follow DistributedSampler (padding repeats the first positions)") {
    // 10 samples over 3 ranks: padded to 12, rank r takes r, r+3, r+6, r+9 (10 and 11 wrap to 0, 1).
    CHECK(data::shard_positions(10, 3, 0, true) == std::vector<int64_t>{0, 3, 6, 9});
    CHECK(data::shard_positions(10, 3, 1, true) == std::vector<int64_t>{1, 4, 7, 0});
    CHECK(data::shard_positions(10, 3, 2, true) == std::vector<int64_t>{2, 5, 8, 1});
    // Unpadded (evaluation): disjoint, every position once.
    CHECK(data::shard_positions(10, 3, 0, false) == std::vector<int64_t>{0, 3, 6, 9});
    CHECK(data::shard_positions(10, 3, 1, false) == std::vector<int64_t>{1, 4, 7});
    CHECK(data::shard_positions(10, 3, 2, false) == std::vector<int64_t>{2, 5, 8});
    // More ranks than samples: padding repeats the order more than once.
    CHECK(data::shard_positions(2, 5, 4, true) == std::vector<int64_t>{0});
    CHECK(data::shard_positions(2, 5, 4, false).empty());
    CHECK(data::shard_positions(7, 1, 0, true) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
    CHECK_THROWS_WITH(data::shard_positions(7, 2, 2, true), Catch::Contains("rank 2 of 2"));
}

TEST_CASE("dist: the ranks' batch j together are the single process's batch j at K times the size") {
    auto ds = std::make_shared<IndexDataset>(37);
    for (bool shuffle : {false, true})
        for (int k : {2, 3}) {
            INFO("shuffle " << shuffle << ", " << k << " ranks");
            data::LoaderOptions single;
            single.batch_size = 4 * k, single.shuffle = shuffle, single.drop_last = true, single.seed = 7;
            single.num_workers = 0;
            auto whole = epoch_batches(ds, single, 3);
            std::vector<std::vector<std::vector<int64_t>>> per_rank;
            for (int r = 0; r < k; ++r) {
                data::LoaderOptions lo = single;
                lo.batch_size = 4, lo.num_replicas = k, lo.rank = r, lo.num_workers = r % 2 ? 2 : 0;
                per_rank.push_back(epoch_batches(ds, lo, 3));
                // ceil(37 / k) samples each, so every rank takes the same number of steps.
                CHECK(per_rank[r].size() == (size_t)((37 + k - 1) / k / 4));
            }
            for (size_t j = 0; j < whole.size(); ++j) {
                std::vector<int64_t> merged;
                for (int r = 0; r < k; ++r) {
                    REQUIRE(per_rank[r][j].size() == 4);
                    for (size_t i = 0; i < 4; ++i) {
                        // Rank r's i-th sample of batch j sits at position j*K*b + r + K*i.
                        CHECK(per_rank[r][j][i] == whole[j][r + k * i]);
                        merged.push_back(per_rank[r][j][i]);
                    }
                }
                std::sort(merged.begin(), merged.end());
                std::vector<int64_t> want = whole[j];
                std::sort(want.begin(), want.end());
                CHECK(merged == want);
            }
        }
}

TEST_CASE("dist: one replica is the plain loader, and unpadded shards count each sample once") {
    auto ds = std::make_shared<IndexDataset>(23);
    data::LoaderOptions lo;
    lo.batch_size = 5, lo.seed = 3, lo.num_workers = 1;
    data::LoaderOptions one = lo;
    one.num_replicas = 1, one.rank = 0;
    CHECK(epoch_batches(ds, lo, 1) == epoch_batches(ds, one, 1));
    std::multiset<int64_t> seen;
    for (int r = 0; r < 4; ++r) {
        data::LoaderOptions ev = lo;
        ev.shuffle = false, ev.num_replicas = 4, ev.rank = r, ev.pad_shards = false;
        for (auto& b : epoch_batches(ds, ev, 0)) seen.insert(b.begin(), b.end());
    }
    CHECK(seen.size() == 23);
    CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 23);
}

TEST_CASE("dist: with keep_empty_batches a batch of skipped images still counts as a step") {
    auto ds = std::make_shared<IndexDataset>(8, std::set<int64_t>{2, 3});
    std::ostringstream warnings;
    data::LoaderOptions lo;
    lo.batch_size = 2, lo.shuffle = false, lo.skip_bad_images = true, lo.num_workers = 0, lo.log = &warnings;
    data::DataLoader plain(ds, lo);
    lo.keep_empty_batches = true;
    data::DataLoader kept(ds, lo);
    std::vector<int64_t> sizes_plain, sizes_kept;
    data::Batch b;
    while (plain.next(b)) sizes_plain.push_back(b.size());
    while (kept.next(b)) sizes_kept.push_back(b.size());
    CHECK(sizes_plain == std::vector<int64_t>{2, 2, 2});
    CHECK(sizes_kept == std::vector<int64_t>{2, 0, 2, 2});
}

// Run by the next test case under mpirun, once per rank; hidden from a plain test run.
TEST_CASE("dist worker: collectives on every rank", "[.mpi_worker]") {
    dist::init(nullptr, nullptr);
    REQUIRE(dist::initialized());
    const int rank = dist::rank(), k = dist::world_size();
    REQUIRE(k == 3);

    // broadcast: rank 0's values everywhere, whatever the others held.
    NamedTensors t{{"a", full({3, 5}, 10.0 + rank)}, {"b", full({7}, -1.0 * rank, DType::F64)}};
    dist::broadcast(t);
    CHECK(t[0].second.to_vector() == std::vector<double>(15, 10.0));
    CHECK(t[1].second.to_vector() == std::vector<double>(7, 0.0));
    // A rank with another layout: every rank fails (none waits for data that never comes).
    NamedTensors odd{{"a", zeros({rank == 1 ? 4 : 3})}};
    CHECK_THROWS_WITH(dist::broadcast(odd), Catch::Contains("differ") || Catch::Contains("holds"));

    CHECK(dist::broadcast_bytes(rank == 0 ? "from root" : "x") == "from root");
    auto names = dist::allgather_strings(std::string(rank + 1, 'a' + rank));
    CHECK(names == std::vector<std::string>{"a", "bb", "ccc"});
    double d[2] = {0.5 * rank, 1.0};
    dist::allreduce_sum(d, 2);
    CHECK(d[0] == 1.5);
    CHECK(d[1] == 3.0);
    int64_t c[1] = {rank + 1};
    dist::allreduce_sum(c, 1);
    CHECK(c[0] == 6);

    // Gradient averaging over buckets of 64 bytes: parameters split across buckets, a float64
    // one, one whose gradient only rank 2 has, and one with no gradient anywhere.
    std::vector<Tensor> params{zeros({37}), zeros({3, 4}, DType::F64), zeros({50}), zeros({5}), zeros({9})};
    for (auto& p : params) p.requires_grad_(true);
    auto grad_value = [](int r, size_t p, int64_t i) { return (double)(r + 1) * (i + 1) + 0.25 * p; };
    for (size_t p = 0; p < params.size(); ++p) {
        if (p == 4 || (p == 3 && rank != 2)) continue;
        Tensor g = zeros(params[p].shape(), params[p].dtype());
        std::vector<double> v;
        for (int64_t i = 0; i < g.numel(); ++i) v.push_back(grad_value(rank, p, i));
        params[p].set_grad(from_vector(v, params[p].shape(), params[p].dtype()));
    }
    auto stats = dist::allreduce_mean_grads(params, 64);
    // 16 floats or 8 doubles a bucket, from the last parameter back: 9 + 5 + 50 floats -> 4 buckets,
    // 12 doubles -> 8+4, 37 floats -> 16+16+5 (a dtype change starts a new bucket).
    CHECK(stats.buckets == 4 + 2 + 3);
    CHECK(stats.started_in_backward == 0);
    for (size_t p = 0; p < 4; ++p) {
        INFO("parameter " << p);
        REQUIRE(params[p].grad().defined());
        auto got = params[p].grad().to_vector();
        for (int64_t i = 0; i < (int64_t)got.size(); ++i) {
            double want = p == 3 ? grad_value(2, p, i) / 3 : (grad_value(0, p, i) + grad_value(1, p, i) + grad_value(2, p, i)) / 3;
            CHECK(got[i] == Approx(want).epsilon(1e-6));
        }
    }
    CHECK_FALSE(params[4].grad().defined());

    // Overlapped with a real backward: ranks 0 and 1 run one (their buckets start from the
    // grad-ready hook), rank 2's batch was empty (it starts them all in finish()).
    Tensor w = zeros({40}), b = zeros({3});
    w.requires_grad_(true), b.requires_grad_(true);
    dist::GradReducer reducer({w, b}, 64);
    auto coeffs = [](int r, int64_t n, double base) {
        std::vector<double> v;
        for (int64_t i = 0; i < n; ++i) v.push_back(base * (r + 1) + i);
        return v;
    };
    for (int step = 0; step < 2; ++step) {  // the reducer's buffers are reused
        w.zero_grad(), b.zero_grad();
        {
            autograd::GradReadyScope overlap(reducer.hook());
            if (rank < 2) {
                Tensor loss = add(sum(mul(w, from_vector(coeffs(rank, 40, 1.0 + step), {40}))),
                                  sum(mul(b, from_vector(coeffs(rank, 3, -2.0), {3}))));
                loss.backward();
            }
        }
        auto rs = reducer.finish();
        CHECK(rs.buckets == 3);  // b + w: 43 floats, 16 a bucket
        CHECK(rs.started_in_backward == (rank < 2 ? 3 : 0));
        auto gw = w.grad().to_vector(), gb = b.grad().to_vector();
        auto w0 = coeffs(0, 40, 1.0 + step), w1 = coeffs(1, 40, 1.0 + step);
        auto b0 = coeffs(0, 3, -2.0), b1 = coeffs(1, 3, -2.0);
        for (int i = 0; i < 40; ++i) CHECK(gw[i] == Approx((w0[i] + w1[i]) / 3).epsilon(1e-6));
        for (int i = 0; i < 3; ++i) CHECK(gb[i] == Approx((b0[i] + b1[i]) / 3).epsilon(1e-6));
    }
    dist::barrier();
    dist::finalize();
    CHECK_FALSE(dist::initialized());
}

TEST_CASE("dist: broadcast, all-reduce and gather agree across 3 ranks") {
    std::string mpi = mpirun(3);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    auto r = shell(mpi + "/proc/" + std::to_string(getpid()) + "/exe \"[.mpi_worker]\"");
    INFO(r.output);
    CHECK(r.code == 0);
    size_t passed = 0;
    for (size_t at = r.output.find("All tests passed"); at != std::string::npos;
         at = r.output.find("All tests passed", at + 1))
        ++passed;
    CHECK(passed == 3);
}

TEST_CASE("dist: a plain launch of a test binary never starts MPI") {
    // No launcher variables here, so init() leaves MPI alone.
    if (dist::launched_by_mpi()) {
        SUCCEED("this test run itself was started by an MPI launcher");
        return;
    }
    dist::init(nullptr, nullptr);
    CHECK_FALSE(dist::initialized());
    CHECK(dist::world_size() == 1);
    CHECK(dist::rank() == 0);
    std::vector<Tensor> p{ones({3})};
    p[0].requires_grad_(true);
    p[0].set_grad(full({3}, 2.0));
    dist::allreduce_mean_grads(p);
    CHECK(p[0].grad().to_vector() == std::vector<double>{2, 2, 2});
}

TEST_CASE("train: mpirun -np 2 at batch 4 ends with the weights of one process at batch 8") {
    std::string mpi = mpirun(2);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    // 24 images, 3 steps of 8, from the same weights, no randomness in the data or the model.
    std::string common = "train --data " + fixture("train_folder") + " " + kMicro + "--weights " +
                         fixture("train_init.safetensors") +
                         " --epochs 1 --lr 2e-3 --wd 0.05 --warmup-epochs 0 --no-augment --no-shuffle --drop-path 0"
                         " --val-rate 0 --workers 1 --threads 1 --show-predictions 0 ";
    fs::path one = temp_dir("one"), two = temp_dir("two");
    auto a = cli(common + "--batch-size 8 --out " + one.string());
    INFO(a.output);
    REQUIRE(a.code == 0);
    auto b = shell(mpi + CONVNEXT_CLI + " " + common + "--batch-size 4 --out " + two.string());
    INFO(b.output);
    REQUIRE(b.code == 0);
    CHECK(b.output.find("2 ranks") != std::string::npos);
    CHECK(b.output.find("global batch 8") != std::string::npos);
    CHECK(b.output.find("loaded") == b.output.rfind("loaded"));  // only rank 0 reports

    auto sa = step_records(one), sb = step_records(two);
    REQUIRE(sa.size() == 3);
    REQUIRE(sb.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
        double la = sa[i]["loss"], lb = sb[i]["loss"], ga = sa[i]["grad_norm"], gb = sb[i]["grad_norm"];
        INFO("step " << i << ": loss " << la << " vs " << lb << ", grad norm " << ga << " vs " << gb);
        CHECK(std::fabs(la - lb) <= 1e-5 * std::fabs(la));
        CHECK(std::fabs(ga - gb) <= 1e-5 * std::fabs(ga));
    }
    auto wa = io::load_safetensors((one / "checkpoint.safetensors").string());
    auto wb = io::load_safetensors((two / "checkpoint.safetensors").string());
    auto init = io::load_safetensors(fixture("train_init.safetensors"));
    int compared = 0;
    double moved = 0;
    for (auto& [name, t] : wa.tensors) {
        if (name.rfind("model.", 0) != 0) continue;
        Tensor u = wb.get(name), i0 = init.get(name.substr(6));
        REQUIRE(u.numel() == t.numel());
        const float *x = t.data<float>(), *y = u.data<float>(), *z = i0.data<float>();
        double scale = 0, diff = 0;
        for (int64_t i = 0; i < t.numel(); ++i) {
            scale = std::max(scale, (double)std::fabs(x[i]));
            diff = std::max(diff, (double)std::fabs(x[i] - y[i]));
            moved = std::max(moved, (double)std::fabs(x[i] - z[i]));
        }
        INFO(name << ": max diff " << diff << " at scale " << scale);
        CHECK(diff <= 1e-5 * std::max(scale, 1e-3));
        ++compared;
    }
    CHECK(compared == (int)init.tensors.size());
    CHECK(moved > 1e-3);  // training did change the weights, so the comparison means something
}

TEST_CASE("train: sharded validation under mpirun counts every image once") {
    std::string mpi = mpirun(2);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    // lr 0: the weights stay at the shared initialisation, so validation must match exactly.
    std::string common = "train --data " + fixture("train_folder") + " " + kMicro +
                         "--epochs 1 --lr 0 --warmup-epochs 0 --val-rate 0.4 --seed 4 --batch-size 2 --threads 1"
                         " --show-predictions 0 ";
    fs::path one = temp_dir("val_one"), two = temp_dir("val_two");
    auto a = cli(common + "--out " + one.string());
    INFO(a.output);
    REQUIRE(a.code == 0);
    auto b = shell(mpi + CONVNEXT_CLI + " " + common + "--out " + two.string());
    INFO(b.output);
    REQUIRE(b.code == 0);
    CHECK(a.output.find("(9 images)") != std::string::npos);
    CHECK(b.output.find("(9 images)") != std::string::npos);
    json ea, eb;
    for (auto& rec : read_jsonl(one / "metrics.jsonl"))
        if (rec.contains("val_acc")) ea = rec;
    for (auto& rec : read_jsonl(two / "metrics.jsonl"))
        if (rec.contains("val_acc")) eb = rec;
    REQUIRE(!ea.is_null());
    REQUIRE(!eb.is_null());
    CHECK(ea["val_acc"].get<double>() == eb["val_acc"].get<double>());
    CHECK(eb["val_loss"].get<double>() == Approx(ea["val_loss"].get<double>()).epsilon(1e-6));
    // The 15 training images, padded to 16, are all seen: 8 per rank in steps of 2 x 2.
    CHECK(step_records(two).size() == 4);
}

TEST_CASE("train: a 2-rank run stopped after an epoch resumes bit-identically") {
    std::string mpi = mpirun(2);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    // Shuffle, augmentation and drop path on: every rank's generators must be restored.
    std::string common = std::string(CONVNEXT_CLI) + " train --data " + fixture("train_folder") + " " + kMicro +
                         "--batch-size 2 --epochs 2 --lr 2e-3 --val-rate 0.25 --drop-path 0.2 --seed 5 --threads 1"
                         " --show-predictions 0 ";
    fs::path full = temp_dir("res_full"), part = temp_dir("res_part");
    auto f = shell(mpi + common + "--out " + full.string());
    INFO(f.output);
    REQUIRE(f.code == 0);
    auto p = shell(mpi + common + "--out " + part.string() + " --stop-after-epochs 1");
    INFO(p.output);
    REQUIRE(p.code == 0);
    auto r = shell(mpi + common + "--out " + part.string() + " --resume");
    INFO(r.output);
    REQUIRE(r.code == 0);
    auto ck = io::load_safetensors((part / "checkpoint.safetensors").string());
    CHECK(std::count(ck.metadata.at("rng").begin(), ck.metadata.at("rng").end(), '|') == 1);  // both ranks' states
    auto a = io::load_safetensors((full / "checkpoint.safetensors").string());
    REQUIRE(a.tensors.size() == ck.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
        INFO(a.tensors[i].first);
        REQUIRE(a.tensors[i].first == ck.tensors[i].first);
        CHECK(std::memcmp(a.tensors[i].second.raw_data(), ck.tensors[i].second.raw_data(),
                          a.tensors[i].second.nbytes()) == 0);
    }
    CHECK(a.metadata.at("rng") == ck.metadata.at("rng"));
}

// The tiny image folder plus circles/img_00b.png, which is not an image: second in the
// unshuffled order, so under 2 ranks it is position 1, rank 1's first sample.
fs::path folder_with_unreadable_second_image(const std::string& name) {
    fs::path data = temp_dir(name);
    fs::copy(fixture("train_folder"), data, fs::copy_options::recursive);
    { std::ofstream(data / "circles" / "img_00b.png") << "not a png"; }
    return data;
}

TEST_CASE("train: an error on rank 1 ends the whole mpirun job with the message") {
    std::string mpi = mpirun(2);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    fs::path data = folder_with_unreadable_second_image("bad_data");
    fs::path out = temp_dir("bad_out");
    auto r = shell(mpi + CONVNEXT_CLI + " train --data " + data.string() + " " + kMicro +
                   "--batch-size 4 --epochs 1 --warmup-epochs 0 --no-shuffle --val-rate 0 --threads 1 --out " + out.string());
    INFO(r.output);
    CHECK(r.code != 0);
    CHECK(r.code != 124);  // not the timeout: the job ended by itself
    CHECK(r.output.find("error: rank 1:") != std::string::npos);
    CHECK(r.output.find("img_00b.png") != std::string::npos);
}

TEST_CASE("train: a rank whose batch was all skipped images still joins the overlapped all-reduce") {
    std::string mpi = mpirun(2);
    if (mpi.empty()) {
        SUCCEED("skipped: see the warning");
        return;
    }
    // Batch 1 per rank, unshuffled: position 1 (rank 1's first batch) is unreadable, so in step 1
    // rank 0 runs backward (its buckets start from the grad-ready hook) while rank 1 runs none
    // and starts every bucket in finish(). The collectives must still pair up: no hang, no error.
    fs::path data = folder_with_unreadable_second_image("skip_data");
    fs::path out = temp_dir("skip_out");
    auto r = shell(mpi + CONVNEXT_CLI + " train --data " + data.string() + " " + kMicro +
                   "--batch-size 1 --epochs 1 --warmup-epochs 0 --no-shuffle --val-rate 0 --threads 1 "
                   "--skip-bad-images --show-predictions 0 --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("img_00b.png") != std::string::npos);  // the warning names it
    auto steps = step_records(out);
    CHECK(steps.size() == 13);  // 25 images padded to 26 = 13 steps of 2; none all-empty
    for (auto& s : steps) CHECK(std::isfinite(s["loss"].get<double>()));
}
