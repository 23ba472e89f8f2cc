// The bf16 GEMM behind MatmulPrecision::BFloat16 (ops/gemm.h): the blocked driver of
// ops/kernels/gemm_avx512_impl.h with op(A) and op(B) rounded to bfloat16 (nearest-even, by
// vcvtne2ps2bf16) while they are packed, and a micro-kernel of vdpbf16ps, which multiplies pairs
// of bf16 along k and accumulates into float32 lanes. On CPUs whose bf16 dot product runs at twice
// the FMA rate (Zen 4: 2 x 32 FLOP/cycle) it has the float32 kernel's structure at twice the
// arithmetic rate per instruction, with half the bytes per packed panel.
//
// Packed layouts, one uint32 = two bf16 of consecutive depths k (even, low half) and k+1:
//   B panel: [ceil(kc/2)][NR]      A panel: [ceil(kc/2)][MR]   (always packed: A is converted)
// An odd depth pads the last pair with a zero in both operands. Operands stored in bfloat16 (saved
// activations, ops/saved.h) are interleaved into pairs as they are, with no rounding.
//
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics when they are
// compiled through a target pragma rather than -mavx512f.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <stdexcept>

#include "core/cpu_info.h"
#include "ops/kernels/sgemm_avx512.h"

// GCC learned AVX512_BF16 in version 10, clang in 9.
#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define CNX_SBGEMM 1
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "core/storage.h"
#include "ops/kernels/gelu_math.h"
#include "ops/parallel.h"
#else
#define CNX_SBGEMM 0
#endif

namespace cnx::kernels {

bool sbgemm_avx512_available() {
#if CNX_SBGEMM
    return cpu_info().avx512_bf16;
#else
    return false;
#endif
}

#if CNX_SBGEMM
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma,bmi,bmi2")

}  // namespace cnx::kernels
#include "ops/kernels/gemm_avx512_impl.h"
namespace cnx::kernels {

namespace {

// Two float vectors (depths k: lo, k+1: hi) -> 16 pairs (lo[i], hi[i]) as bf16, rounded to
// nearest even: vcvtne2ps2bf16 puts lo's 16 values in the low half, hi's in the high half, and a
// word permutation interleaves them.
inline __m512i pairs_bf16(__m512 lo, __m512 hi) {
    const __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                                22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(interleave, halves);
}

// 16 lanes of 32-bit pairs from two rows of 16 values at depths k (low half) and k+1 (high half),
// the lanes in m present (the rest zero); r1 null: depth k+1 is past the end (zero). Float rows
// (and GELU'd ones) are rounded here; bfloat16 rows are interleaved as they are.
template <class S>
inline __m512i row_pairs(const S* r0, const S* r1, __mmask16 m, bool gelu) {
    if (!m) return _mm512_setzero_si512();
    if constexpr (std::is_same<S, BFloat16>::value) {
        if (!gelu) {
            auto ld = [m](const BFloat16* p) {
                return m == 0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(m, p);
            };
            const __m512i lo = _mm512_cvtepu16_epi32(ld(r0));
            const __m512i hi = r1 ? _mm512_cvtepu16_epi32(ld(r1)) : _mm512_setzero_si512();
            return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        }
    }
    if (gelu)  // GELU(0) = 0: absent lanes stay zero
        return pairs_bf16(gelu16(r0, m), r1 ? gelu16(r1, m) : _mm512_setzero_ps());
    return pairs_bf16(load16(r0, m), r1 ? load16(r1, m) : _mm512_setzero_ps());
}

// 32 consecutive values (the first n present) -> 16 bf16 pairs in depth order, through GELU when
// asked. Stored bfloat16 already is in that order: one load.
template <class S>
inline __m512i run_pairs(const S* p, int64_t n, bool gelu) {
    if constexpr (std::is_same<S, BFloat16>::value) {
        if (!gelu)
            return n >= 32 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16((__mmask32)((1ull << n) - 1), p);
    }
    auto get = [gelu](const S* q, __mmask16 m) { return gelu ? gelu16(q, m) : load16(q, m); };
    const __m512 lo = get(p, lanes(n)), hi = n > 16 ? get(p + 16, lanes(n - 16)) : _mm512_setzero_ps();
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // GELU(0) = 0: absent lanes stay zero
}

// 16 rows of 16 uint32 lanes transposed, as floats (the shuffles only move 32-bit lanes).
inline void transpose16_i(__m512i v[16]) {
    __m512 f[16];
    for (int i = 0; i < 16; ++i) f[i] = _mm512_castsi512_ps(v[i]);
    transpose16(f);
    for (int i = 0; i < 16; ++i) v[i] = _mm512_castps_si512(f[i]);
}

__attribute__((noinline)) void micro_kernel_bf16(int64_t kcu, const uint32_t* a, const uint32_t* bp, float* tile,
                                                 const KernelHints& hints) {
    __m512 c[MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < kcu; ++kp, a += MR, bp += NR) {
        prefetch_step(hints, kp);
        const __m512bh b0 = (__m512bh)_mm512_load_si512(bp), b1 = (__m512bh)_mm512_load_si512(bp + 16);
#pragma GCC unroll 14
        for (int r = 0; r < MR; ++r) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
            c[r][0] = _mm512_dpbf16_ps(c[r][0], av, b0);
            c[r][1] = _mm512_dpbf16_ps(c[r][1], av, b1);
        }
    }
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
        _mm512_store_ps(tile + r * NR, c[r][0]);
        _mm512_store_ps(tile + r * NR + 16, c[r][1]);
    }
}

struct Bf16Kernels {
    using P = uint32_t;
    static constexpr int KU = 2;
    static constexpr int kScaleRows = 0;
    static constexpr int kLayout = 2;

    static int64_t a_buffer_size(int64_t kc) { return (kc + 31) / 32 * 16 * MR + 16; }

    // NR-wide panel of op(B), depths [pc, pc+kc), columns [j, j+nr): dst[kp][jj] = the pair of
    // depths pc+2kp, pc+2kp+1 of column j+jj (zero past kc and past nr). S: how B is stored.
    template <class S>
    static void pack_b_from(const GemmArgs& g, const S* B, int64_t pc, int64_t kc, int64_t j, int nr, uint32_t* dst) {
        const int64_t kcu = (kc + 1) / 2;
        if (!g.tb) {  // op(B)(k, j) = B[k * ldb + j]: rows k and k+1, 16 columns at a time
            const __mmask16 m[2] = {lanes(nr), lanes(nr - 16)};
            for (int64_t kp = 0; kp < kcu; ++kp) {
                const S* r0 = B + (pc + 2 * kp) * g.ldb + j;
                const bool has1 = 2 * kp + 1 < kc;
                for (int h = 0; h < 2; ++h)
                    _mm512_store_si512(dst + kp * NR + 16 * h,
                                       row_pairs(r0 + 16 * h, has1 ? r0 + g.ldb + 16 * h : nullptr, m[h], g.gelu_b));
            }
            return;
        }
        // op(B)(k, j) = B[j * ldb + k]: each column's depths are contiguous, so 32 of them convert
        // to 16 pairs in place; 16 columns x 16 pairs are then transposed to [pair][column].
        for (int h = 0; h < 2; ++h) {
            for (int64_t k = 0; k < kc; k += 32) {
                __m512i v[16];
                for (int i = 0; i < 16; ++i) {
                    const int64_t col = 16 * h + i;
                    v[i] = col < nr ? run_pairs(B + (j + col) * g.ldb + pc + k, kc - k, g.gelu_b)
                                    : _mm512_setzero_si512();
                }
                transpose16_i(v);
                const int64_t pairs = std::min<int64_t>(16, kcu - k / 2);
                for (int q = 0; q < pairs; ++q) _mm512_store_si512(dst + (k / 2 + q) * NR + 16 * h, v[q]);
            }
        }
    }
    static void pack_b(const GemmArgs& g, int64_t pc, int64_t kc, int64_t j, int nr, uint32_t* dst) {
        with_b(g, [&](auto* B) { pack_b_from(g, B, pc, kc, j, nr, dst); });
    }

    // Rows [i0, i0+mr) of op(A), depths [pc, pc+kc), as [kp][r] pairs (rows past mr zero). Stores
    // are 16 lanes in pair order, each overwriting the 2 lanes past its row that the next fills.
    template <class S>
    static void prepare_a_from(const GemmArgs& g, const S* A, int64_t i0, int mr, int64_t pc, int64_t kc,
                               uint32_t* buf) {
        const int64_t kcu = (kc + 1) / 2;
        if (g.ta) {  // op(A)(r, k) = A[k * lda + i0 + r]: rows k and k+1 of A, MR values each
            const __mmask16 m = i0 + 16 <= g.M ? (__mmask16)0xFFFF : lanes(mr);  // plain loads where possible
            for (int64_t kp = 0; kp < kcu; ++kp) {
                const S* r0 = A + (pc + 2 * kp) * g.lda + i0;
                _mm512_storeu_si512(buf + kp * MR, row_pairs(r0, 2 * kp + 1 < kc ? r0 + g.lda : nullptr, m, g.gelu_a));
            }
            return;
        }
        // A stored [M, K]: each row's depths are contiguous; rows x pairs transposed to [pair][row].
        for (int64_t k = 0; k < kc; k += 32) {
            __m512i v[16];
            for (int r = 0; r < 16; ++r)
                v[r] = r < mr ? run_pairs(A + (i0 + r) * g.lda + pc + k, kc - k, g.gelu_a) : _mm512_setzero_si512();
            transpose16_i(v);
            const int64_t pairs = std::min<int64_t>(16, kcu - k / 2);
            for (int q = 0; q < pairs; ++q) _mm512_storeu_si512(buf + (k / 2 + q) * MR, v[q]);
        }
    }
    static APanel<uint32_t> prepare_a(const GemmArgs& g, int64_t i0, int mr, int64_t pc, int64_t kc,
                                      uint32_t* buf) {
        with_a(g, [&](auto* A) { prepare_a_from(g, A, i0, mr, pc, kc, buf); });
        return {buf, MR, true};
    }

    static bool b_in_place(const GemmArgs&) { return false; }  // B is converted: always packed

    static void kernel(const APanel<uint32_t>& a, int64_t kcu, const uint32_t* bp, int64_t, float* tile,
                       const KernelHints& h) {
        micro_kernel_bf16(kcu, a.p, bp, tile, h);
    }
};

}  // namespace

void sbgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                   float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                   const GemmBlocking& bl) {
    const GemmArgs g = kernel_args(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b);
    gemm_blocked<Bf16Kernels>(g, 2 * bl.kc, bl.nc);
}

#pragma GCC pop_options
#else
void sbgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const KernelOperands&, float, float*, int64_t,
                   const GemmEpilogue<float>&, bool, bool, const GemmBlocking&) {
    throw std::logic_error("sbgemm_avx512: this build has no AVX512_BF16 kernel");
}
#endif

}  // namespace cnx::kernels
