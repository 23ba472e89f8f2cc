#pragma once
// Pieces shared by the precision tests (test_bf16.cpp, test_recompute.cpp): a small model of the
// family and the comparisons of its results.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include <memory>
#include <string>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/convnext.h"
#include "models/registry.h"

namespace precision_check {

// ConvNeXt of `variant`'s block (V1, or V2 with GRN) at depths 1-1-2-1, widths 16-64, 10 classes.
inline std::shared_ptr<cnx::models::ConvNeXt> small_convnext(const std::string& variant, cnx::Generator* gen) {
    cnx::models::ConvNeXtOptions o = cnx::models::model_options(variant);
    o.depths = {1, 1, 2, 1};
    o.dims = {16, 32, 48, 64};
    o.num_classes = 10;
    return std::make_shared<cnx::models::ConvNeXt>(o, gen);
}

// The same shape, dtype and bytes.
inline bool same_bits(const cnx::Tensor& a, const cnx::Tensor& b) {
    return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// |a - b| / |b| over all of a named set (relative L2 error); the names must match in order.
inline double rel_l2(const cnx::NamedTensors& a, const cnx::NamedTensors& b) {
    REQUIRE(a.size() == b.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        REQUIRE(a[i].first == b[i].first);
        const auto x = a[i].second.to_vector(), y = b[i].second.to_vector();
        for (size_t j = 0; j < x.size(); ++j) num += (x[j] - y[j]) * (x[j] - y[j]), den += y[j] * y[j];
    }
    return std::sqrt(num / den);
}

}  // namespace precision_check
