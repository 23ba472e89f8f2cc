// The fp16-FMA GEMM behind MatmulPrecision::BFloat16 (ops/gemm.h) on CPUs whose half-precision
// FMA (AVX512_FP16 vfmadd231ph: 32 lanes) runs at twice the float32 rate while their bf16 dot
// product does not pay (Intel Xeons since Sapphire Rapids without AMX: vdpbf16ps measured at 0.47x
// the float32 FMA rate, vfmadd231ph at 2x). The blocked driver is that of
// ops/kernels/gemm_avx512_impl.h; this file holds the packing and the micro-kernel.
//
// Numbers. A plain fp16 GEMM would lose too much: fp16 holds 5 exponent bits, and a long sum in
// 11 significant bits drifts. So:
//   - op(A) and op(B) are rounded to fp16 (nearest even) after scaling by powers of two: each row
//     of an A panel and each column of a B panel (over one depth block) so its largest magnitude
//     lies in [2^kExpA, 2^(kExpA+1)) / [2^kExpB, ...). Powers of two are exact, and every value
//     within 2^-19 of its row's (column's) largest keeps its 11 significant bits -- 3 more than the
//     bfloat16 rounding that this precision promises.
//   - Each fp16 lane sums at most kFlushSteps products, then is widened and added to a float32
//     tile (the bound kExpA + kExpB + log2(kFlushSteps) + 2 <= 15 keeps such a sum below 65504:
//     no overflow whatever the data); the depth block's float32 sums are unscaled at the end.
// Against float64 the root-mean-square error is about half of what rounding the operands to
// bfloat16 alone gives (tests/test_gemm_fp16.cpp requires < 0.75x), so below the bf16 kernel's.
//
// Packed layouts, one uint32 = two fp16 of consecutive depths k (even, low half) and k+1, as the
// bf16 kernel's: B panel [ceil(kc/2)][NR] then one row of NR floats (each column's scale
// exponent); A panel [ceil(kc/2)][MR] then, 16 elements on, MR floats (each row's). The kernel
// multiplies pairs lane by lane, so even and odd depths accumulate in neighbouring fp16 lanes and
// are added only at the end, in float32.
//
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics when they are
// compiled through a target pragma rather than -mavx512f.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <stdexcept>

#include "core/cpu_info.h"
#include "ops/kernels/sgemm_avx512.h"

// GCC 12 compiles AVX512_FP16 code under a target pragma; clang 14 declares the fp16 vector types
// only when the whole file is compiled for AVX512_FP16 (elsewhere: no fp16 kernel, bf16 precision
// falls back as on a CPU without it).
#if defined(__x86_64__) && ((!defined(__clang__) && __GNUC__ >= 12) || (defined(__clang__) && defined(__AVX512FP16__)))
#define CNX_HGEMM 1
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
#define CNX_HGEMM 0
#endif

namespace cnx::kernels {

bool hgemm_avx512_available() {
#if CNX_HGEMM
    return cpu_info().avx512_fp16;
#else
    return false;
#endif
}

#if CNX_HGEMM
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512fp16,avx2,fma,bmi,bmi2,f16c")

}  // namespace cnx::kernels
#include "ops/kernels/gemm_avx512_impl.h"
namespace cnx::kernels {

namespace {

// Depth pairs summed in fp16 before the float32 tile takes them (each lane: one product per
// pair). 32 ran the micro-kernel at 1.78x the float32 kernel on the Xeon above, 16 at 1.49x,
// 64 at 1.97x, with twice the rounding per partial sum; the error stays ~0.55x of bf16 rounding's.
constexpr int kFlushSteps = 64;
// Largest scaled magnitudes: below 2^(kExpA+1) in A, 2^(kExpB+1) in B, so that kFlushSteps
// products sum below 2^(kExpA + kExpB + 2 + log2 kFlushSteps) = 2^15 < 65504.
constexpr int kExpA = 4, kExpB = 3;
static_assert((1 << (kExpA + kExpB + 2)) * kFlushSteps <= 32768, "an fp16 partial sum could overflow");

// Per lane: the power-of-two exponent s that brings max |x| into [2^target, 2^(target+1)) (0 for
// an all-zero lane, or one holding Inf/NaN, which then propagate as they would in float32).
inline __m512 scale_exponent(__m512 maxabs, int target) {
    const __m512 e = _mm512_getexp_ps(maxabs);  // floor(log2 x); -inf for 0, +inf for inf
    const __mmask16 finite = _mm512_cmp_ps_mask(maxabs, _mm512_set1_ps(0.0f), _CMP_GT_OQ) &
                             _mm512_cmp_ps_mask(maxabs, _mm512_set1_ps(3.4e38f), _CMP_LE_OQ);
    return _mm512_maskz_sub_ps(finite, _mm512_set1_ps((float)target), e);
}

// Rows lo (depth k) and hi (depth k+1) of 16 lanes, scaled by 2^s and rounded to fp16, as 16
// pairs (lo in the low half of each 32-bit lane).
inline __m512i pairs_fp16(__m512 lo, __m512 hi, __m512 s) {
    const __m256i l = _mm512_cvtps_ph(_mm512_scalef_ps(lo, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i h = _mm512_cvtps_ph(_mm512_scalef_ps(hi, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_or_si512(_mm512_cvtepu16_epi32(l), _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline __m512 abs_max(__m512 m, __m512 v) { return _mm512_max_ps(m, _mm512_abs_ps(v)); }

// A float32 staging area for a panel before it is scaled and rounded (one per thread).
inline float* stage(int64_t floats) {
    static thread_local AlignedBuffer<float> buf;
    return buf.get(floats);
}

// Pairs of depths lane by lane, fp16 FMAs into 2 x MR accumulators of 32 lanes (16 columns x
// 2 depths each), widened into a float32 tile every kFlushSteps pairs; at the end even and odd
// depths are added and the row and column scales undone.
//   KMAJOR = true:  row r's pair kp at a[kp * MR + r], its scale exponents after the panel
//   KMAJOR = false: at a[r * lda + kp], its scale exponents at a + MR * lda
template <bool KMAJOR>
__attribute__((noinline)) void micro_kernel_fp16(int64_t kcu, const uint32_t* a, int64_t lda, const uint32_t* bp,
                                                 float* tile, const KernelHints& hints) {
    const float* a_shift = (const float*)(KMAJOR ? a + kcu * MR + 16 : a + MR * lda);
    const float* b_shift = (const float*)(bp + kcu * NR);
    // Rows 3q, 3q+1, 3q+2 at p[q][0], p[q][lda], p[q][2 lda] (as the float32 kernel's: 5 pointers
    // and scaled indices cover 14 rows without spilling).
    const uint32_t* p[5];
#pragma GCC unroll 5
    for (int q = 0; q < 5; ++q) p[q] = a + 3 * q * lda;
    alignas(64) float acc[MR][2 * NR];  // [row][column * 2 + depth parity]
    __m512h c[MR][2];
    for (int64_t k0 = 0; k0 < kcu; k0 += kFlushSteps) {
#pragma GCC unroll 14
        for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ph();
        const int64_t k1 = std::min<int64_t>(kcu, k0 + kFlushSteps);
        for (int64_t kp = k0; kp < k1; ++kp, bp += NR) {
            prefetch_step(hints, kp);
            _mm_prefetch((const char*)(bp + 8 * NR), _MM_HINT_T0);  // as the float32 kernel's B
            _mm_prefetch((const char*)(bp + 8 * NR + 16), _MM_HINT_T0);
            const __m512h b0 = _mm512_castsi512_ph(_mm512_load_si512(bp));
            const __m512h b1 = _mm512_castsi512_ph(_mm512_load_si512(bp + 16));
#pragma GCC unroll 14
            for (int r = 0; r < MR; ++r) {
                const uint32_t pair = KMAJOR ? a[kp * MR + r] : p[r / 3][(r % 3) * lda + kp];
                const __m512h av = _mm512_castsi512_ph(_mm512_set1_epi32((int)pair));
                c[r][0] = _mm512_fmadd_ph(av, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ph(av, b1, c[r][1]);
            }
        }
        const bool first = k0 == 0;
#pragma GCC unroll 14
        for (int r = 0; r < MR; ++r)
            for (int h = 0; h < 2; ++h) {
                const __m512i v = _mm512_castph_si512(c[r][h]);
                const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
                const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1));
                float* d = &acc[r][32 * h];
                _mm512_store_ps(d, first ? lo : _mm512_add_ps(lo, _mm512_load_ps(d)));
                _mm512_store_ps(d + 16, first ? hi : _mm512_add_ps(hi, _mm512_load_ps(d + 16)));
            }
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int h = 0; h < 2; ++h) {
        const __m512 sb = _mm512_load_ps(b_shift + 16 * h);
        for (int r = 0; r < MR; ++r) {
            const __m512 lo = _mm512_load_ps(&acc[r][32 * h]), hi = _mm512_load_ps(&acc[r][32 * h + 16]);
            const __m512 sum = _mm512_add_ps(_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
            const __m512 undo = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_add_ps(sb, _mm512_set1_ps(a_shift[r])));
            _mm512_store_ps(tile + r * NR + 16 * h, _mm512_scalef_ps(sum, undo));
        }
    }
}

// Row stride, in pairs, of an A panel stored by rows: kcu rounded up to 16 (whole 64-byte
// stores), plus one cache line so the 14 rows fall in different L1 sets.
inline int64_t a_rows_ld(int64_t kcu) { return (kcu + 15) / 16 * 16 + 16; }

struct Fp16Kernels {
    using P = uint32_t;
    static constexpr int KU = 2;
    static constexpr int kScaleRows = 1;  // the B panel's column scale exponents, NR floats
    static constexpr int kLayout = 3;

    static int64_t a_buffer_size(int64_t kc) {
        const int64_t kcu = (kc + 1) / 2;
        return std::max<int64_t>(MR * a_rows_ld(kcu) + 16, kcu * MR + 16 + 16);
    }

    // NR-wide panel of op(B), depths [pc, pc+kc), columns [j, j+nr): the column scale exponents
    // from a first pass over the source, then pairs scaled and rounded straight from it (float32
    // B; at batch 1 the weights' packing was a quarter of ConvNeXt-T's inference time when it
    // went through a float32 copy). GELU'd or bfloat16 B goes through the float32 packing of
    // pack_b_f32 first.
    static void pack_b(const GemmArgs& g, int64_t pc, int64_t kc, int64_t j, int nr, uint32_t* dst) {
        const int64_t kcu = (kc + 1) / 2;
        __m512 e[2];
        if (!g.gelu_b && !g.b_bf16) {
            const float* B = static_cast<const float*>(g.B);
            if (g.tb)
                pack_b_columns(B + j * g.ldb + pc, g.ldb, kc, nr, dst, e);
            else
                pack_b_rows(B + pc * g.ldb + j, g.ldb, kc, nr, dst, e);
        } else {
            float* s = stage(2 * kcu * NR);
            with_b(g, [&](auto* B) { pack_b_f32(g, B, pc, kc, j, nr, s); });  // GELU'd, zero past nr
            pack_b_rows(s, NR, kc, NR, dst, e);
        }
        _mm512_store_ps((float*)(dst + kcu * NR), e[0]);
        _mm512_store_ps((float*)(dst + kcu * NR + 16), e[1]);
    }

    // op(B)(k, jj) = src[k * ld + jj] for jj < nr (zero beyond): rows k and k+1 make a row of pairs.
    static void pack_b_rows(const float* src, int64_t ld, int64_t kc, int nr, uint32_t* dst, __m512 e[2]) {
        const __mmask16 m[2] = {lanes(nr), lanes(nr - 16)};
        __m512 mx[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t k = 0; k < kc; ++k)
            for (int h = 0; h < 2; ++h) mx[h] = abs_max(mx[h], load16(src + k * ld + 16 * h, m[h]));
        for (int h = 0; h < 2; ++h) e[h] = scale_exponent(mx[h], kExpB);
        for (int64_t k = 0; k < kc; k += 2) {
            const float* r0 = src + k * ld;
            for (int h = 0; h < 2; ++h) {
                const __m512 hi = k + 1 < kc ? load16(r0 + ld + 16 * h, m[h]) : _mm512_setzero_ps();
                _mm512_store_si512(dst + k / 2 * NR + 16 * h, pairs_fp16(load16(r0 + 16 * h, m[h]), hi, e[h]));
            }
        }
    }

    // op(B)(k, jj) = src[jj * ld + k] (the weight of x·W^T: each column contiguous along the
    // depth): per-column maxima, then 16 columns x 32 depths at a time transposed in registers.
    static void pack_b_columns(const float* src, int64_t ld, int64_t kc, int nr, uint32_t* dst, __m512 e[2]) {
        // Per-column maxima, 16 columns side by side: at batch 1 the weight comes from memory, and
        // 16 streams in flight at once hide its latency where one column after another did not.
        alignas(64) float mx[NR] = {};
        for (int h = 0; h < 2; ++h) {
            const int n = std::min(16, nr - 16 * h);
            if (n <= 0) break;
            __m512 m[16];
            for (int i = 0; i < 16; ++i) m[i] = _mm512_setzero_ps();
            for (int64_t k = 0; k < kc; k += 16) {
                const __mmask16 lk = lanes(kc - k);
                for (int i = 0; i < n; ++i) m[i] = abs_max(m[i], load16(src + (16 * h + i) * ld + k, lk));
            }
            for (int i = 0; i < n; ++i) mx[16 * h + i] = _mm512_reduce_max_ps(m[i]);
        }
        alignas(64) float shift[NR];
        for (int h = 0; h < 2; ++h) {
            e[h] = scale_exponent(_mm512_load_ps(mx + 16 * h), kExpB);
            _mm512_store_ps(shift + 16 * h, e[h]);
        }
        // 32 depths of a column, rounded, are 16 pairs in depth order already: one 16 x 16
        // transpose of 32-bit lanes per 32 depths of 16 columns (transposing the floats first
        // took twice the shuffles, and the shuffle port bounded this loop).
        const int64_t kcu = (kc + 1) / 2;
        for (int h = 0; h < 2; ++h)
            for (int64_t k = 0; k < kc; k += 32) {
                __m512 v[16];
                for (int i = 0; i < 16; ++i) {
                    const int col = 16 * h + i;
                    if (col >= nr) {
                        v[i] = _mm512_setzero_ps();
                        continue;
                    }
                    const float* c = src + col * ld + k;
                    const __m512 s = _mm512_set1_ps(shift[col]);  // depths past kc load as zero
                    const __m256i lo = _mm512_cvtps_ph(_mm512_scalef_ps(load16(c, lanes(kc - k)), s),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    const __m256i hi = _mm512_cvtps_ph(_mm512_scalef_ps(load16(c + 16, lanes(kc - k - 16)), s),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    v[i] = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
                }
                transpose16(v);  // v[q]: pair k/2 + q of the 16 columns
                for (int q = 0; q < 16 && k / 2 + q < kcu; ++q)
                    _mm512_store_ps((float*)(dst + (k / 2 + q) * NR + 16 * h), v[q]);
            }
    }

    // Rows [i0, i0+mr) of op(A), depths [pc, pc+kc), scaled per row and rounded to pairs.
    //   A stored [M,K]: each row's depths are contiguous, and so are its pairs: [r][kp], rows
    //     a_rows_ld apart, converted run by run (float32 rows in place; bfloat16 or GELU'd ones
    //     through a float32 copy of the row).
    //   A stored [K,M]: staged as [k][16] floats (rows past mr zero), then [kp][r]. Stores are 16
    //     lanes in pair order, each overwriting the 2 lanes past its row that the next fills.
    template <class S>
    static APanel<uint32_t> prepare_a_from(const GemmArgs& g, const S* A, int64_t i0, int mr, int64_t pc, int64_t kc,
                                           uint32_t* buf) {
        const int64_t kcu = (kc + 1) / 2;
        if (!g.ta) {
            const int64_t ld = a_rows_ld(kcu);
            alignas(64) float shift[16] = {};
            for (int r = 0; r < MR; ++r) {
                uint32_t* d = buf + r * ld;
                if (r >= mr) {
                    std::fill(d, d + kcu, 0u);
                    continue;
                }
                const S* src = A + (i0 + r) * g.lda + pc;
                const float* row = nullptr;
                if constexpr (std::is_same<S, float>::value) row = src;
                if (!std::is_same<S, float>::value || g.gelu_a) {
                    float* s = stage(kc + 16);
                    for (int64_t k = 0; k < kc; k += 16)
                        _mm512_storeu_ps(s + k, g.gelu_a ? gelu16(src + k, lanes(kc - k)) : load16(src + k, lanes(kc - k)));
                    row = s;
                }
                __m512 m = _mm512_setzero_ps();
                for (int64_t k = 0; k < kc; k += 16) m = abs_max(m, load16(row + k, lanes(kc - k)));
                const __m512 e = scale_exponent(_mm512_set1_ps(_mm512_reduce_max_ps(m)), kExpA);
                shift[r] = _mm512_cvtss_f32(e);
                for (int64_t k = 0; k < kc; k += 32) {  // 32 depths = 16 pairs; zero past kc
                    const __m256i lo = _mm512_cvtps_ph(_mm512_scalef_ps(load16(row + k, lanes(kc - k)), e),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    const __m256i hi = _mm512_cvtps_ph(_mm512_scalef_ps(load16(row + k + 16, lanes(kc - k - 16)), e),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    _mm512_store_si512(d + k / 2, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
                }
            }
            _mm512_storeu_ps((float*)(buf + MR * ld), _mm512_load_ps(shift));
            return {buf, ld, false};
        }
        float* s = stage(2 * kcu * 16);
        const __mmask16 mk = i0 + 16 <= g.M ? (__mmask16)0xFFFF : lanes(mr);  // plain loads where possible
        for (int64_t k = 0; k < kc; ++k) {
            const S* src = A + (pc + k) * g.lda + i0;
            _mm512_store_ps(s + k * 16, g.gelu_a ? gelu16(src, mk) : load16(src, mk));
        }
        if (kc % 2) _mm512_store_ps(s + kc * 16, _mm512_setzero_ps());
        __m512 m = _mm512_setzero_ps();
        for (int64_t k = 0; k < kc; ++k) m = abs_max(m, _mm512_load_ps(s + k * 16));
        const __m512 e = scale_exponent(m, kExpA);
        for (int64_t kp = 0; kp < kcu; ++kp)
            _mm512_storeu_si512(buf + kp * MR,
                                pairs_fp16(_mm512_load_ps(s + 2 * kp * 16), _mm512_load_ps(s + 2 * kp * 16 + 16), e));
        _mm512_storeu_ps((float*)(buf + kcu * MR + 16), e);
        return {buf, MR, true};
    }
    static APanel<uint32_t> prepare_a(const GemmArgs& g, int64_t i0, int mr, int64_t pc, int64_t kc,
                                      uint32_t* buf) {
        APanel<uint32_t> out;
        with_a(g, [&](auto* A) { out = prepare_a_from(g, A, i0, mr, pc, kc, buf); });
        return out;
    }

    static bool b_in_place(const GemmArgs&) { return false; }  // B is converted: always packed

    static void kernel(const APanel<uint32_t>& a, int64_t kcu, const uint32_t* bp, int64_t, float* tile,
                       const KernelHints& h) {
        if (a.kmajor)
            micro_kernel_fp16<true>(kcu, a.p, a.ld, bp, tile, h);
        else
            micro_kernel_fp16<false>(kcu, a.p, a.ld, bp, tile, h);
    }
};

}  // namespace

void hgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                  float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a, bool gelu_b,
                  const GemmBlocking& bl) {
    const GemmArgs g = kernel_args(ta, tb, M, N, K, alpha, ab, beta, C, ldc, ep, gelu_a, gelu_b);
    gemm_blocked<Fp16Kernels>(g, 2 * bl.kc, bl.nc);
}

#pragma GCC pop_options
#else
void hgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const KernelOperands&, float, float*, int64_t,
                  const GemmEpilogue<float>&, bool, bool, const GemmBlocking&) {
    throw std::logic_error("hgemm_avx512: this build has no AVX512_FP16 kernel");
}
#endif

}  // namespace cnx::kernels
