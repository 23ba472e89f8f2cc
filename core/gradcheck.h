#pragma once
// Finite-difference check of an op's hand-written backward, in float64.
//
//   auto r = gradcheck([](const std::vector<Tensor>& x) { return gelu(x[0]); }, {randn({2,5,7}, DType::F64)});
//   REQUIRE(r.pass);
//
// The output is reduced to a scalar with fixed random weights R (so every output element and
// every sign pattern matters), the analytic gradient comes from backward(R), the numeric one from
// central differences. Tolerance is Caffe's: |a - n| <= tol * max(|a|, |n|, 1). The default
// generator is reseeded before every forward, so stochastic ops (drop_path) see the same mask.
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cnx {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradcheckOptions {
    double eps = 1e-6;
    double tol = 1e-6;
    uint64_t seed = 1234;
    // Indices of inputs to check; empty = every input (inputs are made to require grad).
    std::vector<int> check_inputs;
    // Check elements 0, s, 2s, ... of each input (1 = all). Every checked element costs two
    // forward passes, so a large input can be checked on a spread of its elements instead.
    int64_t element_stride = 1;
};

struct GradcheckResult {
    double max_abs_err = 0;
    double max_rel_err = 0;  // |a - n| / max(|a|, |n|, 1)
    bool pass = true;
    std::string worst;       // where the largest error was, for messages
};

GradcheckResult gradcheck(const TensorFn& fn, std::vector<Tensor> inputs, const GradcheckOptions& opts = {});

// Runs fn on the float64 inputs and on float32 copies; returns the largest
// |y32 - y64| / max(|y64|, 1) over the output.
double forward_f32_vs_f64(const TensorFn& fn, const std::vector<Tensor>& inputs64, uint64_t seed = 1234);

}  // namespace cnx
