// --precision bf16: bfloat16 conversion (nearest even, NaN and infinities), bfloat16 tensors and
// safetensors files, the saved-activation helper, float GEMMs reading bfloat16 operands (to the
// bit against the widened float32 operands, on every backend), the ops' bf16-storage fallback
// against the float32 GEMM path on the rounded activations, a float32 vs bf16 training step, and
// the CLI (--precision, bench's path fields, convert --dtype bf16 loaded by every command).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>
#include <vector>

#include "cli_util.h"
#include "temp_dir.h"
#include "precision_check.h"
#include "core/autograd.h"
#include "core/cpu_peak.h"
#include "core/rng.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "models/convnext.h"
#include "ops/fused.h"
#include "ops/fused_grn.h"
#include "ops/grn.h"
#include "ops/gemm.h"
#include "ops/kernels/gelu_math.h"
#include "ops/ops.h"
#include "ops/precision.h"
#include "ops/saved.h"
#include "optim/optim.h"

using namespace cnx;
namespace fs = std::filesystem;

namespace {

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
uint16_t bf(float f) { return float_to_bf16(f).bits; }

// Restores everything these tests change.
struct StateGuard {
    Precision precision = cnx::precision();
    Bf16Kernel kernel = bf16_kernel();
    GemmBackend backend = gemm_backend();
    ~StateGuard() {
        set_precision(precision);
        set_bf16_kernel(kernel);
        set_gemm_backend(backend);
        set_gemm_blocking(GemmBlocking{});
    }
};

Tensor rounded(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

// Runs body(k) with the float32 kernels forced (the fallback of a CPU without a fast 16-bit
// kernel) and, where the CPU has them, with the bf16 kernel and with the fp16 kernel forced.
template <class F>
void for_each_bf16_kernel(F&& body) {
    for (Bf16Kernel k : {Bf16Kernel::Never, Bf16Kernel::Always, Bf16Kernel::Fp16}) {
        if (k == Bf16Kernel::Always && !gemm_bf16_supported()) continue;
        if (k == Bf16Kernel::Fp16 && !gemm_fp16_supported()) continue;
        INFO((k == Bf16Kernel::Never    ? "fallback: float32 kernels"
              : k == Bf16Kernel::Always ? "bf16 kernel"
                                        : "fp16 kernel"));
        set_bf16_kernel(k);
        body(k);
    }
}

std::vector<BFloat16> to_bf16_vec(const std::vector<float>& v) {
    std::vector<BFloat16> out(v.size());
    bf16_from_float(v.data(), out.data(), (int64_t)v.size());
    return out;
}
std::vector<float> widened(const std::vector<BFloat16>& v) {
    std::vector<float> out(v.size());
    bf16_to_float(v.data(), out.data(), (int64_t)v.size());
    return out;
}
std::vector<float> random_floats(int64_t n, uint64_t seed, double scale = 1.0) {
    Generator g(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)((g.uniform() * 2 - 1) * scale);
    return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}
using precision_check::same_bits;

// max |a - b| / max(max |b|, tiny): errors relative to the tensor's scale.
double rel_err(const Tensor& a, const Tensor& b) {
    const std::vector<double> x = a.to_vector(), y = b.to_vector();
    REQUIRE(x.size() == y.size());
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < x.size(); ++i) {
        num = std::max(num, std::fabs(x[i] - y[i]));
        den = std::max(den, std::fabs(y[i]));
    }
    return num / den;
}

}  // namespace

// ---- conversion --------------------------------------------------------------------------------

TEST_CASE("bf16: float32 -> bfloat16 rounds to nearest even; NaN, infinities, zeros, subnormals", "[bf16]") {
    // exact values
    for (float v : {0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f, -3.0e38f * 0.0f})
        CHECK(bf16_to_float(float_to_bf16(v)) == v);
    CHECK(bf(-0.0f) == 0x8000);
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the even one (1) wins
    CHECK(bf(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
    // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up
    CHECK(bf(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
    // one ulp past halfway goes up, one ulp below goes down
    CHECK(bf(from_bits(0x3F808001)) == 0x3F81);
    CHECK(bf(from_bits(0x3F807FFF)) == 0x3F80);
    CHECK(bf(from_bits(0xBF808001)) == 0xBF81);  // the sign does not matter
    // infinities stay, the largest floats overflow to infinity (as torch's .bfloat16() does)
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(bf(inf) == 0x7F80);
    CHECK(bf(-inf) == 0xFF80);
    CHECK(bf(std::numeric_limits<float>::max()) == 0x7F80);
    CHECK(bf(from_bits(0x7F7F0000)) == 0x7F7F);  // the largest bfloat16 itself
    // NaNs stay NaN (quiet, sign kept), including those whose payload sits in the dropped bits
    for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0x7F80FFFFu}) {
        const BFloat16 b = float_to_bf16(from_bits(nan));
        CHECK(std::isnan(bf16_to_float(b)));
        CHECK((b.bits & 0x0040) != 0);
        CHECK((b.bits >> 15) == (nan >> 31));
    }
    // subnormals round like any other value
    CHECK(bf(from_bits(0x00000001)) == 0x0000);
    CHECK(bf(from_bits(0x00008000)) == 0x0000);  // tie, to even
    CHECK(bf(from_bits(0x00018000)) == 0x0002);  // tie, to even (up)
    CHECK(bf(from_bits(0x00010001)) == 0x0001);
    // random floats over a wide range: the result is the nearer neighbour, ties to the even one
    Generator g(7);
    for (int i = 0; i < 200000; ++i) {
        const uint32_t u = (uint32_t)g.randint(1u << 30) * 4u + (uint32_t)g.randint(4);
        const float x = from_bits(u & 0xFF7FFFFFu);  // finite
        // the two bfloat16 magnitudes around |x|; above the largest one lies 2^128 (infinity)
        const uint32_t mag = bits_of(x) & 0x7FFFFFFFu, lo = mag & 0xFFFF0000u, hi = lo + 0x10000u;
        const double vhi = hi == 0x7F800000u ? std::ldexp(1.0, 128) : (double)from_bits(hi);
        const double dlo = (double)from_bits(mag) - (double)from_bits(lo), dhi = vhi - (double)from_bits(mag);
        const uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1) ? hi : lo;
        REQUIRE(bf(x) == (uint16_t)((pick >> 16) | ((bits_of(x) >> 16) & 0x8000u)));
    }
}

TEST_CASE("float16 bits widen exactly to float32, for all 65536 of them", "[bf16][float16]") {
    // The value by the definition (sign, 5-bit exponent biased by 15, 10-bit mantissa), in double.
    for (uint32_t h = 0; h < 65536; ++h) {
        const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
        const float got = half_bits_to_float((uint16_t)h);
        if (exp == 31 && mant != 0) {
            REQUIRE(std::isnan(got));
            REQUIRE(std::signbit(got) == (sign == 1));
            continue;
        }
        const double magnitude = exp == 31   ? std::numeric_limits<double>::infinity()
                                 : exp == 0 ? std::ldexp((double)mant, -24)
                                            : std::ldexp(1.0 + mant / 1024.0, exp - 15);
        const double want = sign ? -magnitude : magnitude;
        INFO("bits 0x" << std::hex << h);
        REQUIRE((double)got == want);
        REQUIRE(std::signbit(got) == (sign == 1));  // -0 stays -0
    }
}

TEST_CASE("bf16: the bulk conversions give the element-wise bits, every length and edge value", "[bf16]") {
    // The bulk loops are vectorised by hand where the CPU allows (core/bf16_convert.cpp): 32 and 16
    // lanes at a time, then a masked tail. Every length up to 70 puts each special value in every
    // lane position and in the tail.
    const uint32_t specials[] = {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0x7F80FFFFu, 0x7F800000u,
                                 0xFF800000u, 0x7F7FFFFFu, 0x00000001u, 0x00008000u, 0x00018000u, 0x80000000u,
                                 0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0xBF808001u};
    Generator g(11);
    for (int64_t n = 0; n <= 70; ++n) {
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i)
            x[i] = (i + n) % 3 == 0 ? from_bits(specials[(i + n) % 16]) : (float)((g.uniform() * 2 - 1) * 1e3);
        std::vector<BFloat16> b(n + 1, BFloat16{0xABCD});  // one past the end: must stay untouched
        bf16_from_float(x.data(), b.data(), n);
        for (int64_t i = 0; i < n; ++i) REQUIRE(b[i].bits == float_to_bf16(x[i]).bits);
        REQUIRE(b[n].bits == 0xABCD);
        std::vector<float> w(n + 1, 42.0f);
        bf16_to_float(b.data(), w.data(), n);
        for (int64_t i = 0; i < n; ++i) REQUIRE(bits_of(w[i]) == bits_of(bf16_to_float(b[i])));
        REQUIRE(w[n] == 42.0f);
    }
}

TEST_CASE("bf16: tensors convert both ways; threaded conversions agree with Tensor::to", "[bf16]") {
    Tensor x = randn({3, 1000, 37});
    Tensor b = x.to(DType::BF16);
    REQUIRE(b.dtype() == DType::BF16);
    REQUIRE((int64_t)b.nbytes() == x.numel() * 2);
    REQUIRE(b.str() == "bfloat16[3,1000,37]");
    const float* xp = x.data<float>();
    const BFloat16* bp = b.data<BFloat16>();
    for (int64_t i = 0; i < x.numel(); ++i) REQUIRE(bp[i].bits == bf(xp[i]));
    REQUIRE(same_bits(to_bf16(x), b));
    Tensor w = b.to(DType::F32);
    REQUIRE(same_bits(bf16_to_f32(b), w));
    REQUIRE(same_bits(w.to(DType::BF16), b));  // widening is exact: rounding again changes nothing
    REQUIRE(b.to(DType::F64).to_vector() == w.to_vector());
    REQUIRE(x.to(DType::F64).to(DType::BF16).to_vector() == w.to_vector());  // float64 through float32
    REQUIRE(full({1}, 3.015625).to(DType::BF16).item() == 3.015625);
    // an op that does not take bfloat16 says so
    REQUIRE_THROWS_WITH(gelu(b), Catch::Contains("bfloat16"));
}

TEST_CASE("bf16: safetensors write BF16 and read it widened, or kept", "[bf16][safetensors]") {
    const fs::path dir = fs::temp_directory_path() / ("cnx_bf16_st_" + std::to_string(getpid()));
    fs::create_directories(dir);
    Tensor x = randn({17, 5});
    Tensor b = x.to(DType::BF16);
    const std::string path = (dir / "w.safetensors").string();
    io::save_safetensors(path, {{"w", b}, {"f", x}}, {{"dtype", "mixed"}});
    io::SafetensorsHeader h = io::read_safetensors_header(path);
    REQUIRE(h.entries.size() == 2);
    for (auto& e : h.entries) REQUIRE(e.dtype == (e.name == "w" ? "BF16" : "F32"));
    // default: everything float32, BF16 widened exactly
    io::SafetensorsFile f = io::load_safetensors(path);
    REQUIRE(same_bits(f.get("w"), b.to(DType::F32)));
    REQUIRE(same_bits(f.get("f"), x));
    // want bfloat16: BF16 bits as stored, F32 rounded to nearest even
    io::SafetensorsFile g = io::load_safetensors(path, DType::BF16);
    REQUIRE(same_bits(g.get("w"), b));
    REQUIRE(same_bits(g.get("f"), b));
    // and from memory
    const std::string buf = io::save_safetensors_to_buffer({{"w", b}});
    REQUIRE(buf.size() == 8 + (buf.size() - 8 - 17 * 5 * 2) + 17 * 5 * 2);
    REQUIRE(same_bits(io::load_safetensors_from_buffer(buf.data(), buf.size(), DType::BF16).get("w"), b));
    fs::remove_all(dir);
}

// ---- precision mode and the saved-activation helper --------------------------------------------

TEST_CASE("bf16: precision names, guard, per thread", "[bf16]") {
    StateGuard restore;
    REQUIRE(parse_precision("bf16") == Precision::BF16);
    REQUIRE(parse_precision("bfloat16") == Precision::BF16);
    REQUIRE(parse_precision("fp32") == Precision::FP32);
    REQUIRE(parse_precision("float32") == Precision::FP32);
    REQUIRE_THROWS_WITH(parse_precision("fp16"), Catch::Contains("unknown precision 'fp16'"));
    REQUIRE(precision() == Precision::FP32);
    {
        PrecisionGuard p(Precision::BF16);
        REQUIRE(precision() == Precision::BF16);
        REQUIRE(saves_bf16());
        REQUIRE(matmul_precision() == MatmulPrecision::BFloat16);
        bool other_thread_bf16 = true;
        std::thread([&] { other_thread_bf16 = saves_bf16(); }).join();
        REQUIRE_FALSE(other_thread_bf16);
    }
    REQUIRE(precision() == Precision::FP32);
    REQUIRE_FALSE(saves_bf16());
    REQUIRE(matmul_precision() == MatmulPrecision::Float32);
}

TEST_CASE("bf16: save_for_backward rounds activations only under bf16, never parameters", "[bf16]") {
    StateGuard restore;
    Tensor act = randn({4, 9});
    Tensor param = randn({9}).requires_grad_();
    Tensor dbl = randn({3}, DType::F64);
    {
        SavedTensor s = save_for_backward(act);
        REQUIRE_FALSE(s.is_bf16());
        REQUIRE(s.stored().same_storage(act));
        REQUIRE(s.get().same_storage(act));
    }
    PrecisionGuard p(Precision::BF16);
    reset_saved_stats();
    SavedTensor s = save_for_backward(act);
    REQUIRE(s.is_bf16());
    REQUIRE(s.dtype() == DType::F32);
    REQUIRE(s.shape() == act.shape());
    REQUIRE(s.stored().dtype() == DType::BF16);
    REQUIRE(same_bits(s.stored(), act.to(DType::BF16)));
    REQUIRE(same_bits(s.get(), rounded(act)));
    SavedTensor sp = save_for_backward(param), sd = save_for_backward(dbl);
    REQUIRE_FALSE(sp.is_bf16());
    REQUIRE(sp.stored().same_storage(param));
    REQUIRE_FALSE(sd.is_bf16());
    REQUIRE(sd.stored().same_storage(dbl));
    SavedTensor sa = adopt_for_backward(act.to(DType::BF16));
    REQUIRE(sa.is_bf16());
    REQUIRE(same_bits(sa.get(), rounded(act)));
    const SavedStats st = saved_stats();
    REQUIRE(st.bf16_tensors == 2);
    REQUIRE(st.bf16_bytes == 2 * 36 * 2);
    REQUIRE(st.kept_tensors == 1);  // the float64 one; the parameter is not counted
    REQUIRE(st.kept_bytes == 3 * 8);
    REQUIRE_FALSE(save_for_backward(Tensor()).defined());
}

// ---- GEMMs with bfloat16 operands --------------------------------------------------------------

namespace {

struct MixedCase {
    bool ta, tb;
    int64_t M, N, K;
    bool gelu_a, gelu_b;
};

// gemm_mixed with bfloat16 A and/or B against gemm_ex<float> on the widened operands: the same
// bits on whatever kernel runs now. Epilogue: bias, GELU' from a bfloat16 input, and the bfloat16
// copy (with C present, and with C null).
void check_mixed(const MixedCase& c, uint64_t seed) {
    INFO("ta " << c.ta << " tb " << c.tb << " M " << c.M << " N " << c.N << " K " << c.K << " gelu " << c.gelu_a
               << c.gelu_b);
    const int64_t lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 5, ldc = c.N + 2;
    const auto a16 = to_bf16_vec(random_floats((c.ta ? c.K : c.M) * lda, seed));
    const auto b16 = to_bf16_vec(random_floats((c.tb ? c.N : c.K) * ldb, seed + 1));
    const auto a32 = widened(a16), b32 = widened(b16);
    const std::vector<float> bias = random_floats(c.N, seed + 2);
    const auto act16 = to_bf16_vec(random_floats(c.M * c.N, seed + 3, 3.0));
    const auto act32 = widened(act16);
    auto run = [&](auto* A, auto* B, bool act_bf16, bool null_c, std::vector<BFloat16>* copy) {
        std::vector<float> C(c.M * ldc, 0.5f);
        GemmEpilogue<float> ep;
        ep.bias = bias.data();
        ep.act = GemmAct::GeluGrad;
        ep.ld_act_in = c.N;
        if (act_bf16)
            ep.act_in_bf16 = act16.data();
        else
            ep.act_in = act32.data();
        if (copy) {
            copy->assign(c.M * c.N, BFloat16{});
            ep.out_bf16 = copy->data();
            ep.ld_out_bf16 = c.N;
        }
        gemm_mixed(c.ta, c.tb, c.M, c.N, c.K, 0.75f, A, lda, B, ldb, 0.0f, null_c ? nullptr : C.data(), ldc, ep,
                   c.gelu_a, c.gelu_b);
        return C;
    };
    std::vector<BFloat16> ref_copy, copy;
    const std::vector<float> ref = run(a32.data(), b32.data(), false, false, &ref_copy);
    REQUIRE(same_bits(run(a16.data(), b32.data(), true, false, nullptr), ref));
    REQUIRE(same_bits(run(a32.data(), b16.data(), true, false, nullptr), ref));
    REQUIRE(same_bits(run(a16.data(), b16.data(), true, false, &copy), ref));
    for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < c.N; ++j) REQUIRE(copy[i * c.N + j].bits == bf(ref[i * ldc + j]));
    run(a16.data(), b16.data(), true, true, &copy);  // C null: only the bfloat16 copy
    for (int64_t i = 0; i < c.M * c.N; ++i) REQUIRE(copy[i].bits == ref_copy[i].bits);
}

const MixedCase kMixedCases[] = {
    {false, false, 37, 45, 70, false, false}, {false, true, 29, 70, 33, true, false},
    {true, false, 50, 33, 61, false, true},   {true, true, 15, 64, 129, true, true},
    {false, true, 300, 96, 600, true, false},  // several depth blocks (with the small blocking below)
    {true, false, 40, 24, 5000, false, false},  // deep: depth chunks
};

}  // namespace

TEST_CASE("bf16: GEMMs read bfloat16 operands to the bit of the widened float32 ones", "[bf16][gemm]") {
    StateGuard restore;
    auto all_cases = [](uint64_t seed) {
        for (const MixedCase& c : kMixedCases) check_mixed(c, seed++);
    };
    SECTION("float32 kernels") {
        set_bf16_kernel(Bf16Kernel::Never);
        all_cases(10);
        set_gemm_blocking({64, 64});
        all_cases(20);
    }
    // A 16-bit kernel, forced, at the default and at a small blocking (seeds, seeds + 10).
    auto sixteen_bit = [&](Bf16Kernel kernel, bool (*uses)(), uint64_t seed) {
        set_bf16_kernel(kernel);
        MatmulPrecisionGuard mp(MatmulPrecision::BFloat16);
        REQUIRE(uses());
        all_cases(seed);
        set_gemm_blocking({32, 64});
        all_cases(seed + 10);
    };
    SECTION("bf16 kernel (where the CPU has one)") {
        if (gemm_bf16_supported()) sixteen_bit(Bf16Kernel::Always, gemm_uses_bf16, 30);
    }
    SECTION("fp16 kernel (where the CPU has one)") {
        if (gemm_fp16_supported()) sixteen_bit(Bf16Kernel::Fp16, gemm_uses_fp16, 60);
    }
    SECTION("OpenBLAS") {
        set_gemm_backend(GemmBackend::OpenBLAS);
        all_cases(50);
    }
    // C may be null only when the bfloat16 copy is the output and beta is 0
    float a = 1, b = 1;
    REQUIRE_THROWS_WITH(gemm_mixed(false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, nullptr, 1, GemmEpilogue<float>{}),
                        Catch::Contains("C may be null only"));
}

TEST_CASE("bf16: the bf16 kernel runs only where it pays, and counts its calls", "[bf16][gemm]") {
    StateGuard restore;
    std::vector<float> A(64 * 64, 1.0f), B(64 * 64, 1.0f), C(64 * 64);
    auto one = [&] { gemm<float>(false, false, 64, 64, 64, 1.0f, A.data(), 64, B.data(), 64, 0.0f, C.data(), 64); };
    reset_gemm_call_counts();
    one();  // float32 precision: never bf16
    set_precision(Precision::BF16);
    set_bf16_kernel(Bf16Kernel::Never);
    one();  // forced fallback
    GemmCallCounts n = gemm_call_counts();
    REQUIRE(n.bf16 == 0);
    REQUIRE(n.fp32 + n.openblas == 2);
    set_bf16_kernel(Bf16Kernel::Auto);
    reset_gemm_call_counts();
    one();
    n = gemm_call_counts();
    const PeakRates peak = compute_peak();
    const bool avx512 = gemm_backend() == GemmBackend::Avx512;
    const bool pays = avx512 && gemm_bf16_supported() && peak.bf16_core >= 1.5 * peak.fp32_core;
    // Where bf16 dot products do not pay, fp16 FMAs may (tests/test_gemm_fp16.cpp).
    const bool fp16 = avx512 && !pays && gemm_fp16_supported() && peak.fp16_core >= 1.5 * peak.fp32_core;
    REQUIRE(n.bf16 == (pays ? 1 : 0));
    REQUIRE(n.fp16 == (fp16 ? 1 : 0));
    REQUIRE(std::string(gemm_precision_name()) == (pays ? "bf16" : fp16 ? "fp16" : "fp32"));
}

// ---- ops under bf16 storage ----------------------------------------------------------------------

namespace {

struct Grads {
    Tensor out;
    std::vector<Tensor> grads;
};

// out = f(inputs); backward of sum(out * r) for a fixed r; the inputs' gradients. The first input
// reaches f as an activation (an op's output, as in a model), the others as leaves (parameters).
template <class F>
Grads run_op(F&& f, std::vector<Tensor> inputs, const Tensor& r) {
    for (auto& t : inputs) t = t.detach().requires_grad_();
    std::vector<Tensor> in = inputs;
    in[0] = mul(in[0], 1.0);
    Tensor out = f(in);
    out.backward(r);
    Grads g;
    g.out = out.detach();
    for (auto& t : inputs) g.grads.push_back(t.grad());
    return g;
}

}  // namespace

TEST_CASE("bf16 fallback: GEMM ops give the float32 path's numbers on the rounded activation", "[bf16][ops]") {
    // With the float32 kernels (a CPU without a fast bf16 dot product, forced here) and bf16
    // storage: the forward is float32's, the input gradient too, and the weight gradient is the
    // float32 one of the saved (rounded) input: to the bit.
    StateGuard restore;
    set_bf16_kernel(Bf16Kernel::Never);
    Generator gen(3);
    SECTION("linear") {
        Tensor x = randn({2, 7, 9, 48}, DType::F32, &gen), w = randn({40, 48}, DType::F32, &gen),
               b = randn({40}, DType::F32, &gen), r = randn({2, 7, 9, 40}, DType::F32, &gen);
        auto f = [](std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
        Grads ref = run_op(f, {x, w, b}, r), ref_r = run_op(f, {rounded(x), w, b}, r);
        PrecisionGuard p(Precision::BF16);
        Grads got = run_op(f, {x, w, b}, r);
        REQUIRE(same_bits(got.out, ref.out));
        REQUIRE(same_bits(got.grads[0], ref.grads[0]));
        REQUIRE(same_bits(got.grads[1], ref_r.grads[1]));
        REQUIRE(same_bits(got.grads[2], ref.grads[2]));
    }
    SECTION("conv2d, patchify and im2col") {
        for (int k : {2, 3}) {
            Tensor x = randn({2, 12, 10, 8}, DType::F32, &gen), w = randn({16, 8, k, k}, DType::F32, &gen),
                   b = randn({16}, DType::F32, &gen);
            const int stride = 2, pad = k == 3 ? 1 : 0;
            auto f = [&](std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], stride, pad); };
            Tensor r = randn({2, (12 + 2 * pad - k) / 2 + 1, (10 + 2 * pad - k) / 2 + 1, 16}, DType::F32, &gen);
            Grads ref = run_op(f, {x, w, b}, r);
            Grads ref_r = run_op(f, {rounded(x), w, b}, r);
            PrecisionGuard p(Precision::BF16);
            Grads got = run_op(f, {x, w, b}, r);
            REQUIRE(same_bits(got.out, ref.out));
            REQUIRE(same_bits(got.grads[0], ref.grads[0]));
            REQUIRE(same_bits(got.grads[1], ref_r.grads[1]));
        }
    }
}

TEST_CASE("bf16 storage: element-wise ops and norms use the rounded activation in backward", "[bf16][ops]") {
    // Forward unchanged; the gradients that read the saved input equal those computed from the
    // rounded input (layer norm: within float rounding, its statistics come from the forward).
    StateGuard restore;
    set_bf16_kernel(Bf16Kernel::Never);
    Generator gen(5);
    Tensor x = randn({3, 11, 13, 40}, DType::F32, &gen), r = randn({3, 11, 13, 40}, DType::F32, &gen);
    Tensor wdw = randn({40, 1, 7, 7}, DType::F32, &gen), bdw = randn({40}, DType::F32, &gen);
    Tensor lw = randn({40}, DType::F32, &gen), lb = randn({40}, DType::F32, &gen), s = randn({40}, DType::F32, &gen);
    Tensor gg = randn({40}, DType::F32, &gen), gb = randn({40}, DType::F32, &gen);
    struct Op {
        const char* name;
        std::function<Tensor(std::vector<Tensor>&)> f;
        std::vector<Tensor> in;
        bool exact;  // gradients to the bit
    };
    std::vector<Op> ops = {
        {"gelu", [](std::vector<Tensor>& in) { return gelu(in[0]); }, {x}, true},
        {"gelu tanh", [](std::vector<Tensor>& in) { return gelu(in[0], true); }, {x}, true},
        {"depthwise", [](std::vector<Tensor>& in) { return depthwise_conv2d(in[0], in[1], in[2], 1, 3); },
         {x, wdw, bdw}, true},
        {"channel_scale", [](std::vector<Tensor>& in) { return channel_scale(in[0], in[1]); }, {x, s}, true},
        {"mul", [](std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {x, r}, true},
        {"exp", [](std::vector<Tensor>& in) { return exp(in[0]); }, {x}, false},
        {"layer_norm", [](std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-6); }, {x, lw, lb},
         false},
        {"grn", [](std::vector<Tensor>& in) { return grn(in[0], in[1], in[2]); }, {x, gg, gb}, false},
    };
    for (auto& op : ops) {
        INFO(op.name);
        Grads ref = run_op(op.f, op.in, r);
        std::vector<Tensor> in_r = op.in;
        in_r[0] = rounded(in_r[0]);  // (the others are leaves: parameters, kept exact)
        Grads ref_r = run_op(op.f, in_r, r);
        PrecisionGuard p(Precision::BF16);
        Grads got = run_op(op.f, op.in, r);
        REQUIRE(same_bits(got.out, ref.out));
        for (size_t i = 0; i < got.grads.size(); ++i) {
            INFO("gradient " << i);
            if (op.exact)
                REQUIRE(same_bits(got.grads[i], ref_r.grads[i]));
            else
                REQUIRE(rel_err(got.grads[i], ref_r.grads[i]) < 1e-2);
            REQUIRE(rel_err(got.grads[i], ref.grads[i]) < 3e-2);  // and near float32's
        }
    }
}

namespace {

// The fused MLP's gradients in float64 from the rounded u and h its bf16 storage keeps.
struct MlpRef {
    std::vector<double> out, du, dw1, db1, dw2, db2, dgamma;
};
MlpRef mlp_reference(const Tensor& u, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                     const Tensor& gamma, const Tensor& res, const Tensor& g) {
    const int64_t C = u.size(-1), M = u.numel() / C, H = w1.size(0);
    const std::vector<double> uv = rounded(u).to_vector(), W1 = w1.to_vector(), B1 = b1.to_vector(),
                              W2 = w2.to_vector(), B2 = b2.to_vector(), ga = gamma.to_vector(),
                              R = res.to_vector(), G = g.to_vector();
    std::vector<double> h(M * H), a(M * H), y(M * C);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < H; ++k) {
            double s = B1[k];
            for (int64_t c = 0; c < C; ++c) s += u.data<float>()[i * C + c] * W1[k * C + c];  // forward: float32 u
            h[i * H + k] = bf16_to_float(float_to_bf16((float)s));
            a[i * H + k] = gelu_math::gelu(h[i * H + k]);
        }
    MlpRef r;
    r.out.resize(M * C), r.du.assign(M * C, 0), r.dw1.assign(H * C, 0), r.db1.assign(H, 0), r.dw2.assign(C * H, 0),
        r.db2.assign(C, 0), r.dgamma.assign(C, 0);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t c = 0; c < C; ++c) {
            double s = B2[c];
            for (int64_t k = 0; k < H; ++k) s += a[i * H + k] * W2[c * H + k];
            y[i * C + c] = s;
            r.out[i * C + c] = R[i * C + c] + ga[c] * s;
            r.dgamma[c] += G[i * C + c] * s;
            r.db2[c] += G[i * C + c] * ga[c];
        }
    std::vector<double> dh(M * H);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < H; ++k) {
            double s = 0;
            for (int64_t c = 0; c < C; ++c) {
                s += G[i * C + c] * ga[c] * W2[c * H + k];
                r.dw2[c * H + k] += G[i * C + c] * ga[c] * a[i * H + k];
            }
            dh[i * H + k] = s * gelu_math::gelu_grad(h[i * H + k]);
            r.db1[k] += dh[i * H + k];
        }
    for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < H; ++k)
            for (int64_t c = 0; c < C; ++c) {
                r.dw1[k * C + c] += dh[i * H + k] * uv[i * C + c];
                r.du[i * C + c] += dh[i * H + k] * W1[k * C + c];
            }
    return r;
}

double rel_err(const Tensor& a, const std::vector<double>& b) {
    return rel_err(a, from_vector(b, a.shape(), DType::F64));
}

}  // namespace

TEST_CASE("bf16: the fused MLP keeps u and h in bfloat16 and differentiates what it computed", "[bf16][ops]") {
    StateGuard restore;
    Generator gen(11);
    const int64_t C = 24, H = 96;
    Tensor u = randn({2, 5, 7, C}, DType::F32, &gen), res = randn({2, 5, 7, C}, DType::F32, &gen);
    Tensor w1 = randn({H, C}, DType::F32, &gen), b1 = randn({H}, DType::F32, &gen);
    Tensor w2 = randn({C, H}, DType::F32, &gen), b2 = randn({C}, DType::F32, &gen);
    Tensor gamma = randn({C}, DType::F32, &gen), g = randn({2, 5, 7, C}, DType::F32, &gen);
    w1 = mul(w1, 0.2), w2 = mul(w2, 0.2);
    const MlpRef ref = mlp_reference(u, w1, b1, w2, b2, gamma, res, g);
    auto f = [](std::vector<Tensor>& in) { return convnext_mlp(in[0], in[1], in[2], in[3], in[4], in[5], in[6]); };
    for_each_bf16_kernel([&](Bf16Kernel k) {
        PrecisionGuard p(Precision::BF16);
        reset_saved_stats();
        Grads got = run_op(f, {u, w1, b1, w2, b2, gamma, res}, g);
        const SavedStats st = saved_stats();
        REQUIRE(st.bf16_tensors == 2);  // u and h
        REQUIRE(st.bf16_bytes == (int64_t)u.numel() / C * (C + H) * 2);
        REQUIRE(st.kept_tensors == 0);
        // float32 kernels: float32 arithmetic on the rounded u and h; the bf16 kernel also rounds
        // the other operands (and dh) to bfloat16
        const double tol = k == Bf16Kernel::Never ? 2e-5 : 3e-2;
        CHECK(rel_err(got.out, ref.out) < tol);
        CHECK(rel_err(got.grads[0], ref.du) < tol);
        CHECK(rel_err(got.grads[1], ref.dw1) < tol);
        CHECK(rel_err(got.grads[2], ref.db1) < tol);
        CHECK(rel_err(got.grads[3], ref.dw2) < tol);
        CHECK(rel_err(got.grads[4], ref.db2) < tol);
        CHECK(rel_err(got.grads[5], ref.dgamma) < tol);
        CHECK(same_bits(got.grads[6], g));  // d residual
    });
}

TEST_CASE("bf16: the fused V2 MLP keeps u, h and the GRN output in bfloat16", "[bf16][ops]") {
    // h and the GRN output y exist only in bfloat16 (no float32 [M, K] temporaries): GEMM 1 writes
    // h rounded, GRN reads it and writes y rounded, GEMM 2 reads that y. So with the float32
    // kernels the forward is the float32 ops applied with those two roundings; the gradients, from
    // the rounded u, h and y, stay within bfloat16 error of float32's.
    StateGuard restore;
    Generator gen(12);
    const int64_t C = 24, K = 96;
    Tensor u = randn({2, 5, 7, C}, DType::F32, &gen), res = randn({2, 5, 7, C}, DType::F32, &gen);
    Tensor w1 = mul(randn({K, C}, DType::F32, &gen), 0.2), b1 = randn({K}, DType::F32, &gen);
    Tensor gg = randn({K}, DType::F32, &gen), gb = randn({K}, DType::F32, &gen);
    Tensor w2 = mul(randn({C, K}, DType::F32, &gen), 0.2), b2 = randn({C}, DType::F32, &gen);
    Tensor g = randn({2, 5, 7, C}, DType::F32, &gen);
    auto f = [](std::vector<Tensor>& in) {
        return convnextv2_mlp(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7]);
    };
    const std::vector<Tensor> inputs = {u, w1, b1, gg, gb, w2, b2, res};
    set_bf16_kernel(Bf16Kernel::Never);
    const Grads ref = run_op(f, inputs, g);
    auto rounded = [](const Tensor& t) { return t.to(DType::BF16).to(DType::F32); };
    Tensor rounded_forward;
    {
        NoGradGuard ng;
        Tensor h = rounded(linear(u, w1, b1));
        Tensor y = rounded(grn(gelu(h), gg.reshape({1, 1, 1, K}), gb.reshape({1, 1, 1, K})));
        rounded_forward = add(linear(y, w2, b2), res);
    }
    for_each_bf16_kernel([&](Bf16Kernel k) {
        PrecisionGuard p(Precision::BF16);
        reset_saved_stats();
        Grads got = run_op(f, inputs, g);
        const SavedStats st = saved_stats();
        REQUIRE(st.bf16_tensors == 3);  // u, h and y
        REQUIRE(st.bf16_bytes == (int64_t)u.numel() / C * (C + 2 * K) * 2);
        REQUIRE(st.kept_tensors == 0);
        if (k == Bf16Kernel::Never) {
            CHECK(rel_err(got.out, rounded_forward) < 1e-5);
            CHECK(rel_err(got.out, ref.out) > 1e-5);  // the roundings are really there
        }
        CHECK(rel_err(got.out, ref.out) < 3e-2);
        for (size_t i = 0; i + 1 < got.grads.size(); ++i) {
            INFO("gradient " << i);
            CHECK(rel_err(got.grads[i], ref.grads[i]) < 3e-2);
        }
        CHECK(same_bits(got.grads.back(), g));  // d residual
    });
}

// ---- a training step ------------------------------------------------------------------------------

namespace {

struct StepResult {
    double loss;
    NamedTensors grads, params;
};

// A small model of the family whose variant is named (its block: V1, or V2 with GRN).
StepResult train_step(Precision p, int64_t steps = 1, const std::string& variant = "convnext_atto") {
    PrecisionGuard guard(p);
    Generator gen(21);
    auto model = precision_check::small_convnext(variant, &gen);
    model->train();
    Tensor x = randn({4, 64, 64, 3}, DType::F32, &gen);
    const std::vector<int64_t> y = {1, 7, 3, 3};
    optim::AdamW opt(model->named_parameters(), optim::AdamWOptions(1e-3).weight_decay(0.05));
    StepResult r{};
    for (int64_t s = 0; s < steps; ++s) {
        opt.zero_grad();
        Tensor loss = cross_entropy(model->forward(x), y);
        loss.backward();
        if (s == 0) {
            r.loss = loss.item();
            for (auto& [name, t] : model->named_parameters()) r.grads.emplace_back(name, t.grad().clone());
        }
        opt.step();
    }
    for (auto& [name, t] : model->named_parameters()) r.params.emplace_back(name, t.clone());
    return r;
}

using precision_check::rel_l2;

}  // namespace

TEST_CASE("bf16: a training step of a small ConvNeXt stays within bfloat16 error of float32", "[bf16][model]") {
    StateGuard restore;
    const std::string variant = GENERATE(as<std::string>{}, "convnext_atto", "convnextv2_atto");
    INFO(variant);
    const StepResult ref = train_step(Precision::FP32, 1, variant);
    for_each_bf16_kernel([&](Bf16Kernel k) {
        reset_saved_stats();
        reset_gemm_call_counts();
        const StepResult got = train_step(Precision::BF16, 1, variant);
        REQUIRE(saved_stats().bf16_tensors > 0);
        REQUIRE(saved_stats().kept_tensors == 0);  // every activation was saved in bfloat16
        REQUIRE((gemm_call_counts().bf16 > 0) == (k == Bf16Kernel::Always && gemm_backend() == GemmBackend::Avx512));
        REQUIRE((gemm_call_counts().fp16 > 0) == (k == Bf16Kernel::Fp16 && gemm_backend() == GemmBackend::Avx512));
        CHECK(std::fabs(got.loss - ref.loss) < 1e-2 * std::fabs(ref.loss));
        CHECK(rel_l2(got.grads, ref.grads) < 5e-2);
        // one AdamW step of lr 1e-3 moves each weight by about lr * sign(grad): a gradient near 0
        // (V2's zero-initialised GRN) may flip sign; wrong gradients would flip half, ~7e-2 here
        CHECK(rel_l2(got.params, ref.params) < 2e-3);
        // parameters, their gradients and the optimiser's state stay float32
        for (auto& [name, t] : got.grads) REQUIRE(t.dtype() == DType::F32);
        for (auto& [name, t] : got.params) REQUIRE(t.dtype() == DType::F32);
    });
    // a few steps keep training the same way
    const StepResult ref3 = train_step(Precision::FP32, 3, variant), got3 = train_step(Precision::BF16, 3, variant);
    CHECK(rel_l2(got3.params, ref3.params) < 3e-3);
}

// ---- CLI ---------------------------------------------------------------------------------------------

namespace {
nlohmann::json last_json(const std::string& out) {
    const size_t b = out.rfind("\n{", out.size() - 2);
    return parse_json(out.substr(b == std::string::npos ? 0 : b + 1));
}
}  // namespace

TEST_CASE("bf16 CLI: bench --precision says which path ran", "[bf16][cli]") {
    const std::string args =
        " bench --model convnext_atto --batch-size 2 --image-size 32 --num-classes 10 --mode train --steps 1 "
        "--warmup 0 --threads 1 --json --precision ";
    auto fp32 = cli_test::shell(std::string(CONVNEXT_CLI) + args + "fp32", false);
    REQUIRE(fp32.code == 0);
    nlohmann::json j = last_json(fp32.output);
    CHECK(j.at("precision") == "fp32");
    CHECK(j.at("gemm_kernels") == "fp32");
    CHECK(j.at("saved_activations") == "fp32");
    CHECK(j.at("recompute") == "none");
    CHECK(j.at("recomputed_mb_per_step") == 0);
    CHECK(j.at("bf16_gemm_calls") == 0);
    CHECK(j.at("cpu_s_per_step").get<double>() > 0);
    const double saved_fp32 = j.at("saved_mb_per_step").get<double>();

    auto bf16 = cli_test::shell(std::string(CONVNEXT_CLI) + args + "bf16", false);
    REQUIRE(bf16.code == 0);
    j = last_json(bf16.output);
    CHECK(j.at("precision") == "bf16");
    CHECK(j.at("saved_activations") == "bf16");
    // by default bf16 also recomputes layer-norm and depthwise-conv outputs (ops/saved.h): what it
    // keeps plus half of what it recomputes is half of what fp32 keeps
    CHECK(j.at("recompute") == "cheap");
    const double recomputed = j.at("recomputed_mb_per_step").get<double>();
    CHECK(recomputed > 0.2 * saved_fp32);
    CHECK(j.at("saved_mb_per_step").get<double>() + recomputed / 2 == Approx(saved_fp32 / 2).epsilon(0.02));
    auto kept = cli_test::shell(std::string(CONVNEXT_CLI) + args + "bf16 --recompute none", false);
    REQUIRE(kept.code == 0);
    CHECK(last_json(kept.output).at("recompute") == "none");
    CHECK(last_json(kept.output).at("saved_mb_per_step").get<double>() == Approx(saved_fp32 / 2).epsilon(0.02));
    auto lean32 = cli_test::shell(std::string(CONVNEXT_CLI) + args + "fp32 --recompute cheap", false);
    REQUIRE(lean32.code == 0);
    CHECK(last_json(lean32.output).at("saved_mb_per_step").get<double>() + recomputed ==
          Approx(saved_fp32).epsilon(0.02));
    const PeakRates peak = compute_peak();
    const bool avx512 = gemm_avx512_supported() && std::getenv("CNX_GEMM") == nullptr;
    const bool pays = avx512 && gemm_bf16_supported() && peak.bf16_core >= 1.5 * peak.fp32_core;
    const bool fp16 = avx512 && !pays && gemm_fp16_supported() && peak.fp16_core >= 1.5 * peak.fp32_core;
    const char* kernel = pays ? "bf16" : fp16 ? "fp16" : "fp32";
    CHECK(j.at("gemm_kernels") == kernel);
    CHECK(j.at("matmul_precision") == kernel);
    CHECK((j.at("fp16_gemm_calls").get<int64_t>() > 0) == fp16);

    auto never = cli_test::shell(std::string("CNX_BF16=never ") + CONVNEXT_CLI + args + "bf16", false);
    REQUIRE(never.code == 0);
    j = last_json(never.output);
    CHECK(j.at("gemm_kernels") == "fp32");
    CHECK(j.at("saved_activations") == "bf16");

    // the PyTorch peer's spellings
    const std::string peer_args = " bench --model convnext_atto --batch-size 2 --image-size 32 --num-classes 10 "
                                  "--mode infer --steps 1 --warmup 0 --threads 1 --json ";
    auto peer = cli_test::shell(std::string(CONVNEXT_CLI) + peer_args + "--bf16 --channels-last", false);
    REQUIRE(peer.code == 0);
    j = last_json(peer.output);
    CHECK(j.at("precision") == "bf16");
    CHECK(j.at("bf16") == true);
    CHECK(j.at("channels_last") == true);
    CHECK(last_json(cli_test::shell(std::string(CONVNEXT_CLI) + peer_args, false).output).at("bf16") == false);

    auto bad = cli_test::run(args + "fp16");
    CHECK(bad.code != 0);
    CHECK(bad.output.find("--precision") != std::string::npos);
}

TEST_CASE("bf16 CLI: convert --dtype bf16 writes half-size weights that load everywhere", "[bf16][cli]") {
    const test_util::TempDir dir;
    const std::string fp32 = dir / "w32.safetensors", half = dir / "w16.safetensors", back = dir / "back.safetensors";
    models::ConvNeXtOptions o;
    o.num_classes = 3;  // the fixture folder's classes
    Generator gen(4);
    auto model = models::create_model("convnext_atto", o, &gen);
    io::save_safetensors(fp32, model->state_dict());

    auto r = cli_test::run("convert " + fp32 + " " + half + " --dtype bf16");
    REQUIRE(r.code == 0);
    CHECK(r.output.find("bfloat16 values") != std::string::npos);
    const double ratio = (double)fs::file_size(half) / (double)fs::file_size(fp32);
    CHECK(ratio > 0.49);
    CHECK(ratio < 0.52);
    io::SafetensorsHeader h = io::read_safetensors_header(half);
    for (auto& e : h.entries) REQUIRE(e.dtype == "BF16");
    REQUIRE(h.metadata.at("dtype") == "bfloat16");
    // convert back: float32, the rounded values
    REQUIRE(cli_test::run("convert " + half + " " + back).code == 0);
    io::SafetensorsFile b = io::load_safetensors(back);
    for (auto& [name, t] : model->state_dict()) REQUIRE(same_bits(b.get(name), rounded(t)));

    // predict with the bf16 file gives the float32 file's answers (to bf16 accuracy), in both precisions
    const std::string data = std::string(CONVNEXT_SOURCE_DIR) + "/tests/fixtures/train_folder";
    const std::string img = data + "/circles/img_00.png";
    auto probs = [&](const std::string& weights, const std::string& precision) {
        auto p = cli_test::run("--threads 1 predict --model convnext_atto --weights " + weights + " --image " + img +
                                   " --resize 40 --crop 32 --topk 3 --json --precision " + precision,
                               false);
        INFO(p.output);
        REQUIRE(p.code == 0);
        std::vector<double> v(3);
        const nlohmann::json j = last_json(p.output);  // (a range-for over a temporary's member dangles)
        for (auto& e : j.at("top")) v[e.at("index").get<int>()] = e.at("prob").get<double>();
        return v;
    };
    const std::vector<double> p32 = probs(fp32, "fp32");
    for (const auto& p : {probs(half, "fp32"), probs(half, "bf16")})
        for (int c = 0; c < 3; ++c) CHECK(p[c] == Approx(p32[c]).margin(0.02));

    // eval and train --weights read it too
    auto e = cli_test::run("--threads 1 eval --model convnext_atto --weights " + half + " --data " + data +
                           " --image-size 32 --precision bf16");
    INFO(e.output);
    CHECK(e.code == 0);
    auto t = cli_test::run("--threads 1 train --model convnext_atto --weights " + half + " --data " + data +
                           " --image-size 32 --epochs 1 --batch-size 2 --train-limit 4 --val-rate 0 --workers 1 "
                           "--precision bf16 --show-predictions 0 --out " + (dir / "run"));
    INFO(t.output);
    CHECK(t.code == 0);
    CHECK(t.output.find("loaded") != std::string::npos);
    // and gradcam
    auto gc = cli_test::run("--threads 1 gradcam --model convnext_atto --weights " + half + " --image " + img +
                            " --resize 40 --crop 32 --target-layer stages.2 --json --precision bf16");
    INFO(gc.output);
    CHECK(gc.code == 0);
    CHECK(gc.output.find("\"cam\"") != std::string::npos);

    // a file written by convnext train keeps its model metadata through convert --dtype bf16, so
    // predict needs no --model for it
    const std::string best = dir / "run/best.safetensors", best16 = dir / "best16.safetensors";
    if (fs::exists(best)) {
        REQUIRE(cli_test::run("convert " + best + " " + best16 + " --dtype bf16").code == 0);
        auto p = cli_test::run("--threads 1 predict --weights " + best16 + " --image " + img + " --json");
        INFO(p.output);
        CHECK(p.code == 0);
    }
}

TEST_CASE("bf16 CLI: --precision on train, eval, predict, gradcam and bench", "[bf16][cli]") {
    for (const char* cmd : {"train", "eval", "predict", "gradcam", "bench"}) {
        INFO(cmd);
        auto help = cli_test::run(std::string(cmd) + " --help");
        REQUIRE(help.code == 0);
        CHECK(help.output.find("--precision") != std::string::npos);
        auto bad = cli_test::run(std::string(cmd) + " --precision fp16");
        CHECK(bad.code == 2);  // a usage error
        CHECK(bad.output.find("--precision") != std::string::npos);
    }
}
