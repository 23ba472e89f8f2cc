#include "io/fcmae.h"

#include <cmath>

#include "core/error.h"

namespace cnx::io {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

int64_t kernel_side(const std::string& name, const Tensor& v) {
    const int64_t kv = v.size(0), k = (int64_t)std::llround(std::sqrt((double)kv));
    CNX_CHECK(kv > 0 && k * k == kv, "FCMAE checkpoint: ", name, " ", v.str(),
              " is not a sparse convolution kernel (its first dimension should be k*k)");
    return k;
}

// [k*k, in, out] -> [out, in, k, k], or [k*k, C] -> [C, 1, k, k]; w[o, i, kh, kw] = v[kw * k + kh, i, o].
template <class T>
void dense_kernel(const T* v, int64_t k, int64_t in, int64_t out, T* w) {
    for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i)
            for (int64_t kh = 0; kh < k; ++kh)
                for (int64_t kw = 0; kw < k; ++kw) w[((o * in + i) * k + kh) * k + kw] = v[((kw * k + kh) * in + i) * out + o];
}

Tensor kernel_to_weight(const std::string& name, const Tensor& v) {
    CNX_CHECK(v.dim() == 3 || v.dim() == 2, "FCMAE checkpoint: ", name, " ", v.str(),
              " should be [k*k, in, out] or, depthwise, [k*k, C]");
    const int64_t k = kernel_side(name, v);
    const bool depthwise = v.dim() == 2;
    const int64_t in = depthwise ? 1 : v.size(1), out = depthwise ? v.size(1) : v.size(2);
    Tensor w = Tensor::empty({out, in, k, k}, v.dtype());
    if (v.dtype() == DType::F64)
        dense_kernel(v.data<double>(), k, in, out, w.data<double>());
    else
        dense_kernel(v.to(DType::F32).data<float>(), k, in, out, w.data<float>());
    return w;
}

}  // namespace

bool is_fcmae_checkpoint(const std::vector<std::string>& names) {
    bool encoder = false, sparse = false;
    for (auto& n : names) {
        encoder = encoder || starts_with(n, "encoder.");
        sparse = sparse || (starts_with(n, "encoder.") && ends_with(n, ".kernel")) || n == "mask_token";
    }
    return encoder && sparse;
}

FcmaeRemap remap_fcmae(const NamedTensors& tensors) {
    FcmaeRemap out;
    for (auto& [name, v] : tensors) {
        if (!starts_with(name, "encoder.")) {
            out.dropped.push_back(name);
            continue;
        }
        std::string k = name.substr(8);
        if (ends_with(k, ".kernel")) {
            out.tensors.emplace_back(k.substr(0, k.size() - 7) + ".weight", kernel_to_weight(name, v));
            continue;
        }
        // The wrappers: MinkowskiLayerNorm keeps its LayerNorm as .ln, MinkowskiLinear its Linear
        // as .linear, just before the parameter's own name.
        const size_t last = k.rfind('.');
        const size_t prev = last == std::string::npos || last == 0 ? std::string::npos : k.rfind('.', last - 1);
        if (last != std::string::npos) {
            const std::string wrapper = k.substr(prev == std::string::npos ? 0 : prev + 1,
                                                 last - (prev == std::string::npos ? 0 : prev + 1));
            if (wrapper == "ln" || wrapper == "linear")
                k = (prev == std::string::npos ? "" : k.substr(0, prev + 1)) + k.substr(last + 1);
        }
        Tensor t = v;
        if (ends_with(k, ".bias") && t.dim() != 1)
            t = t.reshape({t.numel()});
        else if (k.find(".grn.") != std::string::npos)
            t = t.reshape({1, 1, 1, t.numel()});
        out.tensors.emplace_back(k, t);
    }
    return out;
}

}  // namespace cnx::io
