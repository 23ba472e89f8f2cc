#pragma once
// What predict and gradcam share: the model, classes and input pipeline named on the command
// line or, for what the command line leaves out, in the weights file's metadata (a file written
// by `convnext train`, io/model_metadata.h); and eval's defaults from the same metadata.
//
//   convnext predict --weights runs/x/best.safetensors --image a.jpg     # model, classes, sizes,
//                                                                        # mean/std from the file
// Explicit flags override the metadata field by field. A file without metadata (a .pth, another
// library's safetensors) needs --model, and the sizes default to 256/224 as before.
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/run_common.h"
#include "core/tensor.h"
#include "io/model_metadata.h"
#include "models/convnext.h"
#include "ops/packed_weights.h"
#include "train/data_sets.h"

namespace cnx::app {

struct InferenceOptions {
    std::string model;                  // "": the metadata's
    std::vector<int64_t> depths, dims;  // a custom architecture of the model's family
    std::string weights, classes;
    int64_t num_classes = 0;            // 0: rows of head.weight
    int64_t resize = 0, crop = 0;       // 0: the metadata's, else 256 and 224
    bool pack_weights = false;          // keep the GEMMs' packed weights (ops/packed_weights.h)
    // --model, --depths, --dims, --weights (required), --num-classes, --classes, --resize, --crop,
    // --pack-weights.
    void add_options(CLI::App* cmd);
};

struct InferenceModel {
    std::shared_ptr<models::ConvNeXt> model;  // weights loaded, eval mode
    std::string name;                          // the variant
    std::vector<std::string> labels;           // one per class: names, or indices when unnamed
    bool named_classes = false;                // labels came from --classes or the metadata
    int64_t num_classes = 0, in_chans = 3, resize = 256, crop = 224;
    std::vector<float> mean, std;
    // With --pack-weights, the weights packed once for the GEMMs (ops/packed_weights.h); declared
    // after `model`, so it ends before the weights it points into.
    std::shared_ptr<PackedWeightsScope> packed_weights;

    // An image as the model sees it before normalisation: shorter side resized to `resize`,
    // centre crop `crop` (a zero border where the crop is larger), float [crop, crop, in_chans]
    // in [0, 1].
    Tensor crop_of(const std::string& image) const;
    Tensor normalized(const Tensor& crop) const;  // (crop - mean) / std, a copy
    // The class the image's folder names ("daisy/1.jpg" -> the index of "daisy"; a name with '/'
    // may be spelled with '_' in a folder name); -1 when unknown or the classes are unnamed.
    int64_t folder_class(const std::string& image) const;
    // "--class K|label": an index or a class name; an error naming the valid ones otherwise.
    int64_t class_index(const std::string& index_or_label, const std::string& command) const;
};

// Loads the weights and builds the model they fit. Errors start with `command`.
InferenceModel load_inference_model(const InferenceOptions& options, const std::string& command);

// Files named on the command line, plus every image under the folders named (sorted, recursive).
std::vector<std::string> expand_images(const std::vector<std::string>& args, const std::string& command);

// eval: what the command line left unset (`given`: whether --model, --image-size, --crop-pct
// were given) filled from the metadata: the model spec, the image size and crop, mean and std.
struct EvalFlagsGiven {
    bool model = false, image_size = false, crop_pct = false;
};
void apply_eval_metadata(const io::ModelMetadata& metadata, const EvalFlagsGiven& given, ModelSpec& spec,
                         train::DataConfig& data);

// Looks the font up before a picture is drawn (an unusable $CONVNEXT_FONT is an error then) and
// says once on stderr when the text will fall back to the built-in font.
void note_font_fallback();

}  // namespace cnx::app
