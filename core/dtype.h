#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/meta.h"

namespace cnx {

// float32 trains; float64 exists so every op can be gradchecked by finite differences.
enum class DType { F32, F64 };

inline size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 8; }
inline const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "float64"; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };

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
            default: ::cnx::fail(OPNAME, ": unsupported dtype");            \
        }                                                                  \
    } while (0)
