#pragma once
// --precision for train, eval, predict, gradcam and bench (and --recompute for train and bench): one
// spelling and one help text.
#include <string>

#include <CLI/CLI.hpp>

#include "ops/precision.h"
#include "ops/saved.h"

namespace cnx::app {

inline CLI::Option* add_precision_option(CLI::App* cmd, std::string& precision) {
    return cmd
        ->add_option("--precision", precision,
                     "fp32, or bf16: bf16 GEMMs where this CPU's bf16 dot product is at least 1.5x its fp32 rate, "
                     "else fp16 ones (scaled operands, float32 sums) where its fp16 FMA is, else fp32 ones; "
                     "activations saved for backward in bfloat16; weights, gradients, optimiser state, norms, "
                     "softmax and losses stay fp32")
        ->check(CLI::IsMember({"fp32", "bf16", "float32", "bfloat16"}))
        ->capture_default_str();
}

// --recompute beside it (ops/saved.h): memory for a little time, as torch.utils.checkpoint.
inline CLI::Option* add_recompute_option(CLI::App* cmd, std::string& recompute) {
    return cmd
        ->add_option("--recompute", recompute,
                     "cheap: keep no layer-norm or depthwise-conv output for backward, compute them again there "
                     "(less memory, a few per cent slower); none: keep them; auto: cheap under --precision bf16, "
                     "none under fp32")
        ->check(CLI::IsMember({"auto", "none", "cheap"}))
        ->capture_default_str();
}

}  // namespace cnx::app
