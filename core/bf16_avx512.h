#pragma once
// The 16-lane forms of float_to_bf16 / bf16_to_float (core/dtype.h), bit for bit: round to nearest
// even with a NaN kept quiet, in integer operations only (no AVX512_BF16 needed, so every path of
// the library stores the same bits). x86-64 only; include after <immintrin.h>. The functions carry
// their own target attribute (GCC and clang both honour it, clang ignores `#pragma GCC target`), so
// they compile without -mavx512f and inline into any function whose target includes these
// features; static, so each translation unit keeps its own copy.

#define CNX_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw")))

static inline CNX_TARGET_AVX512 __m256i round_bf16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i high = _mm512_srli_epi32(u, 16);
    const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

// Exact: the bf16 bits become the high half of the float32.
static inline CNX_TARGET_AVX512 __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
