#pragma once
// Pretrained weights into a model for fine-tuning, with a report of what loaded.
#include <ostream>
#include <string>

#include "nn/module.h"

namespace cnx::train {

// Loads .pth or .safetensors weights (official or timm names) into the model, non-strict.
// With drop_mismatched_head, head.* entries whose shapes differ from the model's are dropped
// first (fine-tuning to a new class count). Prints what loaded on `log`. Errors when nothing
// matched or a shape other than the head's differs.
void load_pretrained(nn::Module& model, const std::string& path, bool drop_mismatched_head, std::ostream& log);

}  // namespace cnx::train
