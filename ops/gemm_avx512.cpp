// AVX-512 SGEMM for the shapes ConvNeXt runs: M = N·H·W pixels (hundreds to tens of thousands),
// K and N = C or 4C (40..3072), and the weight-gradient GEMMs whose K is the pixel count. The
// blocked driver, prefetching and epilogue are in ops/kernels/gemm_avx512_impl.h (shared with the
// bf16 kernel); this file holds the float32 packing and micro-kernels.
//
// The A row panel is read by the micro-kernel either in place (A stored [M,K]: MR rows of stride
// lda; A stored [K,M]: MR contiguous values per k) or from a copy in the same layout:
//   - rows past M (the last panel) and GELU'd operands (gelu_a) are always copied;
//   - A stored [M,K] is copied when its row stride maps the MR rows onto few L1 sets (a multiple
//     of 1 KB: the 3072- and 1536-wide activations of ConvNeXt's last stages, where in-place reads
//     kept missing L1 and ran at 70% of peak);
//   - A stored [K,M] is always copied: its k rows lie lda apart, so a 256-deep panel read in
//     place spans 256 lines spread over few sets.
// The copy is MR x kc floats per row panel, reused across every column panel of the block.
// B stored [N,K] (the weights of x W^T), GELU'd B and partial column panels are packed into
// NR-wide panels [kc][NR]; B stored [K,N] is read in place (b_in_place below).
//
// The kernels are compiled for AVX-512 through a target pragma, the rest of the library for the
// build's baseline; ops/gemm.cpp calls in only after checking the CPU at run time.
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) when they are compiled through a target pragma rather than -mavx512f.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <stdexcept>

#include "core/cpu_info.h"
#include "ops/kernels/sgemm_avx512.h"

#if defined(__x86_64__)
#define CNX_SGEMM_X86 1
// Everything the kernels include comes in before the target pragma, so no library template is
// instantiated for AVX-512 here and then picked by the linker for code that runs anywhere.
#include <immintrin.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "core/storage.h"
#include "ops/kernels/gelu_math.h"
#include "ops/parallel.h"
#else
#define CNX_SGEMM_X86 0
#endif

namespace cnx::kernels {

bool sgemm_avx512_available() {
#if CNX_SGEMM_X86
    return cpu_info().avx512;
#else
    return false;
#endif
}

GemmBlocking avx512_default_blocking(const CpuInfo& cpu) {
    constexpr int64_t kTileRows = 14, kTileCols = 32;  // MR, NR of the micro-kernel
    GemmBlocking b;
    // The A row panel (14 x kc floats) within half of L1d, capped at 256: a deeper block keeps
    // more of C's round trips away, but on the 48 KB-L1 Zen 5 256 was the best measured.
    b.kc = std::clamp<int64_t>(cpu.l1d_bytes / 2 / (kTileRows * 4) / 16 * 16, 64, 256);
    // The packed B block (kc x nc floats) within half of L2.
    b.nc = std::max<int64_t>(kTileCols, cpu.l2_bytes / 2 / (b.kc * 4) / kTileCols * kTileCols);
    return b;
}

#if CNX_SGEMM_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2")

}  // namespace cnx::kernels
#include "ops/kernels/gemm_avx512_impl.h"
namespace cnx::kernels {

namespace {

// The packed B panel streams from L2 at two cache lines per depth step. Requesting them into L1
// kBAheadRows steps early (as BLIS kernels do): on an Intel Xeon (family 6 model 207, 48 KB L1d),
// where the profile showed the micro-kernel waiting at its B loads, ConvNeXt-T training went
// +4-6% and batch-8 inference +3% end to end, atto/32 unchanged; 4 and 16 rows ahead were no
// better. 8 rows = 1 KB ahead, small next to the A panel in L1. Not yet measured on a Zen.
constexpr int kBAheadRows = 8;
inline void prefetch_b_ahead(const float* bp, int64_t ldb) {
    _mm_prefetch((const char*)(bp + kBAheadRows * ldb), _MM_HINT_T0);
    _mm_prefetch((const char*)(bp + kBAheadRows * ldb + 16), _MM_HINT_T0);
}

// tile[r][0..NR) = sum over k < kc of op(A)(r, k) * bp[k][0..NR).
//   KMAJOR = false: op(A)(r, k) = a[r * lda + k]   (A stored [M, K], or its row copy)
//   KMAJOR = true:  op(A)(r, k) = a[k * lda + r]   (A stored [K, M], or its copy)
template <bool KMAJOR>
__attribute__((noinline)) void micro_kernel(int64_t kc, const float* a, int64_t lda, const float* bp, int64_t ldb,
                                            float* tile, const KernelHints& hints) {
    __m512 c[MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
    if (KMAJOR) {
        for (int64_t k = 0; k < kc; ++k, a += lda, bp += ldb) {
            prefetch_step(hints, k);
            prefetch_b_ahead(bp, ldb);
            const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 14
            for (int r = 0; r < MR; ++r) {
                const __m512 av = _mm512_set1_ps(a[r]);
                c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
            }
        }
    } else {
        // Rows 3q, 3q+1, 3q+2 as p[q][0], p[q][lda], p[q][2 lda]: x86 addressing takes lda*4 and
        // lda*8 as a scaled index, so 5 pointers + lda cover 14 rows without spilling registers.
        const float* p[5];
#pragma GCC unroll 5
        for (int q = 0; q < 5; ++q) p[q] = a + 3 * q * lda;
        for (int64_t k = 0; k < kc; ++k, bp += ldb) {
            prefetch_step(hints, k);
            prefetch_b_ahead(bp, ldb);
            const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 14
            for (int r = 0; r < MR; ++r) {
                const __m512 av = _mm512_set1_ps(p[r / 3][(r % 3) * lda + k]);
                c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
            }
        }
    }
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
        _mm512_store_ps(tile + r * NR, c[r][0]);
        _mm512_store_ps(tile + r * NR + 16, c[r][1]);
    }
}

// Row stride of the copied A panel (A stored [M,K]): kc rounded up to 16, plus one cache line so
// consecutive rows fall in different L1 sets.
inline int64_t a_copy_ld(int64_t kc) { return (kc + 15) / 16 * 16 + 16; }

// In-place reads of A stored [M,K] need MR rows to land in different L1 sets: not so when the
// row stride is a multiple of 1 KB (16 lines: 14 rows in at most 4 sets of an 8-way L1).
inline bool a_rows_alias(int64_t lda) { return lda % 256 == 0; }

struct Fp32Kernels {
    using P = float;
    static constexpr int KU = 1;
    static constexpr int kScaleRows = 0;
    static constexpr int kLayout = 1;

    static int64_t a_buffer_size(int64_t kc) { return std::max<int64_t>(MR * a_copy_ld(kc), kc * MR + 16); }

    static void pack_b(const GemmArgs& g, int64_t pc, int64_t kc, int64_t j, int nr, float* dst) {
        with_b(g, [&](auto* B) { pack_b_f32(g, B, pc, kc, j, nr, dst); });
    }

    // Rows [i0, i0+mr) of op(A), depth [pc, pc+kc): in place, or copied (zero-padded to MR rows,
    // through GELU when gelu_a, widened from bfloat16 when A is stored so) into buf in the same layout.
    template <class S>
    static APanel<float> prepare_a_from(const GemmArgs& g, const S* A, int64_t i0, int mr, int64_t pc, int64_t kc,
                                        float* buf) {
        if (!g.ta) {
            if constexpr (std::is_same<S, float>::value)
                if (mr == MR && !g.gelu_a && !a_rows_alias(g.lda)) return {A + i0 * g.lda + pc, g.lda, false};
            const int64_t ld = a_copy_ld(kc);
            for (int r = 0; r < MR; ++r) {
                float* d = buf + r * ld;
                if (r >= mr) {
                    std::fill(d, d + kc, 0.0f);
                    continue;
                }
                const S* src = A + (i0 + r) * g.lda + pc;
                auto get = [&](int64_t k, __mmask16 m) { return g.gelu_a ? gelu16(src + k, m) : load16(src + k, m); };
                int64_t k = 0;
                for (; k + 16 <= kc; k += 16) _mm512_storeu_ps(d + k, get(k, 0xFFFF));
                if (k < kc) _mm512_mask_storeu_ps(d + k, lanes(kc - k), get(k, lanes(kc - k)));
            }
            return {buf, ld, false};
        }
        // [kc][MR]: 16-lane stores in k order, each overwriting the 2 lanes past its row that the
        // next one fills (buf has 16 floats of slack for the last). Plain 16-float loads where the
        // row has them (a masked load cost ~8% of a weight-gradient GEMM on Zen 4).
        const S* src = A + pc * g.lda + i0;
        const __mmask16 m = i0 + 16 <= g.M ? (__mmask16)0xFFFF : lanes(mr);
        for (int64_t k = 0; k < kc; ++k, src += g.lda)
            _mm512_storeu_ps(buf + k * MR, g.gelu_a ? gelu16(src, m) : load16(src, m));
        return {buf, MR, true};
    }
    static APanel<float> prepare_a(const GemmArgs& g, int64_t i0, int mr, int64_t pc, int64_t kc, float* buf) {
        APanel<float> out;
        with_a(g, [&](auto* A) { out = prepare_a_from(g, A, i0, mr, pc, kc, buf); });
        return out;
    }

    // B stored [K,N] in float32 is read in place (full panels: 32 contiguous floats per k, ldb
    // apart): its panels stream from L2 either way, and the weight-gradient GEMMs, whose B is a
    // whole activation gradient read by only a few row panels, saved their packing pass (+3-5%).
    static bool b_in_place(const GemmArgs& g) { return !g.tb && !g.gelu_b && !g.b_bf16; }

    static void kernel(const APanel<float>& a, int64_t kc, const float* bp, int64_t ldb, float* tile,
                       const KernelHints& h) {
        if (a.kmajor)
            micro_kernel<true>(kc, a.p, a.ld, bp, ldb, tile, h);
        else
            micro_kernel<false>(kc, a.p, a.ld, bp, ldb, tile, h);
    }
};

}  // namespace

void sgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab, float beta,
                  float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                  const GemmBlocking& bl) {
    const GemmArgs g = kernel_args(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b);
    gemm_blocked<Fp32Kernels>(g, bl.kc, bl.nc);
}

#pragma GCC pop_options
#else
void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const KernelOperands&, float, float*, int64_t,
                  const GemmEpilogue<float>&, bool, bool, const GemmBlocking&) {
    throw std::logic_error("sgemm_avx512: not an x86-64 build");
}
#endif

}  // namespace cnx::kernels
