#pragma once
// Mixed precision for training and inference: `--precision bf16`, the library's counterpart of
// torch.autocast(dtype=torch.bfloat16) with bf16 saved activations.
//
//   PrecisionGuard p(Precision::BF16);   // this thread, until the guard goes
//   Tensor loss = cross_entropy(model->forward(x), y);
//   loss.backward();                     // parameters, gradients and optimiser state stay float32
//
// Under Precision::BF16:
//   - float GEMMs (linear, the 1x1 and patchify convs, the fused MLPs) run a 16-bit kernel where
//     it pays: the bf16 dot-product kernel (bf16 operands, float32 accumulation) where the CPU's
//     measured bf16 rate is at least 1.5x its float32 FMA rate, else the fp16 FMA kernel (scaled
//     fp16 operands, short fp16 sums, float32 beyond: errors below bf16 rounding's) where its
//     fp16 rate is (MatmulPrecision::BFloat16 and Bf16Kernel in ops/gemm.h); the float32 kernels
//     elsewhere;
//   - activations that ops keep for backward are stored in bfloat16 (save_for_backward,
//     ops/saved.h): half the memory, half the traffic of reading them back;
//   - everything else is float32: weights and their gradients, the tensors flowing between ops,
//     layer-norm statistics, softmax, losses, reductions, the optimiser.
// Per thread, like set_matmul_precision; a new thread starts at FP32.
#include <string>

namespace cnx {

enum class Precision { FP32, BF16 };

void set_precision(Precision p);  // also sets the thread's matmul precision
Precision precision();
bool saves_bf16();  // activations saved for backward on this thread are stored in bfloat16

const char* precision_name(Precision p);            // "fp32", "bf16"
Precision parse_precision(const std::string& name);  // "fp32"/"float32", "bf16"/"bfloat16"; else cnx::Error

struct PrecisionGuard {
    explicit PrecisionGuard(Precision p) : prev(precision()) { set_precision(p); }
    ~PrecisionGuard() { set_precision(prev); }
    PrecisionGuard(const PrecisionGuard&) = delete;
    PrecisionGuard& operator=(const PrecisionGuard&) = delete;
    Precision prev;
};

}  // namespace cnx
