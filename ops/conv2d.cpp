// General 2-D convolution on NHWC activations with PyTorch's [Cout, Cin/groups, kh, kw] weight.
// Three routes:
//   patchify  kernel == stride, padding 0, groups 1 (ConvNeXt's stem 4x4/4 and downsamples 2x2/2):
//             non-overlapping patches gathered into one [N·Ho·Wo, kh·kw·Cin] matrix, one GEMM;
//   depthwise groups == Cin == Cout: depthwise_conv2d;
//   im2col    everything else: im2col + one GEMM per group, col2im backward.
// Patch/column order is (i, j, c) with c innermost, so gathers copy contiguous NHWC channel runs,
// and the weight is repacked to [Cout, kh, kw, Cin/groups] to match.
#include "ops/conv2d.h"

#include <algorithm>
#include <initializer_list>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/meta.h"
#include "ops/depthwise_conv2d.h"
#include "ops/gemm.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

struct ConvGeom {
    int64_t N, H, W, Cin;
    int64_t Cout, kh, kw, stride, pad, groups;
    int64_t Ho, Wo;
    int64_t cin_g() const { return Cin / groups; }
    int64_t cout_g() const { return Cout / groups; }
    int64_t M() const { return N * Ho * Wo; }        // GEMM rows: output pixels
    int64_t K() const { return kh * kw * cin_g(); }  // GEMM depth: one group's patch
};

ConvGeom check_and_geometry(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                            int padding, int groups) {
    CNX_CHECK(x.defined() && weight.defined(), op, ": undefined input or weight");
    CNX_CHECK(x.dim() == 4, op, ": input must be NHWC [N,H,W,C], got ", x.str());
    CNX_CHECK(weight.dim() == 4, op, ": weight must be [Cout, Cin/groups, kh, kw], got ", weight.str());
    CNX_CHECK(x.dtype() == weight.dtype(), op, ": dtype mismatch, input ", x.str(), " and weight ", weight.str());
    CNX_CHECK(stride >= 1 && padding >= 0 && groups >= 1, op,
              ": need stride >= 1, padding >= 0, groups >= 1, got stride ", stride, ", padding ", padding, ", groups ",
              groups);
    ConvGeom g;
    g.N = x.size(0), g.H = x.size(1), g.W = x.size(2), g.Cin = x.size(3);
    g.Cout = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
    g.stride = stride, g.pad = padding, g.groups = groups;
    CNX_CHECK(g.Cout % groups == 0, op, ": weight ", shape_str(weight.shape()), " has ", g.Cout,
              " output channels, not divisible by groups=", groups);
    CNX_CHECK(weight.size(1) * groups == g.Cin, op, ": input ", shape_str(x.shape()), " has ", g.Cin,
              " channels but weight ", shape_str(weight.shape()), " with groups=", groups, " expects ",
              weight.size(1) * groups);
    CNX_CHECK(g.kh >= 1 && g.kw >= 1, op, ": empty kernel in weight ", shape_str(weight.shape()));
    if (bias.defined()) {
        CNX_CHECK(bias.dtype() == x.dtype(), op, ": dtype mismatch, input ", x.str(), " and bias ", bias.str());
        CNX_CHECK(bias.dim() == 1 && bias.size(0) == g.Cout, op, ": bias ", shape_str(bias.shape()),
                  " does not match weight ", shape_str(weight.shape()), " (expected [", g.Cout, "])");
    }
    CNX_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, op, ": kernel ", g.kh, "x", g.kw,
              " is larger than the padded input ", g.H + 2 * padding, "x", g.W + 2 * padding, " (input ",
              shape_str(x.shape()), ", padding ", padding, ")");
    g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
    return g;
}

// ---- weight layout ------------------------------------------------------------------------

// Both directions transpose each output channel's [Cin_g, kh·kw] block. The loops run over the
// destination in order (the source block, a few KB, stays in L1) and split over output channels:
// run on one thread with the other idle, the repack of the last downsample's 1.2M-value weight
// took about a third of that convolution's time at batch 1.
template <class T>
void transpose_block_plain(const T* s, T* d, int64_t rows, int64_t cols) {
    for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < rows; ++r) d[c * rows + r] = s[r * cols + c];
}

template <class T>
void transpose_block(const T* s, T* d, int64_t rows, int64_t cols) {
    transpose_block_plain(s, d, rows, cols);
}

#ifdef __AVX512F__
// The 2x2 kernels of every downsample make the blocks [Cin, 4] (pack) and [4, Cin] (unpack); the
// element loop above reads or writes with a 16-byte stride there, so these take 16 rows at a
// time through two rounds of two-source permutes.
inline __m512i index_vector(std::initializer_list<int> v) {
    alignas(64) int a[16];
    std::copy(v.begin(), v.end(), a);
    return _mm512_load_si512(a);
}

void transpose_rows_by_4(const float* s, float* d, int64_t rows) {  // [rows, 4] -> [4, rows]
    const __m512i c01 = index_vector({0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29});
    const __m512i c23 = index_vector({2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31});
    const __m512i lo = index_vector({0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23});
    const __m512i hi = index_vector({8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
    for (int64_t r = 0; r < rows; r += 16, s += 64) {
        const __m512 v0 = _mm512_loadu_ps(s), v1 = _mm512_loadu_ps(s + 16);
        const __m512 v2 = _mm512_loadu_ps(s + 32), v3 = _mm512_loadu_ps(s + 48);
        const __m512 a01 = _mm512_permutex2var_ps(v0, c01, v1), a23 = _mm512_permutex2var_ps(v0, c23, v1);
        const __m512 b01 = _mm512_permutex2var_ps(v2, c01, v3), b23 = _mm512_permutex2var_ps(v2, c23, v3);
        _mm512_storeu_ps(d + r, _mm512_permutex2var_ps(a01, lo, b01));
        _mm512_storeu_ps(d + rows + r, _mm512_permutex2var_ps(a01, hi, b01));
        _mm512_storeu_ps(d + 2 * rows + r, _mm512_permutex2var_ps(a23, lo, b23));
        _mm512_storeu_ps(d + 3 * rows + r, _mm512_permutex2var_ps(a23, hi, b23));
    }
}

void transpose_4_by_cols(const float* s, float* d, int64_t cols) {  // [4, cols] -> [cols, 4]
    const __m512i p_lo = index_vector({0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23});
    const __m512i p_hi = index_vector({8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31});
    const __m512i q0 = index_vector({0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23});
    const __m512i q1 = index_vector({8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31});
    for (int64_t c = 0; c < cols; c += 16, d += 64) {
        const __m512 r0 = _mm512_loadu_ps(s + c), r1 = _mm512_loadu_ps(s + cols + c);
        const __m512 r2 = _mm512_loadu_ps(s + 2 * cols + c), r3 = _mm512_loadu_ps(s + 3 * cols + c);
        const __m512 a_lo = _mm512_permutex2var_ps(r0, p_lo, r1), a_hi = _mm512_permutex2var_ps(r0, p_hi, r1);
        const __m512 b_lo = _mm512_permutex2var_ps(r2, p_lo, r3), b_hi = _mm512_permutex2var_ps(r2, p_hi, r3);
        _mm512_storeu_ps(d, _mm512_permutex2var_ps(a_lo, q0, b_lo));
        _mm512_storeu_ps(d + 16, _mm512_permutex2var_ps(a_lo, q1, b_lo));
        _mm512_storeu_ps(d + 32, _mm512_permutex2var_ps(a_hi, q0, b_hi));
        _mm512_storeu_ps(d + 48, _mm512_permutex2var_ps(a_hi, q1, b_hi));
    }
}

template <>
void transpose_block<float>(const float* s, float* d, int64_t rows, int64_t cols) {
    if (cols == 4 && rows % 16 == 0)
        transpose_rows_by_4(s, d, rows);
    else if (rows == 4 && cols % 16 == 0)
        transpose_4_by_cols(s, d, cols);
    else
        transpose_block_plain(s, d, rows, cols);
}
#endif

template <class T>
void transpose_weight_blocks(const T* src, T* dst, int64_t Cout, int64_t rows, int64_t cols) {
    const int64_t block = rows * cols;
    parallel_range(Cout, Cout * block > kParallelMin ? 1 : Cout, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) transpose_block(src + o * block, dst + o * block, rows, cols);
    });
}

// wr[Cout, kh, kw, Cin_g] <- w[Cout, Cin_g, kh, kw]
template <class T>
void pack_weight(const T* w, T* wr, int64_t Cout, int64_t cin_g, int64_t kh, int64_t kw) {
    transpose_weight_blocks(w, wr, Cout, cin_g, kh * kw);
}

// dw[Cout, Cin_g, kh, kw] <- dwr[Cout, kh, kw, Cin_g]
template <class T>
void unpack_weight(const T* dwr, T* dw, int64_t Cout, int64_t cin_g, int64_t kh, int64_t kw) {
    transpose_weight_blocks(dwr, dw, Cout, kh * kw, cin_g);
}

// ---- patchify (kernel == stride, padding 0, groups 1) -----------------------------------------
// p[(n,ho,wo), (i,j,c)] = x[n, ho*s+i, wo*s+j, c]: for each kernel row i the patch row is one
// contiguous run of s*Cin values of x. Rows/cols of x beyond Ho*s / Wo*s are ignored (PyTorch).
// Calls f(x_offset, p_offset, run) for every run, in parallel over (n, ho).
template <class F>
void for_each_patch_run(const ConvGeom& g, F&& f) {
    const int64_t s = g.stride, run = s * g.Cin, K = s * run, rows = g.N * g.Ho;
    parallel_range(rows, g.M() * K > kParallelMinMacs ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / g.Ho, ho = r % g.Ho;
            for (int64_t wo = 0; wo < g.Wo; ++wo)
                for (int64_t i = 0; i < s; ++i)
                    f(((n * g.H + ho * s + i) * g.W + wo * s) * g.Cin, (r * g.Wo + wo) * K + i * run, run);
        }
    });
}

template <class T>
void patch_gather(const T* x, T* p, const ConvGeom& g) {
    for_each_patch_run(g, [&](int64_t xo, int64_t po, int64_t run) { std::copy(x + xo, x + xo + run, p + po); });
}

// The patches do not overlap, so the scatter is a copy; the ignored trailing rows/cols get zeros.
template <class T>
void patch_scatter(const T* p, T* x, const ConvGeom& g) {
    if (g.H != g.Ho * g.stride || g.W != g.Wo * g.stride) std::fill(x, x + g.N * g.H * g.W * g.Cin, T(0));
    for_each_patch_run(g, [&](int64_t xo, int64_t po, int64_t run) { std::copy(p + po, p + po + run, x + xo); });
}

// ---- im2col / col2im (one group) --------------------------------------------------------------
// cols[(n,ho,wo), (i,j,c)] = x[n, ho*s-p+i, wo*s-p+j, grp*Cin_g + c], zero outside the image.
template <class T>
void im2col(const T* x, T* cols, const ConvGeom& g, int64_t grp) {
    const int64_t cg = g.cin_g(), K = g.K(), c0 = grp * cg, rows = g.N * g.Ho;
    parallel_range(rows, g.M() * K > kParallelMinMacs ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / g.Ho, ho = r % g.Ho;
            for (int64_t wo = 0; wo < g.Wo; ++wo) {
                T* crow = cols + ((n * g.Ho + ho) * g.Wo + wo) * K;
                for (int64_t i = 0; i < g.kh; ++i) {
                    const int64_t h = ho * g.stride - g.pad + i;
                    for (int64_t j = 0; j < g.kw; ++j) {
                        const int64_t w = wo * g.stride - g.pad + j;
                        T* dst = crow + (i * g.kw + j) * cg;
                        if (h < 0 || h >= g.H || w < 0 || w >= g.W)
                            std::fill(dst, dst + cg, T{});
                        else {
                            const T* src = x + ((n * g.H + h) * g.W + w) * g.Cin + c0;
                            std::copy(src, src + cg, dst);
                        }
                    }
                }
            }
        }
    });
}

// dx[n,h,w, grp*Cin_g + c] = sum of cols entries that im2col read from there. Gathered per
// input row (n, h) so threads never write the same element; groups own disjoint channels.
template <class T>
void col2im(const T* cols, T* dx, const ConvGeom& g, int64_t grp) {
    const int64_t cg = g.cin_g(), K = g.K(), c0 = grp * cg, s = g.stride, rows = g.N * g.H;
    parallel_range(rows, g.M() * K > kParallelMinMacs ? 1 : rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t n = r / g.H, h = r % g.H;
            for (int64_t w = 0; w < g.W; ++w) {
                T* dst = dx + ((n * g.H + h) * g.W + w) * g.Cin + c0;
                std::fill(dst, dst + cg, T(0));
                for (int64_t i = 0; i < g.kh; ++i) {
                    const int64_t th = h + g.pad - i;
                    if (th < 0 || th % s) continue;
                    const int64_t ho = th / s;
                    if (ho >= g.Ho) continue;
                    for (int64_t j = 0; j < g.kw; ++j) {
                        const int64_t tw = w + g.pad - j;
                        if (tw < 0 || tw % s) continue;
                        const int64_t wo = tw / s;
                        if (wo >= g.Wo) continue;
                        const T* src = cols + ((n * g.Ho + ho) * g.Wo + wo) * K + (i * g.kw + j) * cg;
#pragma omp simd
                        for (int64_t c = 0; c < cg; ++c) dst[c] += src[c];
                    }
                }
            }
        }
    });
}

// ---- forward / backward over the GEMM routes --------------------------------------------------
// y[M, Cout] (NHWC output as a matrix) = for each group: cols_g[M, K] · wr_g[Cout_g, K]^T (+ bias)

bool is_patchify(const ConvGeom& g) { return g.kh == g.stride && g.kw == g.stride && g.pad == 0 && g.groups == 1; }

// Scratch matrices (patches, columns: multi-MB for the stem) come from the caching allocator, as
// activations do, so a training step does not fault in fresh pages on every call.
template <class T>
struct Scratch {
    Tensor t;
    T* get(int64_t n) {
        if (!t.defined() || t.numel() < n) t = Tensor::empty({n}, dtype_of<T>::value);
        return t.data<T>();
    }
};

// Patch / column matrix [M, K] of group grp (x itself for a 1x1 stride-1 conv).
template <class T>
const T* gather(const T* x, Scratch<T>& buf, const ConvGeom& g, int64_t grp) {
    if (is_patchify(g) && g.stride == 1) return x;  // 1x1: the NHWC input already is the [M, Cin] matrix
    T* cols = buf.get(g.M() * g.K());
    if (is_patchify(g))
        patch_gather(x, cols, g);
    else
        im2col(x, cols, g, grp);
    return cols;
}

template <class T>
void conv_forward(const T* x, const T* w, const T* bias, T* y, const ConvGeom& g) {
    const int64_t M = g.M(), K = g.K(), cog = g.cout_g();
    Scratch<T> wbuf, buf;
    T* wr = wbuf.get(g.Cout * K);
    pack_weight(w, wr, g.Cout, g.cin_g(), g.kh, g.kw);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* cols = gather(x, buf, g, grp);
        GemmEpilogue<T> ep;  // bias added in the GEMM's output pass
        ep.bias = bias ? bias + grp * cog : nullptr;
        gemm_ex<T>(false, true, M, cog, K, T(1), cols, K, wr + grp * cog * K, K, T(0), y + grp * cog, g.Cout, ep);
    }
}

// dx (may be null), dw (may be null), db (may be null) from gy[M, Cout]. TX: how x was saved (T,
// or BFloat16: its patches are gathered in bfloat16 and the GEMM reads them as they are).
template <class T, class TX>
void conv_backward(const T* gy, const TX* x, const T* w, T* dx, T* dw, T* db, const ConvGeom& g) {
    const int64_t M = g.M(), K = g.K(), cog = g.cout_g();
    if (db) sum_rows<T>(gy, M, g.Cout, db);
    if (!dx && !dw) return;
    Scratch<T> wbuf, dwbuf, dbuf;
    Scratch<TX> buf;
    T* wr = dx ? wbuf.get(g.Cout * K) : nullptr;
    T* dwr = dw ? dwbuf.get(g.Cout * K) : nullptr;
    if (dx) pack_weight(w, wr, g.Cout, g.cin_g(), g.kh, g.kw);
    const bool patch = is_patchify(g), one_by_one = patch && g.stride == 1;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* gyg = gy + grp * cog;  // [M, Cout_g] block, row stride Cout
        if (dw) {                       // dwr_g[Cout_g, K] = gy_g^T · cols_g
            const TX* cols = gather(x, buf, g, grp);
            if constexpr (std::is_same<TX, T>::value)
                gemm<T>(true, false, cog, K, M, T(1), gyg, g.Cout, cols, K, T(0), dwr + grp * cog * K, K);
            else
                gemm_mixed<T, TX>(true, false, cog, K, M, 1.0f, gyg, g.Cout, cols, K, 0.0f, dwr + grp * cog * K, K,
                                  GemmEpilogue<float>{});
        }
        if (dx) {  // dcols[M, K] = gy_g · wr_g, then back to image positions (1x1: dx is dcols)
            T* dcols = one_by_one ? dx : dbuf.get(M * K);
            gemm<T>(false, false, M, K, cog, T(1), gyg, g.Cout, wr + grp * cog * K, K, T(0), dcols, K);
            if (patch && !one_by_one)
                patch_scatter(dcols, dx, g);
            else if (!patch)
                col2im(dcols, dx, g, grp);
        }
    }
    if (dw) unpack_weight(dwr, dw, g.Cout, g.cin_g(), g.kh, g.kw);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding, int groups) {
    const ConvGeom geo = check_and_geometry("conv2d", x, weight, bias, stride, padding, groups);
    if (groups > 1 && groups == geo.Cin && groups == geo.Cout)
        return depthwise_conv2d(x, weight, bias, stride, padding);
    count_macs("conv2d", geo.M() * geo.Cout * geo.K());
    Tensor y = Tensor::empty({geo.N, geo.Ho, geo.Wo, geo.Cout}, x.dtype());
    CNX_DISPATCH(x.dtype(), "conv2d", {
        conv_forward<scalar_t>(x.data<scalar_t>(), weight.data<scalar_t>(),
                               bias.defined() ? bias.data<scalar_t>() : nullptr, y.data<scalar_t>(), geo);
    });
    if (autograd::records("conv2d", {x, weight, bias})) {
        const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
        const bool need_b = bias.defined() && bias.requires_grad();
        // x only for dW (patches are re-gathered)
        const SavedTensor sx = need_w ? save_for_backward(x) : SavedTensor();
        Tensor sw = need_x ? weight.detach() : Tensor();
        autograd::record("conv2d", y, {x, weight, bias},
                         [sx, sw, need_x, need_w, need_b, geo](const Tensor& gy) -> std::vector<Tensor> {
                             Tensor dx, dw, db;
                             if (need_x) dx = Tensor::empty({geo.N, geo.H, geo.W, geo.Cin}, gy.dtype());
                             if (need_w) dw = Tensor::empty({geo.Cout, geo.cin_g(), geo.kh, geo.kw}, gy.dtype());
                             if (need_b) db = Tensor::empty({geo.Cout}, gy.dtype());
                             if (sx.is_bf16() && !meta_mode()) {
                                 conv_backward<float>(gy.data<float>(), sx.stored().data<BFloat16>(),
                                                      need_x ? sw.data<float>() : nullptr,
                                                      need_x ? dx.data<float>() : nullptr, dw.data<float>(),
                                                      need_b ? db.data<float>() : nullptr, geo);
                                 return {dx, dw, db};
                             }
                             CNX_DISPATCH(gy.dtype(), "conv2d backward", {
                                 conv_backward<scalar_t>(gy.data<scalar_t>(),
                                                         need_w ? sx.stored().data<scalar_t>() : nullptr,
                                                         need_x ? sw.data<scalar_t>() : nullptr,
                                                         need_x ? dx.data<scalar_t>() : nullptr,
                                                         need_w ? dw.data<scalar_t>() : nullptr,
                                                         need_b ? db.data<scalar_t>() : nullptr, geo);
                             });
                             return {dx, dw, db};
                         });
    }
    return y;
}

namespace ref {
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding, int groups) {
    const ConvGeom g = check_and_geometry("ref::conv2d", x, weight, bias, stride, padding, groups);
    Tensor y = Tensor::empty({g.N, g.Ho, g.Wo, g.Cout}, x.dtype());
    CNX_DISPATCH(x.dtype(), "ref::conv2d", {
        const scalar_t* xp = x.data<scalar_t>();
        const scalar_t* wp = weight.data<scalar_t>();
        const scalar_t* bp = bias.defined() ? bias.data<scalar_t>() : nullptr;
        scalar_t* yp = y.data<scalar_t>();
        const int64_t cg = g.cin_g(), cog = g.cout_g();
        for (int64_t n = 0; n < g.N; ++n)
            for (int64_t ho = 0; ho < g.Ho; ++ho)
                for (int64_t wo = 0; wo < g.Wo; ++wo)
                    for (int64_t o = 0; o < g.Cout; ++o) {
                        const int64_t grp = o / cog;
                        double acc = bp ? bp[o] : 0.0;
                        for (int64_t c = 0; c < cg; ++c)
                            for (int64_t i = 0; i < g.kh; ++i)
                                for (int64_t j = 0; j < g.kw; ++j) {
                                    const int64_t h = ho * stride - padding + i, w = wo * stride - padding + j;
                                    if (h < 0 || h >= g.H || w < 0 || w >= g.W) continue;
                                    acc += (double)xp[((n * g.H + h) * g.W + w) * g.Cin + grp * cg + c] *
                                           (double)wp[((o * cg + c) * g.kh + i) * g.kw + j];
                                }
                        yp[((n * g.Ho + ho) * g.Wo + wo) * g.Cout + o] = (scalar_t)acc;
                    }
    });
    return y;
}
}  // namespace ref

}  // namespace cnx
