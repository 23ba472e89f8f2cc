#pragma once
// What a weights file written by this project says about the model it holds, so inference can
// run with only the file: `convnext train` stores it in the `__metadata__` of best.safetensors
// and ema.safetensors (strings; lists as JSON), and predict, eval and gradcam take their
// defaults from it.
//
//   key          value                          used as
//   model        "convnext_atto"                --model (the family's block)
//   depths/dims  "[2,2,6,2]" / "[40,80,...]"    the architecture (custom --depths/--dims kept)
//   num_classes  "10", classes  "[\"T-shirt/top\", ...]"   head size, labels
//   in_chans     "1"                            input channels
//   image_size   "32"                           the crop fed to the model (--crop, --image-size)
//   crop_pct     "0.875"                        image folders: resize = image_size / crop_pct
//   resize       "28"                           shorter side before the centre crop (--resize);
//                                               smaller than image_size means a zero border
//                                               (Fashion-MNIST's 28 px padded to 32)
//   mean, std    "[0.485,0.456,0.406]"          normalisation
//
// A file is "ours" when its metadata names a model; files without metadata (.pth, other
// libraries' safetensors) give an empty ModelMetadata and everything stays explicit.
#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace cnx::io {

struct ModelMetadata {
    std::string model;                  // "" when the file carries no model metadata
    std::vector<int64_t> depths, dims;  // empty: the named variant's
    int64_t num_classes = 0, in_chans = 0, image_size = 0, resize = 0;  // 0: not recorded
    double crop_pct = 0;                                                // 0: not recorded
    std::vector<float> mean, std;
    std::vector<std::string> classes;  // may name fewer than num_classes (the first ones)

    bool present() const { return !model.empty(); }
    // The shorter side to resize to before the centre crop of image_size: `resize` when
    // recorded, else from crop_pct (timm's int(image_size / crop_pct)); 0 when neither is.
    int64_t eval_resize() const;
};

// Reads the metadata of a safetensors file's header (no tensor data is read). A PyTorch
// checkpoint, or a safetensors file whose metadata names no model, gives an empty result; a
// value that does not parse is an error naming the file and the key.
ModelMetadata read_model_metadata(const std::string& path);
ModelMetadata parse_model_metadata(const Metadata& metadata, const std::string& source);
// The entries to store (only the fields that are set).
Metadata to_metadata(const ModelMetadata& m);

}  // namespace cnx::io
