// AVX-512 SGEMM for the shapes ConvNeXt runs: M = N·H·W pixels (hundreds to tens of thousands),
// K and N = C or 4C (40..3072), and the weight-gradient GEMMs whose K is the pixel count.
//
// Blocking follows Goto / BLIS (Goto & van de Geijn 2008; Van Zee & van de Geijn 2015): C is cut
// into work units (row chunk x column chunk) handed to threads by parallel_for; within a unit,
//   for jc (<= NC columns) / for pc (<= KC depth): pack op(B)[kc x nc] into NR-wide panels (in
//   the thread's own buffer) / for each MR-row panel, for each NR-column panel: the micro-kernel
//   accumulates one MR x NR tile over kc in 28 zmm registers, then the epilogue stores it.
// A is NOT packed: the micro-kernel broadcasts op(A) elements straight from memory, both for A
// stored [M,K] (row panel = MR rows of lda stride) and for A stored [K,M] (op(A) = A^T: the MR
// values of one k are contiguous). The row panel stays in L1 while the thread walks the column
// panels, the packed B block (kc x nc, <= 512 KB) in L2. Rows past M are copied into a
// zero-padded scratch panel so the kernel never reads out of bounds; so is every row panel of an
// A that passes through GELU (gelu_a).
//
// Every output element is computed by the same sequence of FMAs whatever the number of threads
// and whichever thread owns its tile (K is never split across threads), so results do not depend
// on the thread count.
//
// The kernels are compiled for AVX-512 through a target pragma, the rest of the library for the
// build's baseline; ops/gemm.cpp calls in only after checking the CPU at run time.
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) when they are compiled through a target pragma rather than -mavx512f.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "ops/kernels/sgemm_avx512.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>

#include "ops/kernels/gelu_math.h"
#include "ops/parallel.h"

#if defined(__x86_64__)
#define CNX_SGEMM_X86 1
#include <immintrin.h>
#else
#define CNX_SGEMM_X86 0
#endif

namespace cnx::kernels {

bool sgemm_avx512_available() {
#if CNX_SGEMM_X86
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    }();
    return ok;
#else
    return false;
#endif
}

#if CNX_SGEMM_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2")

namespace {

constexpr int MR = 14;          // tile rows: 14 x 2 accumulators + 2 B vectors of 32 zmm registers
constexpr int NR = 32;          // tile columns: two zmm
constexpr int64_t KC_MAX = 256;  // A row panel MR x kc = 14 KB stays in L1 while B panels stream from L2
constexpr int64_t NC_MAX = 512;  // packed B block <= 512 KB: stays in L2

// 64-byte aligned scratch that only grows; one per calling thread, shared with its team.
struct AlignedBuffer {
    float* p = nullptr;
    int64_t n = 0;
    ~AlignedBuffer() { std::free(p); }
    float* get(int64_t want) {
        if (want > n) {
            std::free(p);
            const size_t bytes = ((size_t)want * sizeof(float) + 63) / 64 * 64;
            p = static_cast<float*>(std::aligned_alloc(64, bytes));
            if (!p) throw std::bad_alloc();
            n = want;
        }
        return p;
    }
};

// ---- GELU on 16 floats at a time: the formulas of ops/kernels/gelu_math.h, with the division
// done as rcp14 + one Newton step (relative error ~1e-8) and exp's 2^k applied by scalef.
inline __m512 erf_v(__m512 z) {
    z = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
    const __m512 s = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(1.9109616139489916e-08f);
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-1.9422613891859064e-06f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.4729095964381321e-04f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(3.9909124566744718e-03f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(5.1526148855009939e-02f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(2.0713436438639984e-01f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.1283790942683347e+00f));
    __m512 q = _mm512_set1_ps(1.0211813834905e-03f);
    q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(1.495883946212976e-02f));
    q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(1.179745561802969e-01f));
    q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(5.168993010834906e-01f));
    q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(1.0f));
    __m512 r = _mm512_rcp14_ps(q);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
    const __m512 e = _mm512_mul_ps(_mm512_mul_ps(z, p), r);
    return _mm512_min_ps(_mm512_max_ps(e, _mm512_set1_ps(-1.0f)), _mm512_set1_ps(1.0f));
}
inline __m512 cdf_v(__m512 x) {
    const __m512 half = _mm512_set1_ps(0.5f);
    return _mm512_fmadd_ps(erf_v(_mm512_mul_ps(x, _mm512_set1_ps(gelu_math::kInvSqrt2))), half, half);
}
inline __m512 exp_v(__m512 y) {  // y in [-87, 0] here
    y = _mm512_max_ps(y, _mm512_set1_ps(-87.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), y);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}
inline __m512 gelu_v(__m512 x) { return _mm512_mul_ps(x, cdf_v(x)); }
inline __m512 gelu_grad_v(__m512 x) {
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-10.0f)), _mm512_set1_ps(10.0f));
    const __m512 pdf = exp_v(_mm512_mul_ps(_mm512_mul_ps(xc, xc), _mm512_set1_ps(-0.5f)));
    return _mm512_fmadd_ps(_mm512_mul_ps(xc, _mm512_set1_ps(gelu_math::kInvSqrt2Pi)), pdf, cdf_v(x));
}
// p[0..n) = GELU(p[0..n)) in place.
inline void gelu_inplace(float* p, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(p + i, gelu_v(_mm512_loadu_ps(p + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(p + i, m, gelu_v(_mm512_maskz_loadu_ps(m, p + i)));
    }
}

// tile[r][0..NR) = sum over k < kc of op(A)(r, k) * bp[k][0..NR).
//   TA = false: op(A)(r, k) = a[r * lda + k]   (A stored [M, K])
//   TA = true:  op(A)(r, k) = a[k * lda + r]   (A stored [K, M])
// a_next (TA = false, may be null): the next row panel of A (row stride ld_next), prefetched into
// L2 a cache line per row every 16 k, so its strided rows stream in while this tile computes.
template <bool TA>
__attribute__((noinline)) void micro_kernel(int64_t kc, const float* a, int64_t lda, const float* bp, float* tile,
                                            const float* a_next = nullptr, int64_t ld_next = 0) {
    __m512 c[MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
    if (TA) {
        for (int64_t k = 0; k < kc; ++k, a += lda, bp += NR) {
            const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
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
        for (int64_t k = 0; k < kc; ++k, bp += NR) {
            if (a_next && (k & 15) == 0)
                for (int r = 0; r < MR; ++r) _mm_prefetch((const char*)(a_next + r * ld_next + k), _MM_HINT_T1);
            const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
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

// 16 floats under a lane mask. Masked loads and stores cost several times a plain one on the AMD
// cores measured here (the GELU' epilogue ran 2.4x slower), so full masks take the plain path.
inline __m512 load16(const float* p, __mmask16 m) {
    return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline void store16(float* p, __mmask16 m, __m512 v) {
    if (m == 0xFFFF)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}

// C[i0 + r, j0 + j] for r < mr, j < nr from the accumulated tile. first: this is the first K
// block (C = beta*C + alpha*acc); otherwise C += alpha*acc. last: apply the epilogue. Each row is
// two 16-lane halves under masks (all-ones except in the last column panel).
void store_tile(const float* tile, int mr, int nr, float* C, int64_t ldc, int64_t i0, int64_t j0, float alpha,
                float beta, bool first, bool last, const GemmEpilogue<float>& ep) {
    const bool plain = !last || ep.empty();
    const __mmask16 full = 0xFFFF;
    const __mmask16 mk[2] = {nr >= 16 ? full : (__mmask16)((1u << nr) - 1),
                             nr >= 32 ? full : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : (__mmask16)0};
    const int halves = mk[1] ? 2 : 1;
    const __m512 va = _mm512_set1_ps(alpha);
    const float cb = first ? beta : 1.0f;
    for (int r = 0; r < mr; ++r) {
        const int64_t i = i0 + r;
        float* c = C + i * ldc + j0;
        for (int hlf = 0; hlf < halves; ++hlf) {
            const __mmask16 m = mk[hlf];
            const int o = 16 * hlf;
            __m512 v = _mm512_mul_ps(va, _mm512_load_ps(tile + r * NR + o));
            if (cb != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(cb), load16(c + o, m), v);
            if (!plain) {
                if (ep.bias) v = _mm512_add_ps(v, load16(ep.bias + j0 + o, m));
                if (ep.pre) store16(ep.pre + i * ep.ld_pre + j0 + o, m, v);
                if (ep.act == GemmAct::Gelu)
                    v = gelu_v(v);
                else if (ep.act == GemmAct::GeluGrad)
                    v = _mm512_mul_ps(v, gelu_grad_v(load16(ep.act_in + i * ep.ld_act_in + j0 + o, m)));
                if (ep.col_scale) v = _mm512_mul_ps(v, load16(ep.col_scale + j0 + o, m));
                if (ep.residual) v = _mm512_add_ps(v, load16(ep.residual + i * ep.ld_residual + j0 + o, m));
            }
            store16(c + o, m, v);
        }
    }
}

// dst[k * ld_dst + r] = src[r * ld_src + k] for r, k < 16: a 16 x 16 transpose in registers.
inline void transpose16_store(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // 4 x 4 blocks within each 128-bit lane
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {  // then the 128-bit lanes across groups of 4 rows
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(dst + k * ld_dst, r[k]);  // r[k]: column k of the rows
}

// One NR-wide panel of op(B) rows [pc, pc+kc), columns [j, j+nr): dst[k][jj], zero for jj >= nr.
void pack_b_panel(bool tb, bool gelu_b, const float* B, int64_t ldb, int64_t pc, int64_t kc, int64_t j, int nr,
                  float* dst) {
    if (!tb) {  // op(B)(k, j) = B[k * ldb + j]: one contiguous run of nr per k
        const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
        const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
        const float* src = B + pc * ldb + j;
        float* d = dst;
        if (nr == NR) {
            for (int64_t k = 0; k < kc; ++k, src += ldb, d += NR) {
                _mm512_store_ps(d, _mm512_loadu_ps(src));
                _mm512_store_ps(d + 16, _mm512_loadu_ps(src + 16));
            }
        } else {
            for (int64_t k = 0; k < kc; ++k, src += ldb, d += NR) {
                _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, src));
                _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, src + 16));
            }
        }
        if (gelu_b) gelu_inplace(dst, kc * NR);
        return;
    }
    // op(B)(k, j) = B[j * ldb + k] (the weight of x·W^T): 16 columns x 16 depths at a time,
    // transposed in registers; the depth tail and absent columns element by element.
    const int64_t kc16 = kc / 16 * 16;
    for (int g = 0; g < 2; ++g) {
        const int j0 = 16 * g;
        if (nr >= j0 + 16) {
            const float* src = B + (j + j0) * ldb + pc;
            for (int64_t k = 0; k < kc16; k += 16) transpose16_store(src + k, ldb, dst + k * NR + j0, NR);
        }
    }
    for (int jj = 0; jj < NR; ++jj) {
        const bool vec_done = jj < (nr / 16) * 16;
        const float* src = B + (j + jj) * ldb + pc;
        for (int64_t k = vec_done ? kc16 : 0; k < kc; ++k) dst[k * NR + jj] = jj < nr ? src[k] : 0.0f;
    }
    if (gelu_b) gelu_inplace(dst, kc * NR);
}

// Rows [i0, i0+mr) of op(A), depth [pc, pc+kc), zero-padded to MR rows in the layout the
// micro-kernel reads (TA = false: [MR][kc], lda = kc; TA = true: [kc][MR], lda = MR), through GELU
// when gelu_a. Used for the last, partial row panel and for every panel of a GELU'd A.
template <bool TA>
void copy_a_rows(const float* A, int64_t lda, int64_t i0, int mr, int64_t pc, int64_t kc, bool gelu_a, float* dst) {
    if (!TA) {
        for (int r = 0; r < MR; ++r) {
            float* d = dst + r * kc;
            if (r >= mr) {
                std::fill(d, d + kc, 0.0f);
                continue;
            }
            const float* src = A + (i0 + r) * lda + pc;
            std::copy(src, src + kc, d);
            if (gelu_a) gelu_inplace(d, kc);
        }
    } else {
        for (int64_t k = 0; k < kc; ++k)
            for (int r = 0; r < MR; ++r) dst[k * MR + r] = r < mr ? A[(pc + k) * lda + i0 + r] : 0.0f;
        if (gelu_a) gelu_inplace(dst, kc * MR);
    }
}

// Work units: C is cut into a grid of (row chunk x column chunk) blocks handed out by parallel_for
// (ops/parallel.h), so a thread that loses its core for a while (a busy machine) does not hold the
// others up.
// Each unit packs the B panels of its own columns into its thread's buffer (no shared buffer, no
// barrier); a thread skips the packing when its previous unit packed the same block. Large M:
// row chunks with all columns (B packed once per thread when it fits one block); small M (the dW
// GEMMs, K = pixels): column chunks with all rows.
struct Units {
    int64_t rows_per_unit, panels_per_unit;  // in MR rows / NR-wide panels
    int64_t n_ru, n_cu;
};

Units choose_units(int nt, int64_t n_rp, int64_t n_cp) {
    Units u;
    if (nt == 1) {
        u.rows_per_unit = n_rp, u.panels_per_unit = n_cp;
    } else if (n_rp >= 24 * nt) {
        // Many rows (activations x weights): row chunks, ~6 per thread. A unit repacks only the
        // weight block, small next to its rows' work.
        u.panels_per_unit = n_cp;
        u.rows_per_unit = std::max<int64_t>(4, n_rp / (6 * nt));
    } else {
        // Few rows (the dW GEMMs: K = pixels): every unit streams all of op(A) and packs its
        // columns of the activation, so fewer, larger units: ~2 per thread.
        const int64_t target = 2 * nt;
        if (n_cp >= target) {
            u.rows_per_unit = n_rp;
            u.panels_per_unit = (n_cp + target - 1) / target;
        } else {
            u.panels_per_unit = n_cp;
            u.rows_per_unit = std::max<int64_t>(1, (n_rp + target - 1) / target);
        }
    }
    u.n_ru = (n_rp + u.rows_per_unit - 1) / u.rows_per_unit;
    u.n_cu = (n_cp + u.panels_per_unit - 1) / u.panels_per_unit;
    return u;
}

// Per-thread state of the driver (column units): packing buffers, and which B block is packed in
// bbuf (call id, first panel, depth offset) so a thread's next unit over the same block skips it.
struct ThreadScratch {
    AlignedBuffer bbuf, ebuf;
    uint64_t call = 0;
    int64_t p0 = -1, pc = -1;
};

template <bool TA>
void sgemm_driver(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a,
                  bool gelu_b) {
    // Depth blocks of equal size (a 384-deep product runs as 2 x 192, not 256 + 128).
    const int64_t nkb = (K + KC_MAX - 1) / KC_MAX;
    const int64_t kc_blk = (K + nkb - 1) / nkb;
    const int64_t n_rp = (M + MR - 1) / MR, n_cp = (N + NR - 1) / NR;
    const int64_t nc_panels = NC_MAX / NR;  // panels per packed block

    // Small products are not worth waking the helpers.
    const int nt = (double)M * N * K < 4e5 ? 1 : parallel_threads();
    const Units un = choose_units(nt, n_rp, n_cp);
    static std::atomic<uint64_t> calls{0};
    const uint64_t call = ++calls;

    // Row units all need every panel of op(B) (the weight): pack it once, shared, before they
    // start. Depth block pcb's panels start at pc * n_cp * NR, panel p of it p * kc further.
    float* shared_b = nullptr;
    if (un.n_ru > 1 && un.panels_per_unit == n_cp) {
        static thread_local AlignedBuffer sbuf;
        shared_b = sbuf.get(K * n_cp * NR);
        auto pack = [&](int64_t q) {
            const int64_t pc = q / n_cp * kc_blk, p = q % n_cp;
            const int64_t kc = std::min(kc_blk, K - pc);
            pack_b_panel(tb, gelu_b, B, ldb, pc, kc, p * NR, (int)std::min<int64_t>(NR, N - p * NR),
                         shared_b + pc * n_cp * NR + p * kc * NR);
        };
        if (K * N < (1 << 16))
            for (int64_t q = 0; q < nkb * n_cp; ++q) pack(q);
        else
            parallel_for(nkb * n_cp, pack);
    }

    auto unit = [&](int64_t u) {
        static thread_local ThreadScratch ts;
        if (ts.call != call) ts.call = call, ts.p0 = ts.pc = -1;
        float* bp = shared_b ? nullptr : ts.bbuf.get(kc_blk * std::min(nc_panels, un.panels_per_unit) * NR);
        float* edge = nullptr;
        alignas(64) float tile[MR * NR];
        const int64_t ru = u / un.n_cu, cu = u % un.n_cu;
        const int64_t rp0 = ru * un.rows_per_unit, rp1 = std::min(n_rp, rp0 + un.rows_per_unit);
        const int64_t cp0 = cu * un.panels_per_unit, cp1 = std::min(n_cp, cp0 + un.panels_per_unit);
        for (int64_t jp = cp0; jp < cp1; jp += nc_panels) {  // packed block: panels [jp, jq)
            const int64_t jq = std::min(cp1, jp + nc_panels);
            for (int64_t pc = 0; pc < K; pc += kc_blk) {
                const int64_t kc = std::min(kc_blk, K - pc);
                const bool first = pc == 0, last = pc + kc == K;
                if (shared_b) {
                    bp = shared_b + pc * n_cp * NR + jp * kc * NR;
                } else if (ts.p0 != jp || ts.pc != pc) {
                    for (int64_t p = jp; p < jq; ++p)
                        pack_b_panel(tb, gelu_b, B, ldb, pc, kc, p * NR, (int)std::min<int64_t>(NR, N - p * NR),
                                     bp + (p - jp) * kc * NR);
                    ts.p0 = jp, ts.pc = pc;
                }
                for (int64_t rp = rp0; rp < rp1; ++rp) {
                    const int64_t i0 = rp * MR;
                    const int mr = (int)std::min<int64_t>(MR, M - i0);
                    const float* ap = TA ? A + pc * lda + i0 : A + i0 * lda + pc;
                    int64_t ald = lda;
                    if (mr < MR || gelu_a) {
                        if (!edge) edge = ts.ebuf.get(MR * kc_blk);
                        copy_a_rows<TA>(A, lda, i0, mr, pc, kc, gelu_a, edge);
                        ap = edge;
                        ald = TA ? MR : kc;
                    }
                    for (int64_t p = jp; p < jq; ++p) {
                        const int64_t j0 = p * NR;
                        // First column panel of a full, unpacked row panel: pull in the next one.
                        const float* an =
                            !TA && p == jp && rp + 1 < rp1 && i0 + 2 * MR <= M ? A + (i0 + MR) * lda + pc : nullptr;
                        micro_kernel<TA>(kc, ap, ald, bp + (p - jp) * kc * NR, tile, an, lda);
                        store_tile(tile, mr, (int)std::min<int64_t>(NR, N - j0), C, ldc, i0, j0, alpha, beta, first,
                                   last, ep);
                    }
                }
            }
        }
    };
    const int64_t units = un.n_ru * un.n_cu;
    if (nt == 1) {
        for (int64_t u = 0; u < units; ++u) unit(u);
    } else {
        parallel_for(units, unit);
    }
}

}  // namespace

void sgemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep,
                  bool gelu_a, bool gelu_b) {
    if (ta)
        sgemm_driver<true>(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep, gelu_a, gelu_b);
    else
        sgemm_driver<false>(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep, gelu_a, gelu_b);
}

#pragma GCC pop_options
#else
void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                  float*, int64_t, const GemmEpilogue<float>&, bool, bool) {
    throw std::logic_error("sgemm_avx512: not an x86-64 build");
}
#endif

}  // namespace cnx::kernels
