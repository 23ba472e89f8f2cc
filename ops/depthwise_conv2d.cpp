// Depthwise 2-D convolution on NHWC activations (ConvNeXt's 7x7 dwconv): direct loops, channels
// innermost so every inner loop runs over contiguous memory and vectorises, output rows in
// parallel (ops/parallel.h). The weight is repacked once per call from PyTorch's [C,1,kh,kw] to
// [kh,kw,C].
#include "ops/depthwise_conv2d.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics
// (_mm512_undefined_epi32) when they inline through a target attribute (core/bf16_avx512.h).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "core/bf16_avx512.h"
#endif

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

// Row blocks of the dW/db reduction (each sums into its own partial buffer, reduced in order).
constexpr int64_t kWgradBlocks = 16;

// Geometry of one call. ph/pw may be negative (the stride-1 backward reuses the forward kernel
// with padding k-1-p).
struct DwGeom {
    int64_t N, H, W, C;  // input
    int64_t kh, kw, stride, ph, pw;
    int64_t Ho, Wo;  // output
    int64_t macs() const { return N * Ho * Wo * C * kh * kw; }
};

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Output columns wo in [lo, hi) whose input column wo*s - p + j lies inside [0, W).
inline void valid_cols(int64_t j, int64_t s, int64_t p, int64_t W, int64_t Wo, int64_t& lo, int64_t& hi) {
    lo = std::max<int64_t>(0, ceil_div(p - j, s));
    hi = std::min<int64_t>(Wo, floor_div(W - 1 + p - j, s) + 1);
    if (hi < lo) hi = lo;
}

// Both repacks transpose [C, taps] <-> [taps, C] sixteen channels at a time, so the 16 x taps
// source or destination block (3 KB for 7x7) stays in L1 and the other side is written or read in
// 64-byte runs. Element by element over C, every write of the forward's repack landed on a
// different cache line: 100 us of ConvNeXt-T's 7x7x768 last-stage call, which itself needs 15.
constexpr int64_t kRepackChannels = 16;

// wt[kh,kw,C] <- w[C,1,kh,kw]; flip = rotate the kernel by 180 degrees (for the stride-1 dx).
template <class T>
void pack_weight(const T* w, T* wt, int64_t C, int64_t kh, int64_t kw, bool flip) {
    const int64_t taps = kh * kw;
    for (int64_t c0 = 0; c0 < C; c0 += kRepackChannels) {
        const int64_t c1 = std::min(C, c0 + kRepackChannels);
        for (int64_t t = 0; t < taps; ++t) {
            T* dst = wt + (flip ? taps - 1 - t : t) * C;
            for (int64_t c = c0; c < c1; ++c) dst[c] = w[c * taps + t];
        }
    }
}

// ---- register tiles ---------------------------------------------------------------------------
// The kernels below work on tiles of WB output columns x CB channels whose accumulators live in
// registers for all kh*kw taps. CB = one vector register of T; WB = 8 independent FMA chains.
// For stride 1 and kw in {3, 5, 7} (ConvNeXt: 7) the tile also keeps the kw weight vectors of a
// kernel row in registers and walks the input columns once, each feeding every output column
// it reaches (with AVX-512, GCC then loads each input vector about once: ~0.4 loads per FMA);
// other geometries use a generic tile (~1.1 loads per FMA). Input vectors are read straight
// from memory, never copied into a local array: with 16 AVX2 registers such an array is
// spilled in halves and every reload stalls on store forwarding (10x slower, measured).
// Tiles whose taps cross the left/right image border (or run past Wo): with the register tiles
// (stride 1, k in {3, 5, 7}) the forward skips the padding columns (fwd_tile's CLIP), and so does
// dW's AVX-512 float tile; the generic tile and the other dW tiles first copy their input window
// into a small zero-padded buffer.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif
template <class T>
struct Tile {
    static constexpr int CB = kVectorBytes / sizeof(T);
    static constexpr int WB = 8;
};

// Rows per parallel range: all of them (serial) when the whole convolution is small.
inline int64_t row_grain(const DwGeom& g) { return g.macs() > kParallelMinMacs ? 1 : g.N * g.Ho; }

// Valid kernel rows [i0, i1) for output row ho: input row ho*s - ph + i inside [0, H).
inline void valid_rows(int64_t ho, const DwGeom& g, int64_t& i0, int64_t& i1) {
    i0 = std::max<int64_t>(0, g.ph - ho * g.stride);
    i1 = std::min<int64_t>(g.kh, g.H + g.ph - ho * g.stride);
}

// Whether the tile of output columns [wo0, wo0 + WB) lies inside the output and reads only
// input columns inside [0, W).
inline bool tile_inside(int64_t wo0, int64_t WB, const DwGeom& g) {
    return wo0 + WB <= g.Wo && wo0 * g.stride - g.pw >= 0 && (wo0 + WB - 1) * g.stride - g.pw + g.kw <= g.W;
}

// dst[r][q][0..CB) = x row r (rows apart by xrs), column w0 + q, channels from xp; zero outside [0, W).
// (S: how x is stored; bfloat16 is widened.)
template <int CB, class T, class S>
void copy_window(T* dst, const S* xp, int64_t rows, int64_t xrs, int64_t w0, int64_t span, const DwGeom& g) {
    for (int64_t r = 0; r < rows; ++r, xp += xrs)
        for (int64_t q = 0; q < span; ++q, dst += CB) {
            const int64_t wi = w0 + q;
            if (wi < 0 || wi >= g.W) {
#pragma omp simd
                for (int c = 0; c < CB; ++c) dst[c] = T(0);
            } else {
                const S* src = xp + wi * g.C;
#pragma omp simd
                for (int c = 0; c < CB; ++c) dst[c] = widen(src[c]);
            }
        }
}

// ---- forward: y[N,Ho,Wo,C] = sum_{i,j} x[n, ho*s-ph+i, wo*s-pw+j, c] * wt[i,j,c] + bias[c] ----

// One tile: yp[b*C + c] (b < nb) = bias[c] + sum over rows r < nrows and taps j of
// x(r, w0 + b*s + j)[c] * wv[(r*kw + j)*C + c], where x(r, w) = xrow[r*xrs + w*xcs]. Pointers at
// the tile's first channel. KW > 0: stride 1 and kw == KW, with weight and input reuse in
// registers; KW == 0: any.
// CLIP (KW > 0): the tile's input columns q = w - w0 outside [q_lo, q_hi) lie in the zero padding
// and are skipped, never read. A border tile then costs what an inside one does; copying its
// window into a zero-padded buffer first had taken a third of the forward's time at 56 columns,
// and more at 28, 14 and 7, where most or all tiles touch a border.
template <int KW, int WB, int CB, bool CLIP = false, class T>
inline void fwd_tile(T* yp, int nb, const T* xrow, int64_t w0, int64_t xrs, int64_t xcs, const T* wv, const T* bias,
                     int64_t nrows, const DwGeom& g, int q_lo = 0, int q_hi = 0) {
    const int64_t C = g.C;
    T acc[WB][CB];
    for (int b = 0; b < WB; ++b)
#pragma omp simd
        for (int c = 0; c < CB; ++c) acc[b][c] = bias ? bias[c] : T(0);
    if constexpr (KW > 0) {
        for (int64_t r = 0; r < nrows; ++r, wv += KW * C) {
            T w[KW][CB];
#pragma GCC unroll 8
            for (int j = 0; j < KW; ++j)
#pragma omp simd
                for (int c = 0; c < CB; ++c) w[j][c] = wv[j * C + c];
#pragma GCC unroll 16
            for (int q = 0; q < WB + KW - 1; ++q) {  // input column q feeds output b = q - j
                if (CLIP && (q < q_lo || q >= q_hi)) continue;
                const T* xq = xrow + r * xrs + (w0 + q) * xcs;
#pragma GCC unroll 8
                for (int j = 0; j < KW; ++j) {
                    const int b = q - j;
                    if (b < 0 || b >= WB) continue;
#pragma omp simd
                    for (int c = 0; c < CB; ++c) acc[b][c] += xq[c] * w[j][c];
                }
            }
        }
    } else {
        const int64_t sx = g.stride * xcs;
        const T* xp = xrow + w0 * xcs;
        for (int64_t r = 0; r < nrows; ++r, xp += xrs, wv += g.kw * C)
            for (int64_t j = 0; j < g.kw; ++j) {
                const T* xj = xp + j * xcs;
                const T* wj = wv + j * C;
                for (int b = 0; b < WB; ++b)
#pragma omp simd
                    for (int c = 0; c < CB; ++c) acc[b][c] += xj[b * sx + c] * wj[c];
            }
    }
    for (int b = 0; b < nb; ++b)
#pragma omp simd
        for (int c = 0; c < CB; ++c) yp[b * C + c] = acc[b][c];
}

// Pixel wo, channels [c0, c1), plain loops with bounds checks (the channel tail C % CB).
template <class T>
void fwd_pixel(T* yrow, const T* xr, const T* wt, const T* bias, int64_t wo, int64_t c0, int64_t c1, int64_t i0,
               int64_t i1, const DwGeom& g) {
    const int64_t C = g.C;
    T* yp = yrow + wo * C;
    for (int64_t c = c0; c < c1; ++c) yp[c] = bias ? bias[c] : T(0);
    for (int64_t i = i0; i < i1; ++i, xr += g.W * C)
        for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t wi = wo * g.stride - g.pw + j;
            if (wi < 0 || wi >= g.W) continue;
            const T* xp = xr + wi * C;
            const T* wv = wt + (i * g.kw + j) * C;
#pragma omp simd
            for (int64_t c = c0; c < c1; ++c) yp[c] += xp[c] * wv[c];
        }
}

// One output row, channels [ca, cb) in blocks of CBX (a multiple of CBX wide), column tiles
// within each block. win: scratch for the border tiles' input window.
template <int KW, int CBX, class T>
void fwd_row_blocks(T* yrow, const T* xr, const T* wr, const T* bias, int64_t nrows, int64_t ca, int64_t cb, T* win,
                    const DwGeom& g) {
    constexpr int WB = Tile<T>::WB;
    const int64_t C = g.C, span = (WB - 1) * g.stride + g.kw;
    for (int64_t c0 = ca; c0 < cb; c0 += CBX) {
        const T* bc = bias ? bias + c0 : nullptr;
        for (int64_t wo0 = 0; wo0 < g.Wo; wo0 += WB) {
            const int nb = (int)std::min<int64_t>(WB, g.Wo - wo0);
            const int64_t w0 = wo0 * g.stride - g.pw;  // first input column read
            T* yp = yrow + wo0 * C + c0;
            if (tile_inside(wo0, WB, g)) {
                fwd_tile<KW, WB, CBX>(yp, nb, xr + c0, w0, g.W * C, C, wr + c0, bc, nrows, g);
            } else if constexpr (KW > 0) {
                const int q_lo = (int)std::max<int64_t>(0, -w0), q_hi = (int)std::min<int64_t>(span, g.W - w0);
                fwd_tile<KW, WB, CBX, true>(yp, nb, xr + c0, w0, g.W * C, C, wr + c0, bc, nrows, g, q_lo, q_hi);
            } else {
                copy_window<CBX>(win, xr + c0, nrows, g.W * C, w0, span, g);
                fwd_tile<KW, WB, CBX>(yp, nb, win, 0, span * CBX, CBX, wr + c0, bc, nrows, g);
            }
        }
    }
}

// Rows of output (n, ho) in parallel; within a row, channel blocks of a vector, then (C = 40,
// ConvNeXt-atto's first stage) blocks of half a vector, then single channels.
template <int KW, class T>
void dw_forward_impl(const T* x, const T* wt, const T* bias, T* y, const DwGeom& g) {
    constexpr int CB = Tile<T>::CB, HB = CB / 2, WB = Tile<T>::WB;
    const int64_t C = g.C, Cfull = C - C % CB, Chalf = C - C % HB;
    const int64_t span = (WB - 1) * g.stride + g.kw;  // input columns one tile reads
    const int64_t rows = g.N * g.Ho;
    parallel_range(rows, row_grain(g), [&](int64_t r0, int64_t r1) {
        std::vector<T> win(KW > 0 ? 0 : g.kh * span * CB);  // only the generic tile copies windows
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / g.Ho, ho = r % g.Ho;
            T* yrow = y + r * g.Wo * C;
            int64_t i0, i1;
            valid_rows(ho, g, i0, i1);
            const T* xr = x + (n * g.H + ho * g.stride - g.ph + i0) * g.W * C;  // kernel row i0
            const T* wr = wt + i0 * g.kw * C;
            fwd_row_blocks<KW, CB>(yrow, xr, wr, bias, i1 - i0, 0, Cfull, win.data(), g);
            fwd_row_blocks<KW, HB>(yrow, xr, wr, bias, i1 - i0, Cfull, Chalf, win.data(), g);
            if (Chalf < C)
                for (int64_t wo = 0; wo < g.Wo; ++wo) fwd_pixel(yrow, xr, wt, bias, wo, Chalf, C, i0, i1, g);
        }
    });
}

template <class T>
void dw_forward(const T* x, const T* wt, const T* bias, T* y, const DwGeom& g) {
    if (g.stride == 1 && g.kw == 7) return dw_forward_impl<7>(x, wt, bias, y, g);
    if (g.stride == 1 && g.kw == 5) return dw_forward_impl<5>(x, wt, bias, y, g);
    if (g.stride == 1 && g.kw == 3) return dw_forward_impl<3>(x, wt, bias, y, g);
    dw_forward_impl<0>(x, wt, bias, y, g);
}

// ---- backward dx, stride > 1: dx[n,h,w,c] = sum over taps (i,j) with h = ho*s-ph+i,
// w = wo*s-pw+j of g[n,ho,wo,c] * wt[i,j,c]. Gathered per input row, so no two threads write
// the same element. (Stride 1 is dw_forward with the 180-degree rotated kernel, see below.)
template <class T>
void dw_backward_input_strided(const T* gy, const T* wt, T* dx, const DwGeom& g) {
    const int64_t C = g.C, s = g.stride;
    parallel_range(g.N * g.H, g.macs() > kParallelMinMacs ? 1 : g.N * g.H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / g.H, h = r % g.H;
            T* dxrow = dx + r * g.W * C;
            std::fill(dxrow, dxrow + g.W * C, T(0));
            for (int64_t i = 0; i < g.kh; ++i) {
                const int64_t t = h + g.ph - i;
                if (t < 0 || t % s) continue;
                const int64_t ho = t / s;
                if (ho >= g.Ho) continue;
                const T* grow = gy + (n * g.Ho + ho) * g.Wo * C;
                for (int64_t j = 0; j < g.kw; ++j) {
                    const T* wv = wt + (i * g.kw + j) * C;
                    int64_t lo, hi;
                    valid_cols(j, s, g.pw, g.W, g.Wo, lo, hi);
                    for (int64_t wo = lo; wo < hi; ++wo) {
                        T* dp = dxrow + (wo * s - g.pw + j) * C;
                        const T* gp = grow + wo * C;
#pragma omp simd
                        for (int64_t c = 0; c < C; ++c) dp[c] += gp[c] * wv[c];
                    }
                }
            }
        }
    });
}

// ---- backward dW and dbias: dwt[i,j,c] = sum_{n,ho,wo} g[n,ho,wo,c] * x[n,ho*s-ph+i,wo*s-pw+j,c],
// db[c] = sum g. Output rows are cut into kWgradBlocks blocks, each summed into its own partial
// buffer, then the partials are reduced in order: no atomics, and the same result for any thread
// count.

// acc[j][c] += sum over b < WB of gp[b*C + c] * xp[(b + j)*xcs + c]: one kernel row of one tile,
// stride 1, kw == KW, accumulators in registers across calls.
template <int KW, int WB, int CB, class T, class TX>
inline void wgrad_tile(T (&acc)[KW][CB], const T* gp, int64_t gcs, const TX* xp, int64_t xcs) {
    T gb[WB][CB];
#pragma GCC unroll 8
    for (int b = 0; b < WB; ++b)
#pragma omp simd
        for (int c = 0; c < CB; ++c) gb[b][c] = gp[b * gcs + c];
#pragma GCC unroll 16
    for (int q = 0; q < WB + KW - 1; ++q) {  // input column q pairs with output b = q - j
        const TX* xq = xp + q * xcs;
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
            const int b = q - j;
            if (b < 0 || b >= WB) continue;
#pragma omp simd
            for (int c = 0; c < CB; ++c) acc[j][c] += gb[b][c] * widen(xq[c]);
        }
    }
}

#ifdef __AVX512F__
// The float tile of 16 channels in explicit AVX-512, for x in float or bfloat16. Auto-vectorised
// with a bfloat16 x, GCC chose 256-bit vectors for the mixed-width loop, twice the registers for
// the same tile, and spilled the accumulators to the stack: the weight gradient of bf16-saved
// activations ran at half the speed of the float one. Same operations in the same order as
// wgrad_tile, so the same sums.
constexpr bool kExplicitWgradTile = true;
inline __m512 load_widened(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_widened(const BFloat16* p) { return widen_bf16(_mm256_loadu_si256((const __m256i*)p)); }

// CLIP: a border tile; input columns w0 + q with q outside [q_lo, q_hi) lie in the zero padding
// and are skipped (their products are zeros) instead of being read from a zero-padded copy.
template <int KW, int WB, bool CLIP, class TX>
inline void wgrad_tile_avx512(__m512 (&acc)[KW], const float* gp, int64_t gcs, const TX* xrow, int64_t w0,
                              int64_t xcs, int q_lo = 0, int q_hi = 0) {
    __m512 gb[WB];
#pragma GCC unroll 8
    for (int b = 0; b < WB; ++b) gb[b] = _mm512_loadu_ps(gp + b * gcs);
#pragma GCC unroll 16
    for (int q = 0; q < WB + KW - 1; ++q) {
        if (CLIP && (q < q_lo || q >= q_hi)) continue;
        const __m512 xq = load_widened(xrow + (w0 + q) * xcs);
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
            const int b = q - j;
            if (b < 0 || b >= WB) continue;
            acc[j] = _mm512_fmadd_ps(gb[b], xq, acc[j]);
        }
    }
}
#else
constexpr bool kExplicitWgradTile = false;
#endif

// Plain loops over channels [c0, c1) of output row r: the generic path and the channel tail.
template <class T, class TX>
void wgrad_row_plain(T* pw, const T* grow, const TX* x, int64_t n, int64_t ho, int64_t c0, int64_t c1,
                     const DwGeom& g) {
    const int64_t C = g.C;
    for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t hi = ho * g.stride - g.ph + i;
        if (hi < 0 || hi >= g.H) continue;
        const TX* xrow = x + (n * g.H + hi) * g.W * C;
        for (int64_t j = 0; j < g.kw; ++j) {
            T* acc = pw + (i * g.kw + j) * C;
            int64_t lo, hi_c;
            valid_cols(j, g.stride, g.pw, g.W, g.Wo, lo, hi_c);
            for (int64_t wo = lo; wo < hi_c; ++wo) {
                const T* gp = grow + wo * C;
                const TX* xp = xrow + (wo * g.stride - g.pw + j) * C;
#pragma omp simd
                for (int64_t c = c0; c < c1; ++c) acc[c] += gp[c] * widen(xp[c]);
            }
        }
    }
}

// Tiled path for output row r (stride 1, kw == KW), channels [ca, cb) in blocks of CBX.
// gwin/xwin: scratch for the border tiles' zero-padded g columns and x window.
template <int KW, int CBX, class T, class TX>
void wgrad_row_tiled(T* pw, const T* grow, const TX* x, int64_t n, int64_t ho, int64_t ca, int64_t cb, T* gwin,
                     T* xwin, const DwGeom& g) {
    constexpr int WB = Tile<T>::WB;
    const int64_t C = g.C, span = WB + KW - 1;
    const int64_t tiles = (g.Wo + WB - 1) / WB;
    int64_t i0, i1;
    valid_rows(ho, g, i0, i1);
    for (int64_t c0 = ca; c0 < cb; c0 += CBX) {
        // g columns of every border tile, zero past Wo: independent of the kernel row
        for (int64_t t = 0; t < tiles; ++t) {
            const int64_t wo0 = t * WB;
            if (tile_inside(wo0, WB, g)) continue;
            for (int64_t b = 0; b < WB; ++b) {
                T* dst = gwin + (t * WB + b) * CBX;
                const T* src = grow + (wo0 + b) * C + c0;
                const bool in = wo0 + b < g.Wo;
#pragma omp simd
                for (int c = 0; c < CBX; ++c) dst[c] = in ? src[c] : T(0);
            }
        }
        for (int64_t i = i0; i < i1; ++i) {
            const TX* xrow = x + (n * g.H + ho - g.ph + i) * g.W * C + c0;
            T* pi = pw + i * KW * C + c0;
#ifdef __AVX512F__
            if constexpr (kExplicitWgradTile && std::is_same<T, float>::value && CBX == 16) {
                __m512 acc[KW];
                for (int j = 0; j < KW; ++j) acc[j] = _mm512_loadu_ps(pi + j * C);
                for (int64_t t = 0; t < tiles; ++t) {
                    const int64_t wo0 = t * WB, w0 = wo0 - g.pw;
                    if (tile_inside(wo0, WB, g)) {
                        wgrad_tile_avx512<KW, WB, false>(acc, grow + wo0 * C + c0, C, xrow, w0, C);
                    } else {
                        const int q_lo = (int)std::max<int64_t>(0, -w0), q_hi = (int)std::min<int64_t>(span, g.W - w0);
                        wgrad_tile_avx512<KW, WB, true>(acc, gwin + t * WB * CBX, CBX, xrow, w0, C, q_lo, q_hi);
                    }
                }
                for (int j = 0; j < KW; ++j) _mm512_storeu_ps(pi + j * C, acc[j]);
                continue;
            }
#endif
            T acc[KW][CBX];
            for (int j = 0; j < KW; ++j)
#pragma omp simd
                for (int c = 0; c < CBX; ++c) acc[j][c] = pi[j * C + c];
            for (int64_t t = 0; t < tiles; ++t) {
                const int64_t wo0 = t * WB, w0 = wo0 - g.pw;
                if (tile_inside(wo0, WB, g)) {
                    wgrad_tile<KW, WB, CBX>(acc, grow + wo0 * C + c0, C, xrow + w0 * C, C);
                } else {
                    copy_window<CBX>(xwin, xrow, 1, 0, w0, span, g);
                    wgrad_tile<KW, WB, CBX>(acc, gwin + t * WB * CBX, CBX, xwin, CBX);
                }
            }
            for (int j = 0; j < KW; ++j)
#pragma omp simd
                for (int c = 0; c < CBX; ++c) pi[j * C + c] = acc[j][c];
        }
    }
}

template <int KW, class T, class TX>
void dw_backward_weight_impl(const T* gy, const TX* x, T* dwt, T* db, const DwGeom& g) {
    constexpr int CB = Tile<T>::CB, HB = CB / 2, WB = Tile<T>::WB;
    const int64_t C = g.C, taps = g.kh * g.kw, Chalf = KW > 0 ? C - C % HB : 0;
    [[maybe_unused]] const int64_t Cfull = C - C % CB;  // (the generic KW = 0 path has no tiles)
    const int64_t rows = g.N * g.Ho;
    // A fixed number of row blocks, whatever the thread count: the result does not depend on it.
    const int64_t blocks =
        g.macs() > kParallelMinMacs ? std::max<int64_t>(1, std::min<int64_t>(rows, kWgradBlocks)) : 1;
    const int64_t stride_p = (taps + 1) * C;  // dwt then db
    std::vector<T> partial(blocks * stride_p, T(0));
    parallel_for(blocks, [&](int64_t b) {
        std::vector<T> gwin((g.Wo + WB - 1) / WB * WB * CB), xwin((WB + std::max(KW, 1) - 1) * CB);
        T* pw = partial.data() + b * stride_p;
        T* pb = pw + taps * C;
        for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
            const int64_t n = r / g.Ho, ho = r % g.Ho;
            const T* grow = gy + r * g.Wo * C;
            if (db)
                for (int64_t wo = 0; wo < g.Wo; ++wo) {
                    const T* gp = grow + wo * C;
#pragma omp simd
                    for (int64_t c = 0; c < C; ++c) pb[c] += gp[c];
                }
            if (!dwt) continue;
            if constexpr (KW > 0) {
                wgrad_row_tiled<KW, CB>(pw, grow, x, n, ho, 0, Cfull, gwin.data(), xwin.data(), g);
                wgrad_row_tiled<KW, HB>(pw, grow, x, n, ho, Cfull, Chalf, gwin.data(), xwin.data(), g);
            }
            if (Chalf < C) wgrad_row_plain(pw, grow, x, n, ho, Chalf, C, g);
        }
    });
    if (dwt) std::copy(partial.begin(), partial.begin() + taps * C, dwt);
    if (db) std::copy(partial.begin() + taps * C, partial.begin() + stride_p, db);
    for (int64_t b = 1; b < blocks; ++b) {
        const T* p = partial.data() + b * stride_p;
        if (dwt)
            for (int64_t k = 0; k < taps * C; ++k) dwt[k] += p[k];
        if (db)
            for (int64_t c = 0; c < C; ++c) db[c] += p[taps * C + c];
    }
}

// TX: how x was saved (T, or BFloat16, widened as the tiles read it).
template <class T, class TX>
void dw_backward_weight(const T* gy, const TX* x, T* dwt, T* db, const DwGeom& g) {
    if (dwt && g.stride == 1 && g.kw == 7) return dw_backward_weight_impl<7>(gy, x, dwt, db, g);
    if (dwt && g.stride == 1 && g.kw == 5) return dw_backward_weight_impl<5>(gy, x, dwt, db, g);
    if (dwt && g.stride == 1 && g.kw == 3) return dw_backward_weight_impl<3>(gy, x, dwt, db, g);
    dw_backward_weight_impl<0>(gy, x, dwt, db, g);
}

// Stride-1 dx as a forward convolution: input g [N,Ho,Wo,C], output [N,H,W,C], padding k-1-p
// (negative when p > k-1, which the forward kernel handles).
DwGeom transposed_geometry(const DwGeom& g) {
    DwGeom t = g;
    t.H = g.Ho, t.W = g.Wo, t.Ho = g.H, t.Wo = g.W;
    t.ph = g.kh - 1 - g.ph, t.pw = g.kw - 1 - g.pw;
    return t;
}

// dw[C,1,kh,kw] <- dwt[kh,kw,C]
template <class T>
void unpack_weight(const T* dwt, T* dw, int64_t C, int64_t kh, int64_t kw) {
    const int64_t taps = kh * kw;
    for (int64_t c0 = 0; c0 < C; c0 += kRepackChannels) {
        const int64_t c1 = std::min(C, c0 + kRepackChannels);
        for (int64_t c = c0; c < c1; ++c)
            for (int64_t t = 0; t < taps; ++t) dw[c * taps + t] = dwt[t * C + c];
    }
}

DwGeom check_and_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
    CNX_CHECK(x.defined() && weight.defined(), "depthwise_conv2d: undefined input or weight");
    CNX_CHECK(x.dim() == 4, "depthwise_conv2d: input must be NHWC [N,H,W,C], got ", x.str());
    CNX_CHECK(weight.dim() == 4 && weight.size(1) == 1, "depthwise_conv2d: weight must be [C,1,kh,kw], got ",
              weight.str());
    CNX_CHECK(x.dtype() == weight.dtype(), "depthwise_conv2d: dtype mismatch, input ", x.str(), " and weight ",
              weight.str());
    CNX_CHECK(stride >= 1 && padding >= 0, "depthwise_conv2d: stride must be >= 1 and padding >= 0, got stride ",
              stride, ", padding ", padding);
    DwGeom g;
    g.N = x.size(0), g.H = x.size(1), g.W = x.size(2), g.C = x.size(3);
    g.kh = weight.size(2), g.kw = weight.size(3), g.stride = stride, g.ph = g.pw = padding;
    CNX_CHECK(weight.size(0) == g.C, "depthwise_conv2d: input ", shape_str(x.shape()), " has ", g.C,
              " channels but weight ", shape_str(weight.shape()), " has ", weight.size(0));
    CNX_CHECK(g.kh >= 1 && g.kw >= 1, "depthwise_conv2d: empty kernel in weight ", shape_str(weight.shape()));
    if (bias.defined()) {
        CNX_CHECK(bias.dtype() == x.dtype(), "depthwise_conv2d: dtype mismatch, input ", x.str(), " and bias ",
                  bias.str());
        CNX_CHECK(bias.dim() == 1 && bias.size(0) == g.C, "depthwise_conv2d: bias ", shape_str(bias.shape()),
                  " does not match ", g.C, " channels (weight ", shape_str(weight.shape()), ")");
    }
    CNX_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, "depthwise_conv2d: kernel ", g.kh, "x", g.kw,
              " is larger than the padded input ", g.H + 2 * padding, "x", g.W + 2 * padding, " (input ",
              shape_str(x.shape()), ", padding ", padding, ")");
    g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
    return g;
}

// The forward's output, as a new tensor (the op, and its regeneration in the backward).
Tensor forward_output(const Tensor& x, const Tensor& weight, const Tensor& bias, const DwGeom& geo) {
    Tensor y = Tensor::empty({geo.N, geo.Ho, geo.Wo, geo.C}, x.dtype());
    CNX_DISPATCH(x.dtype(), "depthwise_conv2d", {
        std::vector<scalar_t> wt(geo.kh * geo.kw * geo.C);
        pack_weight(weight.data<scalar_t>(), wt.data(), geo.C, geo.kh, geo.kw, false);
        dw_forward<scalar_t>(x.data<scalar_t>(), wt.data(), bias.defined() ? bias.data<scalar_t>() : nullptr,
                             y.data<scalar_t>(), geo);
    });
    return y;
}

}  // namespace

Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
    const DwGeom geo = check_and_geometry(x, weight, bias, stride, padding);
    count_macs("depthwise_conv2d", geo.macs());
    Tensor y = forward_output(x, weight, bias, geo);
    if (autograd::records("depthwise_conv2d", {x, weight, bias})) {
        const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
        const bool need_b = bias.defined() && bias.requires_grad();
        const SavedTensor sx = need_w ? save_for_backward(x) : SavedTensor();
        Tensor sw = need_x ? weight.detach() : Tensor();
        autograd::record("depthwise_conv2d", y, {x, weight, bias},
                         [sx, sw, need_x, need_w, need_b, geo](const Tensor& gy) -> std::vector<Tensor> {
                             Tensor dx, dw, db;
                             if (need_x) dx = Tensor::empty({geo.N, geo.H, geo.W, geo.C}, gy.dtype());
                             if (need_w) dw = Tensor::empty({geo.C, 1, geo.kh, geo.kw}, gy.dtype());
                             if (need_b) db = Tensor::empty({geo.C}, gy.dtype());
                             CNX_DISPATCH(gy.dtype(), "depthwise_conv2d backward", {
                                 const scalar_t* g = gy.data<scalar_t>();
                                 if (need_x) {
                                     std::vector<scalar_t> wt(geo.kh * geo.kw * geo.C);
                                     if (geo.stride == 1) {
                                         // dx is the correlation of g with the 180-degree rotated
                                         // kernel, padded by k-1-p: the forward kernel again.
                                         pack_weight(sw.data<scalar_t>(), wt.data(), geo.C, geo.kh, geo.kw, true);
                                         dw_forward<scalar_t>(g, wt.data(), nullptr, dx.data<scalar_t>(),
                                                              transposed_geometry(geo));
                                     } else {
                                         pack_weight(sw.data<scalar_t>(), wt.data(), geo.C, geo.kh, geo.kw, false);
                                         dw_backward_input_strided<scalar_t>(g, wt.data(), dx.data<scalar_t>(), geo);
                                     }
                                 }
                                 if (need_w || need_b) {
                                     std::vector<scalar_t> dwt(need_w ? geo.kh * geo.kw * geo.C : 0);
                                     scalar_t* pdb = need_b ? db.data<scalar_t>() : nullptr;
                                     if (sx.is_bf16())
                                         dw_backward_weight<scalar_t>(g, sx.stored().data<BFloat16>(), dwt.data(), pdb,
                                                                      geo);
                                     else
                                         dw_backward_weight<scalar_t>(g,
                                                                      need_w ? sx.stored().data<scalar_t>() : nullptr,
                                                                      need_w ? dwt.data() : nullptr, pdb, geo);
                                     if (need_w) unpack_weight(dwt.data(), dw.data<scalar_t>(), geo.C, geo.kh, geo.kw);
                                 }
                             });
                             return {dx, dw, db};
                         });
        // The output again, from the input saved for the weight gradient (ops/saved.h,
        // Recompute::Cheap): 2*kh*kw FLOPs an element, a few per cent of a block's step.
        if (need_w && recomputes_cheap()) {
            Tensor w = weight.detach(), b = bias.defined() ? bias.detach() : Tensor();
            autograd::offer_regenerate(y, [sx, w, b, geo]() { return forward_output(sx.get(), w, b, geo); });
        }
    }
    return y;
}

namespace ref {
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
    const DwGeom g = check_and_geometry(x, weight, bias, stride, padding);
    Tensor y = Tensor::empty({g.N, g.Ho, g.Wo, g.C}, x.dtype());
    CNX_DISPATCH(x.dtype(), "ref::depthwise_conv2d", {
        const scalar_t* xp = x.data<scalar_t>();
        const scalar_t* wp = weight.data<scalar_t>();
        const scalar_t* bp = bias.defined() ? bias.data<scalar_t>() : nullptr;
        scalar_t* yp = y.data<scalar_t>();
        for (int64_t n = 0; n < g.N; ++n)
            for (int64_t ho = 0; ho < g.Ho; ++ho)
                for (int64_t wo = 0; wo < g.Wo; ++wo)
                    for (int64_t c = 0; c < g.C; ++c) {
                        double acc = bp ? bp[c] : 0.0;
                        for (int64_t i = 0; i < g.kh; ++i)
                            for (int64_t j = 0; j < g.kw; ++j) {
                                const int64_t h = ho * stride - padding + i, w = wo * stride - padding + j;
                                if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
                                acc += (double)xp[((n * g.H + h) * g.W + w) * g.C + c] *
                                       (double)wp[(c * g.kh + i) * g.kw + j];
                            }
                        yp[((n * g.Ho + ho) * g.Wo + wo) * g.C + c] = (scalar_t)acc;
                    }
    });
    return y;
}
}  // namespace ref

}  // namespace cnx
