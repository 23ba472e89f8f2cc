#pragma once
// Checks shared by the op tests: one float64 gradcheck line, the float32 forward against the
// float64 one, and the largest elementwise difference of two tensors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "core/tensor.h"

namespace op_check {

// Every checked input's analytic gradient against central differences.
inline void grad_ok(const std::string& what, const cnx::TensorFn& fn, const std::vector<cnx::Tensor>& inputs) {
    cnx::GradcheckResult r = cnx::gradcheck(fn, inputs);
    INFO(what << ": max_rel_err " << r.max_rel_err << " at " << r.worst);
    CHECK(r.pass);
    CHECK(r.max_rel_err <= 1e-6);
}

inline void f32_ok(const std::string& what, const cnx::TensorFn& fn, const std::vector<cnx::Tensor>& inputs,
                   double tol) {
    const double err = cnx::forward_f32_vs_f64(fn, inputs);
    INFO(what << ": float32 vs float64 relative error " << err);
    CHECK(err <= tol);
}

inline double max_abs_diff(const cnx::Tensor& a, const cnx::Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    auto va = a.to_vector(), vb = b.to_vector();
    double m = 0;
    for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
    return m;
}

}  // namespace op_check
