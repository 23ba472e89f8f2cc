#pragma once
// The catalogue of op gradient checks that `convnext gradcheck` runs: every op on several random
// float64 cases (odd H and W, stride 2, batch > 1, kernel 7 padding 3, channel counts that are not
// a multiple of the vector width). Adding an op = adding its lines in gradcheck_cases.cpp.
#include <string>
#include <vector>

#include "core/gradcheck.h"

namespace cnx {

struct GradcheckCase {
    std::string op;
    std::string name;   // e.g. "x[2,9,11,5] k7 p3"
    TensorFn fn;
    std::vector<Tensor> inputs;  // float64
    std::vector<int> check_inputs;  // empty = all
};

std::vector<GradcheckCase> gradcheck_cases(uint64_t seed = 7);

struct GradcheckReport {
    std::string op, name;
    GradcheckResult grad;
    double f32_vs_f64 = 0;  // largest relative difference of the float32 forward from float64
    bool pass = false;
};

// Runs one case: the float64 gradient check and the float32-vs-float64 forward comparison.
GradcheckReport run_gradcheck_case(const GradcheckCase& c, double tol = 1e-6, double f32_tol = 1e-4);

}  // namespace cnx
