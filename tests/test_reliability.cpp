// Regression tests for what the sanitizer pass, the fuzzers and the long-run memory check found
// (docs/reliability.md). Each case fails on the code as it was before its fix.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <thread>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/storage.h"
#include "core/threads.h"
#include "core/tensor.h"
#include "data/image.h"
#include "ops/parallel.h"
#include "optim/optim.h"

using namespace cnx;

namespace {

NamedTensors two_params() {
    NamedTensors p{{"fc.weight", ones({3, 2})}, {"fc.bias", zeros({3})}};
    for (auto& [n, t] : p) t.requires_grad_(true).set_name(n);
    return p;
}

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back((uint8_t)(x >> s));
}

// A PNG chunk; the CRC is left zero (stb_image does not check it).
void chunk(std::vector<uint8_t>& png, const char* type, uint32_t declared_len, const std::vector<uint8_t>& data) {
    put_be32(png, declared_len);
    png.insert(png.end(), type, type + 4);
    png.insert(png.end(), data.begin(), data.end());
    put_be32(png, 0);
}

std::vector<uint8_t> corpus_file(const std::string& name) {
    std::ifstream f(std::string(CONVNEXT_SOURCE_DIR) + "/tests/fuzz/corpus/fuzz_image/" + name, std::ios::binary);
    REQUIRE(f.good());
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

optim::OptimizerState stepped_state() {
    auto params = two_params();
    optim::AdamW opt(optim::get_params_groups(params, 0.05), optim::AdamWOptions(1e-3));
    for (auto& [n, t] : params) t.set_grad(ones(t.shape()));
    opt.step();
    return opt.state_dict();
}

}  // namespace

// fuzz_checkpoint_meta: a checkpoint whose optimiser options or group rates were out of range
// loaded without complaint; the run then failed at its first step (beta2) or trained with a
// negative or NaN learning rate without any error (group lr, weight decay, lr scale).
TEST_CASE("optimizer state: out-of-range options and rates are refused at load", "[reliability][optim]") {
    const optim::OptimizerState good = stepped_state();
    auto params = two_params();
    optim::AdamW opt(optim::get_params_groups(params, 0.05), optim::AdamWOptions(1e-3).betas({0.8, 0.95}));

    auto broken = good;
    broken.scalars["optim.group.0.beta2"] = "5.999";
    CHECK_THROWS_WITH(opt.load_state_dict(broken), Catch::Contains("beta2"));
    // Nothing of the failed load remains: options, rates and steps are as before.
    CHECK(opt.options(0).beta2() == 0.95);
    CHECK(opt.step_count("fc.weight") == 0);

    for (const char* key : {"optim.group.0.lr", "optim.group.1.initial_lr", "optim.group.0.weight_decay",
                            "optim.group.1.lr_scale"}) {
        for (const char* value : {"-0.001", "nan", "inf"}) {
            broken = good;
            broken.scalars[key] = value;
            CHECK_THROWS_WITH(opt.load_state_dict(broken), Catch::Contains(key) && Catch::Contains("not a rate"));
        }
    }
    broken = good;
    broken.scalars["optim.group.0.eps"] = "-1e-8";
    CHECK_THROWS_WITH(opt.load_state_dict(broken), Catch::Contains("eps"));
    CHECK(opt.options(0).eps() == optim::AdamWOptions().eps());

    opt.load_state_dict(good);  // the untouched state still loads
    CHECK(opt.options(0).beta2() == optim::AdamWOptions().beta2());
    CHECK(opt.step_count("fc.weight") == 1);
    CHECK(*opt.param_groups()[0].lr == 1e-3);
}

TEST_CASE("optimizer state: SGD options are checked at load too", "[reliability][optim]") {
    auto params = two_params();
    optim::SGD sgd(params, optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
    for (auto& [n, t] : params) t.set_grad(ones(t.shape()));
    sgd.step();
    auto st = sgd.state_dict();
    auto fresh_params = two_params();
    optim::SGD fresh(fresh_params, optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
    auto broken = st;
    broken.scalars["optim.group.0.dampening"] = "0.5";  // nesterov needs zero dampening
    CHECK_THROWS_WITH(fresh.load_state_dict(broken), Catch::Contains("nesterov"));
    CHECK(fresh.options(0).dampening() == 0);
    fresh.load_state_dict(st);
    CHECK(fresh.step_count("fc.weight") == 1);
}

// fuzz_image: stb_image 2.27 sized its IDAT buffer from the chunk's declared length before
// checking the data was there, so this 50-byte file made it allocate 2 GiB (the fuzzer's malloc
// limit caught it). It is now refused up front, naming the chunk.
TEST_CASE("decode: a PNG chunk running past the end of the file is refused before stb allocates", "[reliability][data]") {
    std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    chunk(png, "IHDR", 13, {0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0});
    chunk(png, "IDAT", 0x7fffff00u, {0x78, 0x9c, 0x63, 0x00});
    try {
        data::decode_image(png.data(), png.size(), "big_idat.png");
        FAIL("decoded a PNG whose IDAT chunk runs past the end");
    } catch (const data::BadImageError& e) {
        const std::string msg = e.what();
        CHECK_THAT(msg, Catch::Contains("big_idat.png") && Catch::Contains("'IDAT'") &&
                            Catch::Contains("2147483392 bytes") && Catch::Contains("past the end"));
    }
    // A chunk that fits but lacks its CRC at the very end still reaches stb (which ignores CRCs).
    std::vector<uint8_t> ok{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    chunk(ok, "IHDR", 13, {0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0});
    chunk(ok, "IDAT", 10, {0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01});
    chunk(ok, "IEND", 0, {});
    ok.resize(ok.size() - 4);
    data::DecodeOptions grey;
    grey.channels = 1;
    data::Image img = data::decode_image(ok.data(), ok.size(), "one_pixel.png", grey);
    CHECK(img.height == 1);
    CHECK(img.width == 1);
    CHECK(img.pixels == std::vector<uint8_t>{0});
}

// fuzz_image: a progressive JPEG whose AC scan uses a Huffman table defined only later made
// stb_image 2.27 decode with uninitialised table memory and read 16 MB before the table
// (UBSan: index -16776152 out of bounds). Such scans are refused before stb runs.
TEST_CASE("decode: a JPEG scan using an undefined Huffman table is refused", "[reliability][data]") {
    auto bad = corpus_file("regress_jpeg_undefined_huffman_table");
    try {
        data::decode_image(bad.data(), bad.size(), "undefined_table.jpg");
        FAIL("decoded a JPEG whose scan uses an undefined Huffman table");
    } catch (const data::BadImageError& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains("undefined_table.jpg") &&
                                              Catch::Contains("Huffman table AC 0 before any DHT defines it"));
    }
    // Well-formed baseline and progressive files (tables before their scans) still decode.
    for (const char* name : {"jpeg_baseline", "jpeg_progressive", "jpeg_grey", "jpeg_restart"}) {
        auto ok = corpus_file(name);
        data::Image img = data::decode_image(ok.data(), ok.size(), name);
        CHECK(img.width > 0);
        CHECK(img.pixels.size() == (size_t)(img.width * img.height * 3));
    }
}

// fuzz_image, then a look at why: the caching allocator kept every released block, keyed by
// exact size, up to 8 GiB. Tensors of sizes that never recur (one per decoded image size) piled
// up: 330 MB after 20,000 fuzz inputs, 2 GB (libFuzzer's RSS limit) after 575,000. The cache
// now stays under cache_limit() and evicts the blocks released longest ago, while a working set
// that recurs (a training step's sizes) is still served from the cache.
TEST_CASE("allocator: sizes that never recur do not pile up; recurring ones stay cached", "[reliability][core]") {
    allocator::empty_cache();
    const size_t limit = allocator::cache_limit();
    REQUIRE(limit >= (size_t(256) << 20));
    // A "training step": the same few sizes every iteration.
    const std::vector<int64_t> step_sizes{1 << 16, 3 << 14, 1 << 18};
    size_t step_bytes = 0;
    for (int64_t n : step_sizes) step_bytes += (size_t)n * sizeof(float);
    // Between steps, one tensor of a size never seen before (a decoded image): together more
    // than the limit, so the old cache (8 GiB cap) would have kept them all.
    const int64_t junk_base = 1 << 18;  // floats: 1 MiB
    const int iterations = (int)(limit / (size_t(1) << 20)) + 64;
    size_t junk_total = 0;
    for (int it = 0; it < iterations; ++it) {
        {
            std::vector<Tensor> step;
            for (int64_t n : step_sizes) step.push_back(Tensor::empty({n}));
        }
        Tensor junk = Tensor::empty({junk_base + 16 * it});
        junk_total += junk.nbytes();
    }
    REQUIRE(junk_total > limit);
    CHECK(allocator::cached_bytes() <= allocator::cache_limit());
    CHECK(allocator::cached_bytes() < junk_total);
    // The step's blocks were re-cached every iteration, so they were never the oldest: the next
    // step takes all of them from the cache.
    const size_t before = allocator::cached_bytes();
    {
        std::vector<Tensor> step;
        for (int64_t n : step_sizes) step.push_back(Tensor::empty({n}));
        CHECK(allocator::cached_bytes() == before - step_bytes);
    }
    allocator::empty_cache();
    CHECK(allocator::cached_bytes() == 0);
}

TEST_CASE("allocator: a cached block up to a quarter larger serves a request and returns at its own size",
          "[reliability][core]") {
    allocator::empty_cache();
    const size_t block = size_t(1) << 20;
    const void* p = nullptr;
    {
        Tensor a = Tensor::empty({(int64_t)(block / sizeof(float))});
        p = a.data<float>();
    }
    REQUIRE(allocator::cached_bytes() == block);
    {
        Tensor b = Tensor::empty({(int64_t)(block / sizeof(float)) * 9 / 10});  // 10% smaller: served
        CHECK(b.data<float>() == p);
        CHECK(allocator::cached_bytes() == 0);
    }
    CHECK(allocator::cached_bytes() == block);  // cached again whole, not at the smaller size
    {
        Tensor c = Tensor::empty({(int64_t)(block / sizeof(float)) / 2});  // half: a block of its own
        CHECK(c.data<float>() != p);
        CHECK(allocator::cached_bytes() == block);
    }
    allocator::empty_cache();
    CHECK(allocator::cached_bytes() == 0);
}

// The long-run memory check (20 epochs under scripts/rss_watch.sh) crashed now and then: a pool
// helper ran a chunk of a layer norm after parallel_for had returned, while the caller was in the
// next kernel. The helper had read the finished task's generation, then the next task's function
// and size (stored before that task was published), and its claim on the old generation's
// counter still succeeded: a chunk of the new task ran out of turn and was counted, so the caller
// could return before its chunks were done. Back-to-back tasks of growing size hit that window.
TEST_CASE("parallel_for: every chunk runs once, and none after the call returns", "[reliability][parallel]") {
    const int saved = get_num_threads();
    set_num_threads(4);  // more threads than cores: helpers get preempted inside the window
    constexpr int kTasks = 1000000;
    const int64_t sizes[] = {1, 2, 3, 16, 2, 64, 5};
    // Each task writes only its own slots, so a chunk run late or twice shows up in the counts;
    // the slots live past the loop so a late write lands somewhere checked, not in freed memory.
    std::vector<int64_t> offset(kTasks + 1, 0);
    for (int t = 0; t < kTasks; ++t) offset[t + 1] = offset[t] + sizes[t % 7];
    auto counts = std::make_unique<std::atomic<int>[]>(offset[kTasks]);
    for (int64_t i = 0; i < offset[kTasks]; ++i) counts[i].store(0);
    std::atomic<int> running{0}, late{0};
    for (int t = 0; t < kTasks; ++t) {
        std::atomic<int>* mine = &counts[offset[t]];
        parallel_for(sizes[t % 7], [&, mine](int64_t i) {
            running.fetch_add(1);
            mine[i].fetch_add(1);
            running.fetch_sub(1);
        });
        if (running.load() != 0) late.fetch_add(1);  // a chunk still running after the return
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    int64_t wrong = 0;
    for (int64_t i = 0; i < offset[kTasks]; ++i) wrong += counts[i].load() != 1;
    set_num_threads(saved);
    CHECK(wrong == 0);
    CHECK(late.load() == 0);
}
