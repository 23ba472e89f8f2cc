#include "ops/precision.h"

#include "core/error.h"
#include "ops/gemm.h"

namespace cnx {
namespace {
thread_local Precision t_precision = Precision::FP32;
}

void set_precision(Precision p) {
    t_precision = p;
    set_matmul_precision(p == Precision::BF16 ? MatmulPrecision::BFloat16 : MatmulPrecision::Float32);
}
Precision precision() { return t_precision; }
bool saves_bf16() { return t_precision == Precision::BF16; }

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& name) {
    if (name == "fp32" || name == "float32") return Precision::FP32;
    if (name == "bf16" || name == "bfloat16") return Precision::BF16;
    fail("unknown precision '", name, "' (expected fp32 or bf16)");
}

}  // namespace cnx
