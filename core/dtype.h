#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/meta.h"

namespace cnx {

// float32 trains; float64 exists so every op can be gradchecked by finite differences; bfloat16
// is a storage type (activations saved for backward under --precision bf16, half-size weight
// files): ops compute in float32 and read or write bfloat16 where they say so. CNX_DISPATCH (below)
// covers float32 and float64 only, so an op handed a bfloat16 tensor it does not expect fails
// with a clear error instead of misreading it.
enum class DType { F32, F64, BF16 };

inline size_t dtype_size(DType d) { return d == DType::F32 ? 4 : d == DType::F64 ? 8 : 2; }
inline const char* dtype_name(DType d) {
    return d == DType::F32 ? "float32" : d == DType::F64 ? "float64" : "bfloat16";
}

// bfloat16 (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training"): the top half
// of a float32 -- sign, the 8-bit exponent, 7 mantissa bits -- so it spans float32's range with
// ~3 significant digits. Widening to float32 is exact (a shift); narrowing rounds to nearest,
// ties to even, as torch.Tensor.to(torch.bfloat16) does: overflow goes to infinity, NaN stays a
// (quiet) NaN with its sign, subnormals round like any other value.
struct BFloat16 {
    uint16_t bits = 0;
};

inline float bf16_to_float(BFloat16 b) {
    const uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline BFloat16 float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{(uint16_t)((u >> 16) | 0x0040u)};  // NaN: set the quiet bit
    u += 0x7fffu + ((u >> 16) & 1u);  // round half to even on the 16 bits dropped
    return BFloat16{(uint16_t)(u >> 16)};
}

// IEEE 754 binary16 (torch.float16, safetensors F16) to float32, exactly: every half value,
// subnormals included, is a float32; infinities stay infinities and a NaN keeps its sign and payload.
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = (float)mant * (1.0f / 16777216.0f);  // zero or subnormal: mant * 2^-24
        return sign ? -f : f;
    }
    const uint32_t bits = exp == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
    std::memcpy(&f, &bits, 4);
    return f;
}

// Bulk conversions, bit for bit the element-wise ones above (AVX-512 where the CPU has it,
// core/bf16_convert.cpp); ops/saved.h has multi-threaded ones.
void bf16_from_float(const float* src, BFloat16* dst, int64_t n);
void bf16_to_float(const BFloat16* src, float* dst, int64_t n);

// A stored element in the type kernels compute in: itself, or a bfloat16 widened to float32. Lets a
// kernel template over its input's storage type (float, double or BFloat16) read it one way.
template <class T> inline T widen(T v) { return v; }
inline float widen(BFloat16 v) { return bf16_to_float(v); }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::BF16; };

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (auto d : s) n *= d;
    return n;
}

inline std::string shape_str(const Shape& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) {
        if (i) out += ",";
        out += std::to_string(s[i]);
    }
    return out + "]";
}

}  // namespace cnx

// Runs the body with `scalar_t` bound to float or double according to a runtime dtype:
//   CNX_DISPATCH(x.dtype(), "gelu", { gelu_forward<scalar_t>(...); });
// Keep kernels (and their #pragma omp lines) in templates outside the macro: a #pragma cannot
// appear inside a macro argument. In meta mode (core/meta.h) the body is skipped: every kernel
// behind this macro becomes a no-op and ops return their shape-only outputs.
#define CNX_DISPATCH(DTYPE, OPNAME, ...)                                   \
    do {                                                                   \
        if (::cnx::meta_mode()) break;                                     \
        switch (DTYPE) {                                                   \
            case ::cnx::DType::F32: { using scalar_t = float; __VA_ARGS__ } break;  \
            case ::cnx::DType::F64: { using scalar_t = double; __VA_ARGS__ } break; \
            default: ::cnx::fail(OPNAME, ": unsupported dtype ", ::cnx::dtype_name(DTYPE)); \
        }                                                                  \
    } while (0)
