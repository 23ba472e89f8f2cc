// PackedWeightsScope (ops/packed_weights.h): the GEMMs pack a registered weight once and reuse it;
// results are the same bits as without the scope, nothing is kept for other operands or after the
// scope, and the CLI's --pack-weights gives the same predictions.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cli_util.h"
#include "core/autograd.h"
#include "core/cpu_info.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "models/convnext.h"
#include "ops/gemm.h"
#include "ops/packed_weights.h"

using namespace cnx;

namespace {

struct PrecisionRestore {
    MatmulPrecision precision = matmul_precision();
    Bf16Kernel bf16 = bf16_kernel();
    ~PrecisionRestore() {
        set_matmul_precision(precision);
        set_bf16_kernel(bf16);
    }
};

struct Shape3 {
    int64_t M, N, K;
    bool tb;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("packed weights: the same bits with and without the scope, packed once, gone after it",
          "[gemm][packed]") {
    if (gemm_backend() != GemmBackend::Avx512) {
        WARN("no AVX-512: the packed-weight cache belongs to the AVX-512 kernels");
        return;
    }
    PrecisionRestore restore;
    std::vector<MatmulPrecision> precisions{MatmulPrecision::Float32};
    if (gemm_bf16_supported()) precisions.push_back(MatmulPrecision::BFloat16);
    set_bf16_kernel(Bf16Kernel::Always);
    Generator gen(5);
    // A batch-1 last stage (49 rows, two depth blocks), edges in every direction, and a weight
    // read without transpose (x · W).
    for (const Shape3 s : {Shape3{49, 768, 3072, true}, Shape3{5, 40, 70, true}, Shape3{100, 33, 600, false}}) {
        Tensor w = randn(s.tb ? Shape{s.N, s.K} : Shape{s.K, s.N}, DType::F32, &gen);
        Tensor x = randn({s.M, s.K}, DType::F32, &gen);
        const int64_t ldb = s.tb ? s.K : s.N;
        auto product = [&] {
            std::vector<float> c(s.M * s.N, -1.0f);
            gemm<float>(false, s.tb, s.M, s.N, s.K, 1.0f, x.data<float>(), s.K, w.data<float>(), ldb, 0.0f, c.data(),
                        s.N);
            return c;
        };
        for (MatmulPrecision p : precisions) {
            INFO("M " << s.M << " N " << s.N << " K " << s.K << (p == MatmulPrecision::BFloat16 ? " bf16" : " fp32"));
            set_matmul_precision(p);
            const std::vector<float> plain = product();
            const PackedWeightsStats before = packed_weights_stats();
            {
                PackedWeightsScope packed({w});
                const std::vector<float> first = product(), second = product();
                REQUIRE(same_bits(first, plain));
                REQUIRE(same_bits(second, plain));
                const PackedWeightsStats now = packed_weights_stats();
                CHECK(now.misses == before.misses + 1);  // packed on the first call
                CHECK(now.hits == before.hits + 1);      // reused on the second
                CHECK(now.entries == before.entries + 1);
                CHECK(now.bytes >= (int64_t)(s.K * s.N * (p == MatmulPrecision::BFloat16 ? 2 : 4)) / 2);
                // an operand that is not a registered weight is never kept: here the weight is A
                std::vector<float> ct(s.N * s.M);
                if (s.tb)
                    gemm<float>(false, true, s.N, s.M, s.K, 1.0f, w.data<float>(), s.K, x.data<float>(), s.K, 0.0f,
                                ct.data(), s.M);
                CHECK(packed_weights_stats().entries == now.entries);
            }
            CHECK(packed_weights_stats().entries == before.entries);
            CHECK(packed_weights_stats().bytes == before.bytes);
            REQUIRE(same_bits(product(), plain));  // and nothing is reused after the scope
            CHECK(packed_weights_stats().hits == before.hits + 1);
        }
    }
}

TEST_CASE("packed weights: a model's forward is the same with the scope", "[gemm][packed]") {
    PrecisionRestore restore;
    Generator gen(6);
    models::ConvNeXtOptions o;
    o.depths = {1, 1, 2, 1};
    o.dims = {16, 32, 64, 128};
    o.num_classes = 7;
    auto model = std::make_shared<models::ConvNeXt>(o, &gen);
    model->eval();
    Tensor x = randn({1, 64, 64, 3}, DType::F32, &gen);
    NoGradGuard ng;
    const Tensor plain = model->forward(x);
    PackedWeightsScope packed(model->parameters());
    for (int i = 0; i < 2; ++i) {
        const Tensor again = model->forward(x);
        REQUIRE(std::memcmp(again.data<float>(), plain.data<float>(), plain.nbytes()) == 0);
    }
    if (gemm_backend() == GemmBackend::Avx512) CHECK(packed_weights_stats().entries > 0);
}

namespace {
// A random convnext_atto-family model (depths 1,1,1,1, dims 8,16,32,64) saved under dir; the
// path of its weights.
std::string save_tiny_model(const std::filesystem::path& dir, int64_t classes, uint64_t seed) {
    Generator gen(seed);
    models::ConvNeXtOptions o;
    o.depths = {1, 1, 1, 1};
    o.dims = {8, 16, 32, 64};
    o.num_classes = classes;
    models::ConvNeXt model(o, &gen);
    const std::string weights = (dir / "w.safetensors").string();
    io::save_safetensors(weights, model.state_dict());
    return weights;
}

// `convnext ARGS` with and without --pack-weights: both succeed; their outputs.
std::pair<std::string, std::string> plain_and_packed(const std::string& args) {
    const cli_test::RunResult plain = cli_test::run(args, false), packed = cli_test::run(args + " --pack-weights", false);
    REQUIRE(plain.code == 0);
    REQUIRE(packed.code == 0);
    return {plain.output, packed.output};
}
}  // namespace

TEST_CASE("convnext predict --pack-weights: the same probabilities", "[gemm][packed][cli]") {
    const std::filesystem::path dir = cli_test::temp_dir("packed_weights");
    const std::string weights = save_tiny_model(dir, 3, 7);
    const auto [plain, packed] = plain_and_packed(
        " predict --model convnext_atto --depths 1,1,1,1 --dims 8,16,32,64 --weights " + weights + " --image " +
        cli_test::fixture("train_folder/circles/img_00.png") + " --resize 40 --crop 32 --json");
    CHECK(packed == plain);
    std::filesystem::remove_all(dir);
}

TEST_CASE("convnext eval --pack-weights: the same metrics", "[gemm][packed][cli]") {
    const std::filesystem::path dir = cli_test::temp_dir("packed_weights_eval");
    const std::string weights = save_tiny_model(dir, 3, 8);  // circles, squares, stripes
    const auto [plain, packed] = plain_and_packed(
        " eval --model convnext_atto --depths 1,1,1,1 --dims 8,16,32,64 --weights " + weights + " --data " +
        cli_test::fixture("train_folder") + " --image-size 32 --workers 1 --json");
    CHECK(parse_json(packed) == parse_json(plain));
    std::filesystem::remove_all(dir);
}
