// Bulk float32 <-> bfloat16 conversions (core/dtype.h). The bf16 training path converts every
// saved activation once each way; GCC's own vectorisation of float_to_bf16 reached ~4-7 G
// elements/s per core on an Intel Xeon (family 6 model 207), which cost ConvNeXt-atto/32 training
// a few percent of its step in bf16. Written out in AVX-512 (core/bf16_avx512.h: the same bits as
// float_to_bf16), chosen at run time; other CPUs and builds use the scalar loops.

// GCC 12 flags the deliberately undefined vectors inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) when they are compiled for a target attribute rather than -mavx512f.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "core/cpu_info.h"
#include "core/dtype.h"

#if defined(__x86_64__)
#define CNX_BF16_CONVERT_X86 1
#include <immintrin.h>

#include "core/bf16_avx512.h"

namespace cnx {
namespace {

CNX_TARGET_AVX512 __attribute__((noinline)) void from_float_avx512(const float* src, BFloat16* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i a = round_bf16(_mm512_loadu_ps(src + i)), b = round_bf16(_mm512_loadu_ps(src + i + 16));
        _mm256_storeu_si256((__m256i*)(dst + i), a);
        _mm256_storeu_si256((__m256i*)(dst + i + 16), b);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, round_bf16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

CNX_TARGET_AVX512 __attribute__((noinline)) void to_float_avx512(const BFloat16* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, widen_bf16(_mm256_loadu_si256((const __m256i*)(src + i))));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, widen_bf16(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

bool avx512_here() {
    static const bool yes = cpu_info().avx512;
    return yes;
}

}  // namespace
}  // namespace cnx
#else
#define CNX_BF16_CONVERT_X86 0
#endif

namespace cnx {

void bf16_from_float(const float* src, BFloat16* dst, int64_t n) {
#if CNX_BF16_CONVERT_X86
    if (avx512_here()) return from_float_avx512(src, dst, n);
#endif
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void bf16_to_float(const BFloat16* src, float* dst, int64_t n) {
#if CNX_BF16_CONVERT_X86
    if (avx512_here()) return to_float_avx512(src, dst, n);
#endif
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

}  // namespace cnx
