#pragma once
// Internal to ops/gemm_avx512.cpp (float32 FMA kernel) and ops/gemm_bf16.cpp (bf16 dot-product
// kernel): what the two share. Include only inside a `#pragma GCC target("avx512f,...")` region,
// after including the headers below outside it (so no standard-library template is instantiated
// for AVX-512); everything here has internal linkage, so each translation unit keeps the copy
// compiled for its own instruction set.
//
// Blocking follows Goto / BLIS (Goto & van de Geijn 2008; Van Zee & van de Geijn 2015): C is cut
// into work units (row chunk x column chunk) handed to threads by parallel_for; within a unit,
//   for jc (<= nc columns) / for a group of depth blocks (kc each, as many as fit the kc x nc L2
//   budget): pack their op(B) panels (NR wide, in the thread's own buffer, or read B in place) /
//   for each MR-row panel / for each depth block of the group: prepare the A panel / for each
//   NR-column panel: the micro-kernel accumulates one MR x NR tile over kc in 28 zmm registers,
//   then the epilogue stores it.
// The A row panel (MR x kc) stays in L1 while the thread walks the column panels; the B panels
// stay in L2; a row panel's C tiles stay in cache across the depth blocks of a group. kc and nc
// come from the CPU's cache sizes (gemm_blocking()).
//
// Memory latency is hidden by software prefetches, which is what lifted the ConvNeXt shapes from
// 70-87% to 80-90% of the FMA peak on a Zen 4: each micro-kernel pulls in the C tile it will
// store (with write intent) and the epilogue's side inputs during its first iterations, so the
// stores do not wait for reads from DRAM; the next row panel of A streams into L2 while the
// current one computes; and while one group of depth blocks computes, the source rows of the
// next (op(B), and op(A) for A^T) stream into L2, so the packing that follows reads from cache
// (the weight-gradient GEMMs, whose depth is the pixel count, spent a quarter of their time
// packing from DRAM without it).
//
// Every output element is computed by the same sequence of operations whatever the number of
// threads and whichever thread owns its tile: K is never split across threads, except into depth
// chunks fixed by the shape alone (gemm_depth_split), summed in chunk order. So results do not
// depend on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "core/bf16_avx512.h"
#include "core/storage.h"
#include "ops/gemm.h"
#include "ops/packed_weights.h"
#include "ops/kernels/gelu_math.h"
#include "ops/parallel.h"

namespace cnx::kernels {
namespace {

constexpr int MR = 14;  // tile rows: 14 x 2 accumulators + 2 B vectors of the 32 zmm registers
constexpr int NR = 32;  // tile columns: two zmm

// 64-byte aligned scratch that only grows; one per thread.
template <class T>
struct AlignedBuffer {
    T* p = nullptr;
    int64_t n = 0;
    ~AlignedBuffer() { std::free(p); }
    T* get(int64_t want) {
        if (want > n) {
            std::free(p);
            p = nullptr;
            const size_t bytes = ((size_t)want * sizeof(T) + 63) / 64 * 64;
            p = static_cast<T*>(std::aligned_alloc(64, bytes));
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

// The lanes [0, n) of a 16-lane vector (n clamped to [0, 16]).
inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
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

// 16 bfloat16 values widened to float32 (exact: a shift), under a lane mask.
inline __m512 load16(const BFloat16* p, __mmask16 m) {
    const __m256i h = m == 0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(m, p);
    return widen_bf16(h);
}

inline void store16(BFloat16* p, __mmask16 m, __m512 v) {
    if (m == 0xFFFF)
        _mm256_storeu_si256((__m256i*)p, round_bf16(v));
    else
        _mm256_mask_storeu_epi16(p, m, round_bf16(v));
}

// ---- GELU and GELU' of bfloat16 values, looked up ----------------------------------------------
// A bfloat16 value has 65536 possible bit patterns, so GELU and GELU' of a saved (bfloat16)
// activation come from two 256 KB tables filled by this translation unit's own gelu_v and
// gelu_grad_v: every entry holds the bits the formula gives for that input, so results do not
// change. The formulas cost about 45 vector instructions per 16 values (erf's rational function, a
// reciprocal, exp); a gather from the few KB of entries real activations touch costs a fraction
// of that. On the Intel Xeon of issue 15 the GELU' epilogue had taken half the time of ConvNeXt-T's
// stage-0 dh product.
struct GeluTables {
    alignas(64) float gelu[65536];
    alignas(64) float grad[65536];
};
inline const GeluTables& gelu_tables() {
    static const GeluTables* const tables = [] {
        auto* t = new GeluTables;
        const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int i = 0; i < 65536; i += 16) {
            const __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_set1_epi32(i), lane), 16));
            _mm512_store_ps(t->gelu + i, gelu_v(x));
            _mm512_store_ps(t->grad + i, gelu_grad_v(x));
        }
        return t;
    }();
    return *tables;
}
// table[bits of p[i]] for the lanes of m; absent lanes read entry 0 (+0.0: GELU 0, GELU' 0.5), the
// value the formula gives for the zero a masked load leaves there.
inline __m512 lookup16(const float* table, const BFloat16* p, __mmask16 m) {
    const __m256i h = m == 0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(m, p);
    return _mm512_i32gather_ps(_mm512_cvtepu16_epi32(h), table, 4);
}
// GELU(x) of 16 values as stored: looked up for bfloat16, computed for float32.
inline __m512 gelu16(const BFloat16* p, __mmask16 m) { return lookup16(gelu_tables().gelu, p, m); }
inline __m512 gelu16(const float* p, __mmask16 m) { return gelu_v(load16(p, m)); }

// r[k] = column k of the 16 x 16 matrix whose rows are r[0..16): a transpose in registers.
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
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
}

// C[i0 + r, j0 + j] for r < mr, j < nr from the accumulated tile. first: this is the first K
// block (C = beta*C + alpha*acc); otherwise C += alpha*acc. last: apply the epilogue. Each row is
// two 16-lane halves under masks (all-ones except in the last column panel). C is null when only
// the epilogue's bfloat16 copy is wanted (first and last are then both true).
void store_tile(const float* tile, int mr, int nr, float* C, int64_t ldc, int64_t i0, int64_t j0, float alpha,
                float beta, bool first, bool last, const GemmEpilogue<float>& ep) {
    const bool plain = !last || ep.empty();
    const __mmask16 mk[2] = {lanes(nr), lanes(nr - 16)};
    const int halves = mk[1] ? 2 : 1;
    const __m512 va = _mm512_set1_ps(alpha);
    const float cb = first ? beta : 1.0f;
    const float* grad_table = !plain && ep.act_in_bf16 ? gelu_tables().grad : nullptr;
    for (int r = 0; r < mr; ++r) {
        const int64_t i = i0 + r;
        float* c = C ? C + i * ldc + j0 : nullptr;
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
                    v = _mm512_mul_ps(v, ep.act_in_bf16
                                             ? lookup16(grad_table, ep.act_in_bf16 + i * ep.ld_act_in + j0 + o, m)
                                             : gelu_grad_v(load16(ep.act_in + i * ep.ld_act_in + j0 + o, m)));
                if (ep.col_scale) v = _mm512_mul_ps(v, load16(ep.col_scale + j0 + o, m));
                if (ep.residual) v = _mm512_add_ps(v, load16(ep.residual + i * ep.ld_residual + j0 + o, m));
                if (ep.out_bf16) store16(ep.out_bf16 + i * ep.ld_out_bf16 + j0 + o, m, v);
            }
            if (c) store16(c + o, m, v);
        }
    }
}

// Addresses a micro-kernel prefetches into L2 while it computes, two per depth step from its
// start: memory the next calls will read, requested early enough to arrive in time, few enough
// at once not to fill the miss queues (issued all at once between calls, the same prefetches
// stalled the core: 10% of a weight-gradient GEMM).
struct KernelPrefetch {
    static constexpr int kMax = 512;
    const char* p[kMax];
    int n = 0;
    // Cache lines of rows x bytes at base (row stride ld bytes), as many as fit.
    void add_lines(const void* base, int64_t rows, int64_t row_bytes, int64_t ld_bytes) {
        const char* b = (const char*)base;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < row_bytes + 63 && n < kMax; o += 64) p[n++] = b + r * ld_bytes + std::min(o, row_bytes - 1);
    }
};

// What a micro-kernel is told besides its operands: the rows it will store to or the epilogue
// will read (the C tile, and the pre-activation, GELU input and residual tiles in the last depth
// block: the latter are whole activations, read once, from DRAM), prefetched one row per depth
// step; and the addresses to prefetch into L2 for the calls that follow.
struct TileRows {
    const char* p;  // row 0, column j0
    int64_t ld;     // in bytes
    bool write;
};
struct KernelHints {
    TileRows tiles[5];
    int n_tiles = 0;
    const KernelPrefetch* pf = nullptr;
    template <class E>
    void add(const E* p, int64_t ld, bool write) {
        if (p) tiles[n_tiles++] = {(const char*)p, ld * (int64_t)sizeof(E), write};
    }
};

// Inline assembly for the write prefetch: GCC 12 dropped __builtin_prefetch(p, 1, 3) from the
// float32 kernel, as its mod-ref analysis saw no store through p there.
inline void prefetch_step(const KernelHints& h, int64_t k) {
    if (k < MR)
        for (int t = 0; t < h.n_tiles; ++t) {
            const char* row = h.tiles[t].p + k * h.tiles[t].ld;
            if (h.tiles[t].write) {
                asm volatile("prefetchw %0" ::"m"(row[0]));
                asm volatile("prefetchw %0" ::"m"(row[64]));
            } else {
                _mm_prefetch(row, _MM_HINT_T0);
                _mm_prefetch(row + 64, _MM_HINT_T0);
            }
        }
    const int64_t i = 2 * k;
    if (i < h.pf->n) {
        _mm_prefetch(h.pf->p[i], _MM_HINT_T1);
        if (i + 1 < h.pf->n) _mm_prefetch(h.pf->p[i + 1], _MM_HINT_T1);
    }
}

// Cache lines of up to two 2-D regions (rows x bytes, row stride ld bytes): the source of the
// next depth block, handed out a share per micro-kernel call.
class BlockPrefetch {
public:
    void add(const void* base, int64_t rows, int64_t row_bytes, int64_t ld_bytes) {
        if (n_ < 2 && rows > 0 && row_bytes > 0) reg_[n_++] = {(const char*)base, rows, row_bytes, ld_bytes};
        lines_ += rows * ((row_bytes + 63) / 64);
    }
    // Spread the lines over `calls` calls of take().
    void pace(int64_t calls) { per_call_ = calls > 0 ? (lines_ + calls - 1) / calls : lines_; }
    void take(KernelPrefetch& pf) {
        for (int64_t left = per_call_; left > 0 && cur_ < n_ && pf.n < KernelPrefetch::kMax; --left) {
            const Region& g = reg_[cur_];
            pf.p[pf.n++] = g.base + row_ * g.ld + off_;
            if ((off_ += 64) >= g.row_bytes) {
                off_ = 0;
                if (++row_ == g.rows) row_ = 0, ++cur_;
            }
        }
    }

private:
    struct Region {
        const char* base;
        int64_t rows, row_bytes, ld;
    };
    Region reg_[2];
    int n_ = 0, cur_ = 0;
    int64_t row_ = 0, off_ = 0, lines_ = 0, per_call_ = 0;
};

// Work units: C is cut into a grid of (row chunk x column chunk) blocks handed out by parallel_for
// (ops/parallel.h), so a thread that loses its core for a while (a busy machine) does not hold the
// others up.
// Each unit packs the B panels of its own columns into its thread's buffer (no shared buffer, no
// barrier); a thread skips the packing when its previous unit packed the same block. Large M:
// row chunks with all columns (B packed once, shared, before they start); small M (the dW GEMMs,
// K = pixels): column chunks with all rows.
struct Units {
    int64_t rows_per_unit, panels_per_unit;  // in MR rows / NR-wide panels
    int64_t n_ru, n_cu;
};

inline Units choose_units(int nt, int64_t n_rp, int64_t n_cp) {
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

// An A row panel as the micro-kernel reads it: op(A)(r, k) = kmajor ? p[k * ld + r] : p[r * ld + k]
// (in the kernel's packed element: a float, or a pair of bf16 along k).
template <class P>
struct APanel {
    const P* p;
    int64_t ld;
    bool kmajor;
};

// The problem as the driver sees it (row-major, op() flags, the epilogue). A and B are float32, or
// bfloat16 where a_bf16 / b_bf16 (saved activations); the kernels' packing reads either.
struct GemmArgs {
    bool ta, tb;
    int64_t M, N, K;
    float alpha;
    const void* A;
    int64_t lda;
    const void* B;
    int64_t ldb;
    float beta;
    float* C;
    int64_t ldc;
    const GemmEpilogue<float>* ep;
    bool gelu_a, gelu_b;
    bool a_bf16 = false, b_bf16 = false;

    int64_t a_bytes() const { return a_bf16 ? 2 : 4; }  // per element as stored
    int64_t b_bytes() const { return b_bf16 ? 2 : 4; }
    // Element (row, col) of A / B as stored, as a byte address.
    const char* a_at(int64_t row, int64_t col) const { return (const char*)A + (row * lda + col) * a_bytes(); }
    const char* b_at(int64_t row, int64_t col) const { return (const char*)B + (row * ldb + col) * b_bytes(); }
};

// The driver's view of a kernel entry's arguments (sgemm_avx512, sbgemm_avx512, hgemm_avx512).
inline GemmArgs kernel_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const KernelOperands& ab,
                            float beta, float* C, int64_t ldc, const GemmEpilogue<float>& ep, bool gelu_a,
                            bool gelu_b) {
    GemmArgs g{ta, tb, M, N, K, alpha, ab.A, ab.lda, ab.B, ab.ldb, beta, C, ldc, &ep, gelu_a, gelu_b};
    g.a_bf16 = ab.a_bf16, g.b_bf16 = ab.b_bf16;
    return g;
}

// Runs fn(p) with p an operand (g.A or g.B) typed as it is stored: float or BFloat16.
template <class F>
inline void with_stored(const void* p, bool bf16, F&& fn) {
    if (bf16)
        fn(static_cast<const BFloat16*>(p));
    else
        fn(static_cast<const float*>(p));
}
template <class F>
inline void with_a(const GemmArgs& g, F&& fn) {
    with_stored(g.A, g.a_bf16, fn);
}
template <class F>
inline void with_b(const GemmArgs& g, F&& fn) {
    with_stored(g.B, g.b_bf16, fn);
}

// One NR-wide panel of op(B) rows [pc, pc+kc), columns [j, j+nr), in float32: dst[k][jj], zero for
// jj >= nr, through GELU when gelu_b. S: how B is stored (float, or bfloat16 widened as it is read).
// The float32 kernel's packed panel, and the fp16 kernel's staging before it rounds.
template <class S>
void pack_b_f32(const GemmArgs& g, const S* B, int64_t pc, int64_t kc, int64_t j, int nr, float* dst) {
    if (!g.tb) {  // op(B)(k, j) = B[k * ldb + j]: one contiguous run of nr per k
        const S* src = B + pc * g.ldb + j;
        float* d = dst;
        const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
        if (g.gelu_b) {  // GELU'd as loaded (GELU(0) = 0 past nr)
            for (int64_t k = 0; k < kc; ++k, src += g.ldb, d += NR) {
                _mm512_store_ps(d, gelu16(src, m0));
                _mm512_store_ps(d + 16, m1 ? gelu16(src + 16, m1) : _mm512_setzero_ps());
            }
            return;
        }
        for (int64_t k = 0; k < kc; ++k, src += g.ldb, d += NR) {
            _mm512_store_ps(d, load16(src, m0));
            _mm512_store_ps(d + 16, m1 ? load16(src + 16, m1) : _mm512_setzero_ps());
        }
    } else {
        // op(B)(k, j) = B[j * ldb + k] (the weight of x·W^T): 16 columns x 16 depths at a
        // time, transposed in registers; the depth tail and absent columns element by element.
        const int64_t kc16 = kc / 16 * 16;
        for (int h = 0; h < 2; ++h) {
            const int j0 = 16 * h;
            if (nr < j0 + 16) continue;
            const S* src = B + (j + j0) * g.ldb + pc;
            for (int64_t k = 0; k < kc16; k += 16) {
                __m512 r[16];
                for (int i = 0; i < 16; ++i) r[i] = load16(src + i * g.ldb + k, 0xFFFF);
                transpose16(r);
                for (int i = 0; i < 16; ++i) _mm512_store_ps(dst + (k + i) * NR + j0, r[i]);
            }
        }
        for (int jj = 0; jj < NR; ++jj) {
            const bool vec_done = jj < (nr / 16) * 16;
            const S* src = B + (j + jj) * g.ldb + pc;
            for (int64_t k = vec_done ? kc16 : 0; k < kc; ++k) dst[k * NR + jj] = jj < nr ? widen(src[k]) : 0.0f;
        }
    }
    if (g.gelu_b) gelu_inplace(dst, kc * NR);  // (the transposed layout: GELU'd after packing)
}

// Per-thread state of the driver: packing buffers, and which B block is packed in bbuf (call id,
// first panel, depth offset) so a thread's next unit over the same block skips it.
template <class P>
struct ThreadScratch {
    AlignedBuffer<P> bbuf, abuf;
    uint64_t call = 0;
    int64_t p0 = -1, pc = -1;
};

// The blocked GEMM over a kernel family KT, which provides
//   KT::P                      packed element (float, or uint32 = two bf16 along k)
//   KT::KU                     depth per packed element (1 or 2)
//   KT::pack_b(g, pc, kc, j, nr, dst)            NR-wide panel of op(B), [ceil(kc/KU)][NR]
//   KT::prepare_a(g, i0, mr, pc, kc, buf) -> APanel<P>   (may point into A, or pack into buf)
//   KT::a_buffer_size(kc)      elements prepare_a may need
//   KT::b_in_place(g)          full panels of op(B) are read from B itself (P = float only)
//   KT::kernel(ap, kcu, bp, ldb, tile, hints)  tile[MR][NR] = op(A) op(B), B panel rows ldb apart,
//                                              prefetching as hinted
//   KT::kScaleRows             rows of NR elements a packed B panel carries after its kcu (the fp16
//                              kernel's per-column scales; 0 for the others)
//   KT::kLayout                names the packed panel format (PackedWeightsScope keys by it)
// kc_max / nc_max: the depth block and packed column block (a multiple of NR) in elements.
// The most memory the A panels shared by column-split units may take (see gemm_blocked).
constexpr int64_t kSharedAMaxBytes = 4 << 20;

// Depth chunks of a deep product with a small output (the weight gradients of the first
// stages: 96 x 384 summed over 25088 pixels), a function of the shape alone so that results never
// depend on the thread count: 1 (no split) unless K >= 4 (M + N) and K >= 2048.
inline int64_t depth_chunks(int64_t M, int64_t N, int64_t K) {
    if (K < 4 * (M + N) || K < 2048) return 1;
    return std::min<int64_t>(16, K / 1024);
}

template <class KT>
void gemm_blocked(const GemmArgs& g, int64_t kc_max, int64_t nc_max, bool serial = false,
                  const GemmArgs* follow = nullptr);

// A deep product as S independent depth chunks, each a serial GEMM into its own partial C, handed
// to threads by parallel_for; the partials are then summed in chunk order and stored through the
// epilogue. Splitting by columns or rows instead made every thread stream (and pack) all of the
// other operand: 2 threads ran the stage-0 weight gradient at 75% of the one-thread rate per core.
// A tall output (M > N) is computed transposed, C^T = op(B)^T op(A)^T, into the partials: the
// kernel then packs the narrower operand's row panels and reuses each across more column panels
// (the 384 x 96 weight gradient ran 5% slower than its 96 x 384 twin).
template <class KT>
void gemm_depth_split(const GemmArgs& g, int64_t kc_max, int64_t nc_max, int64_t S) {
    const int64_t M = g.M, N = g.N, K = g.K;
    const int64_t chunk = ((K + S - 1) / S + 31) / 32 * 32;  // whole bf16 pairs and cache lines
    S = (K + chunk - 1) / chunk;
    const bool swap = M > N;
    GemmArgs w = g;  // the problem the chunks solve: C, or C^T
    if (swap) {
        w.ta = !g.tb, w.tb = !g.ta, w.M = N, w.N = M;
        w.A = g.B, w.lda = g.ldb, w.B = g.A, w.ldb = g.lda;
        w.gelu_a = g.gelu_b, w.gelu_b = g.gelu_a;
        w.a_bf16 = g.b_bf16, w.b_bf16 = g.a_bf16;
    }
    static thread_local AlignedBuffer<float> scratch;
    float* part = scratch.get(S * M * N);
    const GemmEpilogue<float> none;
    auto chunk_args = [&](int64_t s) {
        const int64_t k0 = s * chunk;
        GemmArgs c = w;
        c.K = std::min(chunk, K - k0);
        c.A = w.ta ? w.a_at(k0, 0) : w.a_at(0, k0);
        c.B = w.tb ? w.b_at(0, k0) : w.b_at(k0, 0);
        c.alpha = 1.0f, c.beta = 0.0f;
        c.C = part + s * M * N, c.ldc = w.N;
        c.ep = &none;
        return c;
    };
    parallel_for(S, [&](int64_t s) {
        // The thread that finishes this chunk most likely takes the next one: its first depth
        // block streams in during this one's last.
        const GemmArgs next = s + 1 < S ? chunk_args(s + 1) : GemmArgs{};
        gemm_blocked<KT>(chunk_args(s), kc_max, nc_max, true, s + 1 < S ? &next : nullptr);
    });
    // part[0] += part[s] for s = 1..S-1, in that order for every element (ranges of 16-float
    // vectors: whole vectors, so no element depends on how the ranges fall).
    const int64_t n = M * N, nv = n / 16;
    parallel_range(nv, n * S < (1 << 18) ? nv : 1024, [&](int64_t v0, int64_t v1) {
        for (int64_t v = v0; v < v1; ++v) {
            __m512 acc = _mm512_loadu_ps(part + 16 * v);
            for (int64_t s = 1; s < S; ++s) acc = _mm512_add_ps(acc, _mm512_loadu_ps(part + s * n + 16 * v));
            _mm512_storeu_ps(part + 16 * v, acc);
        }
    });
    for (int64_t i = 16 * nv; i < n; ++i)
        for (int64_t s = 1; s < S; ++s) part[i] += part[s * n + i];
    const int64_t n_rp = (M + MR - 1) / MR, n_cp = (N + NR - 1) / NR;
    parallel_range(n_rp, n < (1 << 16) ? n_rp : 1, [&](int64_t rp0, int64_t rp1) {
        alignas(64) float tile[MR * NR];
        for (int64_t rp = rp0; rp < rp1; ++rp)
            for (int64_t cp = 0; cp < n_cp; ++cp) {
                const int64_t i0 = rp * MR, j0 = cp * NR;
                const int mr = (int)std::min<int64_t>(MR, M - i0), nr = (int)std::min<int64_t>(NR, N - j0);
                for (int r = 0; r < mr; ++r)
                    for (int c = 0; c < nr; ++c)
                        tile[r * NR + c] = swap ? part[(j0 + c) * M + i0 + r] : part[(i0 + r) * N + j0 + c];
                store_tile(tile, mr, nr, g.C, g.ldc, i0, j0, g.alpha, g.beta, true, true, *g.ep);
            }
    });
}

// serial: run on the calling thread alone, without splitting the depth (a chunk of the above);
// follow: the chunk that comes next, whose first depth block is prefetched during the last one.
template <class KT>
void gemm_blocked(const GemmArgs& g, int64_t kc_max, int64_t nc_max, bool serial, const GemmArgs* follow) {
    using P = typename KT::P;
    constexpr int KU = KT::KU;
    const int64_t M = g.M, N = g.N, K = g.K;
    if (!serial) {
        const int64_t S = depth_chunks(M, N, K);
        if (S > 1) return gemm_depth_split<KT>(g, kc_max, nc_max, S);
    }
    // Depth blocks of equal size (a 384-deep product runs as 2 x 192, not 256 + 128), a whole
    // number of packed elements except in the last.
    const int64_t nkb = (K + kc_max - 1) / kc_max;
    if (!g.C && nkb > 1) {
        // Only the epilogue's bfloat16 copy is wanted, but the depth blocks accumulate in C: a
        // float32 C for this call, from the caching allocator.
        struct TempC {
            size_t bytes;
            float* p;
            explicit TempC(size_t n) : bytes(n * sizeof(float)), p((float*)allocator::allocate(bytes)) {}
            ~TempC() { allocator::release(p, bytes); }
        } tmp((size_t)(M * N));
        GemmArgs h = g;
        h.C = tmp.p, h.ldc = N, h.beta = 0.0f;
        return gemm_blocked<KT>(h, kc_max, nc_max, serial, follow);
    }
    const int64_t kc_blk = ((K + nkb - 1) / nkb + KU - 1) / KU * KU;
    const int64_t kcu_blk = kc_blk / KU;  // packed rows of a full depth block
    // Rows of one packed B panel (with its scales, if any), for a depth block of kcu packed rows.
    auto prows = [](int64_t kcu) { return kcu + KT::kScaleRows; };
    const int64_t prow_blk = prows(kcu_blk);
    const int64_t n_rp = (M + MR - 1) / MR, n_cp = (N + NR - 1) / NR;
    const int64_t nc_panels = std::max<int64_t>(1, nc_max / NR);  // panels per packed block

    // Small products are not worth waking the helpers.
    const int nt = serial || (double)M * N * K < 4e5 ? 1 : parallel_threads();
    const Units un = choose_units(nt, n_rp, n_cp);
    static std::atomic<uint64_t> calls{0};
    const uint64_t call = ++calls;

    const bool b_in_place = KT::b_in_place(g);
    // Every panel of op(B), packed once into dst: depth block q's panels start at
    // q * n_cp * prow_blk * NR, panel p of it p * prows(kcu) further (panels read in place are
    // skipped).
    auto pack_all_b = [&](P* dst) {
        auto pack = [&](int64_t q) {
            const int64_t pcb = q / n_cp, p = q % n_cp, pc = pcb * kc_blk;
            const int64_t kc = std::min(kc_blk, K - pc), kcu = (kc + KU - 1) / KU;
            if (!(b_in_place && p * NR + NR <= N))
                KT::pack_b(g, pc, kc, p * NR, (int)std::min<int64_t>(NR, N - p * NR),
                           dst + (pcb * n_cp * prow_blk + p * prows(kcu)) * NR);
        };
        if (K * N < (1 << 16))
            for (int64_t q = 0; q < nkb * n_cp; ++q) pack(q);
        else
            parallel_for(nkb * n_cp, pack);
    };
    P* shared_b = nullptr;
    // A weight of a live PackedWeightsScope (ops/packed_weights.h): packed on its first use, then
    // reused as it is by every call with the same layout.
    if (!serial && !g.gelu_b) {
        const int64_t b_extent = g.tb ? (N - 1) * g.ldb + K : (K - 1) * g.ldb + N;
        if (packed_weights::covers(g.B, b_extent * g.b_bytes())) {
            const packed_weights::Key key{g.B, g.ldb, K, N, kc_blk, g.tb, g.b_bf16, KT::kLayout};
            shared_b = (P*)packed_weights::find_or_pack(key, nkb * n_cp * prow_blk * NR * sizeof(P),
                                                        [&](void* dst) { pack_all_b((P*)dst); });
        }
    }
    // Row units all need every panel of op(B) (the weight): pack it once, shared, before they
    // start.
    if (!shared_b && un.n_ru > 1 && un.panels_per_unit == n_cp) {
        static thread_local AlignedBuffer<P> sbuf;
        shared_b = sbuf.get(nkb * n_cp * prow_blk * NR);
        pack_all_b(shared_b);
    }

    // Units that split the columns each need every A panel: prepared once, shared, before they
    // start, where that copy stays small (few rows: the batch-1 GEMMs of the last stages, where
    // every unit otherwise recomputed the GELU of A and its conversion: 20% of ConvNeXt-T's
    // batch-1 inference with the fp16 kernel).
    APanel<P>* shared_a = nullptr;
    const int64_t a_stride = KT::a_buffer_size(kc_blk);
    if (un.n_cu > 1 && n_rp * nkb * a_stride * (int64_t)sizeof(P) <= kSharedAMaxBytes) {
        static thread_local AlignedBuffer<P> abuf_all;
        static thread_local AlignedBuffer<APanel<P>> panels;
        P* all = abuf_all.get(n_rp * nkb * a_stride);
        shared_a = panels.get(n_rp * nkb);
        parallel_for(n_rp * nkb, [&](int64_t idx) {
            const int64_t rp = idx / nkb, pc = idx % nkb * kc_blk;
            shared_a[idx] = KT::prepare_a(g, rp * MR, (int)std::min<int64_t>(MR, M - rp * MR), pc,
                                          std::min(kc_blk, K - pc), all + idx * a_stride);
        });
    }

    auto unit = [&](int64_t u) {
        static thread_local ThreadScratch<P> ts;
        if (ts.call != call) ts.call = call, ts.p0 = ts.pc = -1;
        P* bbuf = shared_b ? nullptr : ts.bbuf.get(prow_blk * nc_panels * NR);
        P* abuf = ts.abuf.get(KT::a_buffer_size(kc_blk));
        alignas(64) float tile[MR * NR];
        KernelPrefetch pf;
        const int64_t ru = u / un.n_cu, cu = u % un.n_cu;
        const int64_t rp0 = ru * un.rows_per_unit, rp1 = std::min(n_rp, rp0 + un.rows_per_unit);
        const int64_t cp0 = cu * un.panels_per_unit, cp1 = std::min(n_cp, cp0 + un.panels_per_unit);
        for (int64_t jp = cp0; jp < cp1; jp += nc_panels) {  // packed block: panels [jp, jq)
            const int64_t jq = std::min(cp1, jp + nc_panels), np = jq - jp;
            const int64_t j_lo = jp * NR, j_hi = std::min(N, jq * NR);
            // Depth blocks [q0, q1) whose B panels fit the L2 budget together (kc x nc floats) are
            // packed at once and each row panel runs through all of them before the next: its C
            // tile then stays in cache between depth blocks instead of a pass over all of C (in
            // DRAM for the large activations) per block (+5-8% where K = 384 on Zen 4). With A
            // stored [K,M] the group's rows of A stream through L2 as well and count too.
            const int64_t a_panels = g.ta ? (std::min(M, rp1 * MR) - rp0 * MR + NR - 1) / NR : 0;
            const int64_t group = std::max<int64_t>(1, nc_panels / (np + a_panels));  // group * np <= nc_panels
            for (int64_t q0 = 0; q0 < nkb; q0 += group) {
                const int64_t q1 = std::min(nkb, q0 + group);
                // B panel p of depth block q (q0 <= q < q1): read in place (row stride ldb), or packed.
                auto in_place = [&](int64_t p) { return b_in_place && p * NR + NR <= N; };
                auto packed_panel = [&](int64_t q, int64_t p, int64_t kcu) -> P* {
                    if (shared_b) return shared_b + (q * n_cp * prow_blk + p * prows(kcu)) * NR;
                    return bbuf + ((q - q0) * np * prow_blk + (p - jp) * prows(kcu)) * NR;
                };
                if (!shared_b && (ts.p0 != jp || ts.pc != q0)) {
                    for (int64_t q = q0; q < q1; ++q) {
                        const int64_t pc = q * kc_blk, kc = std::min(kc_blk, K - pc), kcu = (kc + KU - 1) / KU;
                        for (int64_t p = jp; p < jq; ++p)
                            if (!in_place(p))
                                KT::pack_b(g, pc, kc, p * NR, (int)std::min<int64_t>(NR, N - p * NR),
                                           packed_panel(q, p, kcu));
                    }
                    ts.p0 = jp, ts.pc = q0;
                }
                // While this group computes, the next one's sources stream into L2 (B when this
                // unit packs its own, and A^T, read along the depth): the next group of this
                // product, or the first of the one that follows.
                BlockPrefetch next;
                const bool last_group = q1 == nkb;
                const GemmArgs* nx = last_group ? (jq == cp1 ? follow : nullptr) : &g;
                if (nx) {
                    const int64_t pn = last_group ? 0 : q1 * kc_blk, kn = std::min(group * kc_blk, nx->K - pn);
                    if (!shared_b) {
                        const int64_t eb = nx->b_bytes();
                        if (nx->tb)
                            next.add(nx->b_at(j_lo, pn), j_hi - j_lo, kn * eb, nx->ldb * eb);
                        else
                            next.add(nx->b_at(pn, j_lo), kn, (j_hi - j_lo) * eb, nx->ldb * eb);
                    }
                    if (nx->ta) {
                        const int64_t i_lo = rp0 * MR, i_hi = std::min(M, rp1 * MR);
                        next.add(nx->a_at(pn, i_lo), kn, (i_hi - i_lo) * nx->a_bytes(), nx->lda * nx->a_bytes());
                    }
                }
                next.pace((rp1 - rp0) * (q1 - q0) * np);
                for (int64_t rp = rp0; rp < rp1; ++rp) {
                    const int64_t i0 = rp * MR;
                    const int mr = (int)std::min<int64_t>(MR, M - i0);
                    for (int64_t q = q0; q < q1; ++q) {
                        const int64_t pc = q * kc_blk, kc = std::min(kc_blk, K - pc), kcu = (kc + KU - 1) / KU;
                        const bool first = pc == 0, last = pc + kc == K;
                        const APanel<P> ap =
                            shared_a ? shared_a[rp * nkb + q] : KT::prepare_a(g, i0, mr, pc, kc, abuf);
                        for (int64_t p = jp; p < jq; ++p) {
                            const int64_t j0 = p * NR;
                            const int nr = (int)std::min<int64_t>(NR, N - j0);
                            pf.n = 0;
                            // First column panel: pull the same depths of the next row panel
                            // (rows of A) into L2.
                            if (!g.ta && p == jp && rp + 1 < rp1)
                                pf.add_lines(g.a_at(i0 + MR, pc), std::min<int64_t>(MR, M - i0 - MR), kc * g.a_bytes(),
                                             g.lda * g.a_bytes());
                            next.take(pf);
                            KernelHints hints;
                            hints.pf = &pf;
                            if (mr == MR) {
                                if (g.C) hints.add(g.C + i0 * g.ldc + j0, g.ldc, true);
                                const GemmEpilogue<float>& ep = *g.ep;
                                if (last && ep.pre) hints.add(ep.pre + i0 * ep.ld_pre + j0, ep.ld_pre, true);
                                if (last && ep.out_bf16)
                                    hints.add(ep.out_bf16 + i0 * ep.ld_out_bf16 + j0, ep.ld_out_bf16, true);
                                if (last && ep.act == GemmAct::GeluGrad && ep.act_in_bf16)
                                    hints.add(ep.act_in_bf16 + i0 * ep.ld_act_in + j0, ep.ld_act_in, false);
                                else if (last && ep.act == GemmAct::GeluGrad)
                                    hints.add(ep.act_in + i0 * ep.ld_act_in + j0, ep.ld_act_in, false);
                                if (last && ep.residual)
                                    hints.add(ep.residual + i0 * ep.ld_residual + j0, ep.ld_residual, false);
                            }
                            if (in_place(p))
                                KT::kernel(ap, kcu, (const P*)g.b_at(pc, j0), g.ldb, tile, hints);
                            else
                                KT::kernel(ap, kcu, packed_panel(q, p, kcu), NR, tile, hints);
                            store_tile(tile, mr, nr, g.C, g.ldc, i0, j0, g.alpha, g.beta, first, last, *g.ep);
                        }
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
}  // namespace cnx::kernels
