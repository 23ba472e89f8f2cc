#pragma once
// One entry point for pretrained weights, whatever their container: a PyTorch checkpoint
// (.pth/.pt, detected by its zip signature rather than its extension, read through io/pth.h) or a
// safetensors file. Names come back in the official ConvNeXt spelling (io/key_names.h): timm and
// torchvision names are mapped, a DistributedDataParallel "module." prefix is dropped and a
// ConvNeXt V2 FCMAE pre-training checkpoint is remapped to its encoder (io/fcmae.h), so the
// result loads straight into a model's load_state_dict.
//
//   auto sd = io::load_weights("convnext_tiny.pth");                 // or .safetensors
//   model->load_state_dict(sd);
//   auto ema = io::load_weights("checkpoint.pth", "model_ema");
#include <string>
#include <vector>

#include "io/key_names.h"

namespace cnx::io {

struct WeightsOptions {
    std::string key;              // .pth only: top-level entry ("model_ema", ...); "" = auto
    bool official_names = true;   // map other spellings to the official one
    // The model the weights are for: its own name maps (its tree) detect and rename the names;
    // null: every registered model's.
    const nn::Module* model = nullptr;
};

struct LoadedWeights {
    NamedTensors tensors;
    std::string format;                 // "pth" or "safetensors"
    std::string key;                    // .pth: the top-level entry used ("" = bare state_dict)
    std::vector<std::string> top_keys;  // .pth: every top-level string key
    NameStyle source_names = NameStyle::Unknown;  // spelling found in the file
    // An FCMAE pre-training checkpoint (io/fcmae.h), its encoder remapped to the dense model's
    // names (only with official_names); `dropped` lists the pre-training decoder's entries.
    bool fcmae = false;
    std::vector<std::string> dropped;
};

// .pth tensors are float32; safetensors tensors are float32 too, except F64 ones, which stay F64.
LoadedWeights read_weights(const std::string& path, const WeightsOptions& options = {});
// Whether read_weights takes the file for a PyTorch checkpoint (else safetensors). Throws when
// the file cannot be opened.
bool is_pth_file(const std::string& path);
NamedTensors load_weights(const std::string& path, const std::string& key = "");

}  // namespace cnx::io
