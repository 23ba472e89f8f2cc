#include "apps/inference.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>

#include "data/image.h"
#include "data/image_folder.h"
#include "data/transforms.h"
#include "io/fcmae.h"
#include "io/key_names.h"
#include "io/weights.h"
#include "viz/font.h"

namespace cnx::app {
namespace {

namespace fs = std::filesystem;

const Tensor* find_tensor(const io::NamedTensors& tensors, const std::string& name) {
    for (const auto& [n, t] : tensors)
        if (n == name) return &t;
    return nullptr;
}

// Checks the file against the architecture's parameter shapes (computed, nothing allocated) and
// returns a short description of what differs, or "" when everything fits.
std::string misfit(const models::ConvNeXtOptions& mo, const io::NamedTensors& weights) {
    std::map<std::string, Shape> file;
    for (const auto& [n, t] : weights) file[n] = t.shape();
    std::vector<std::string> problems;
    int64_t missing = 0, mismatched = 0;
    for (const auto& [name, shape] : models::parameter_shapes(mo)) {
        auto it = file.find(name);
        if (it == file.end()) {
            if (missing++ == 0) problems.push_back("missing " + name);
        } else {
            if (!nn::same_up_to_unit_dims(it->second, shape) && mismatched++ < 2)
                problems.push_back(name + " is " + shape_str(it->second) + ", the model's is " + shape_str(shape));
            file.erase(it);
        }
    }
    if (problems.empty() && file.empty()) return "";
    if (!file.empty()) problems.push_back("unexpected " + file.begin()->first);
    std::string out = std::to_string(missing) + " missing, " + std::to_string(mismatched) + " mismatched, " +
                      std::to_string(file.size()) + " unexpected tensors (";
    for (size_t i = 0; i < problems.size(); ++i) out += (i ? "; " : "") + problems[i];
    return out + ")";
}

// A class name as a folder can hold it ("T-shirt/top" -> "T-shirt_top").
std::string folder_spelling(std::string name) {
    std::replace(name.begin(), name.end(), '/', '_');
    std::replace(name.begin(), name.end(), '\\', '_');
    return name;
}

bool usable_stats(const std::vector<float>& v, int64_t channels) {
    return !v.empty() && ((int64_t)v.size() == channels || v.size() == 1);
}

}  // namespace

void InferenceOptions::add_options(CLI::App* cmd) {
    std::string names;
    for (auto& n : models::model_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("--model", model,
                    "Variant the weights belong to (" + names +
                        "); default: the one recorded in a weights file written by convnext train");
    cmd->add_option("--depths", depths, "Custom blocks per stage, e.g. 1,1,3,1 (default: the variant's or the file's)")
        ->delimiter(',')->expected(4);
    cmd->add_option("--dims", dims, "Custom channels per stage, e.g. 16,32,64,128 (with --depths)")
        ->delimiter(',')->expected(4);
    cmd->add_option("--weights", weights, "Weights: .safetensors or .pth")->required();
    cmd->add_option("--num-classes", num_classes, "Classes of the head (default: rows of head.weight)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--classes", classes,
                    "class_indices.json naming the classes ({\"0\": \"daisy\", ...}); default: the file's classes");
    cmd->add_option("--resize", resize, "Shorter side after resizing (default: the file's, else 256)")
        ->check(CLI::Range(8, 1 << 16));
    cmd->add_option("--crop", crop, "Side of the centre crop fed to the model (default: the file's image size, else 224)")
        ->check(CLI::Range(32, 1 << 16));
    cmd->add_flag("--pack-weights", pack_weights,
                  "Pack the weights for the matrix products once and keep them (faster at small batches, "
                  "about the weights' size again in memory, half that with --precision bf16)");
}

InferenceModel load_inference_model(const InferenceOptions& o, const std::string& command) {
    const io::ModelMetadata md = io::read_model_metadata(o.weights);
    InferenceModel im;
    ModelSpec spec;
    spec.name = !o.model.empty() ? o.model : md.model;
    if (spec.name.empty())
        throw CLI::RequiredError(command + ": --model is required: '" + o.weights +
                                     "' records no model (only weights written by convnext train do); pass the "
                                     "variant, e.g. --model convnext_tiny",
                                 CLI::ExitCodes::RequiredError);
    spec.depths = o.depths, spec.dims = o.dims;
    const bool file_arch = md.present() && spec.depths.empty() && spec.dims.empty() && spec.name == md.model;
    if (file_arch) spec.depths = md.depths, spec.dims = md.dims;
    im.name = spec.name;

    // Raw names once: the registered maps find the head and stem, the model's own map loads them.
    io::WeightsOptions wo;
    wo.official_names = false;
    io::NamedTensors raw = io::read_weights(o.weights, wo).tensors;
    io::NamedTensors weights = io::NameMap::registered()->rename(raw, io::NameStyle::Official);
    const Tensor* head = find_tensor(weights, "head.weight");
    {
        std::vector<std::string> keys;
        for (const auto& kv : raw) keys.push_back(kv.first);
        CNX_CHECK(head || !io::is_fcmae_checkpoint(keys), command, ": ", o.weights,
                  " is an FCMAE pre-training checkpoint: it has no classifier head; fine-tune it first "
                  "(convnext train --weights ", o.weights, " ...)");
    }
    CNX_CHECK(head && head->dim() == 2, command, ": ", o.weights,
              " has no 2-D head.weight; not a ConvNeXt classifier state dict");
    const Tensor* stem = find_tensor(weights, "downsample_layers.0.0.weight");
    CNX_CHECK(stem && stem->dim() == 4, command, ": ", o.weights,
              " has no 4-D downsample_layers.0.0.weight (the stem)");

    models::ConvNeXtOptions mo;
    mo.num_classes = o.num_classes > 0 ? o.num_classes : head->size(0);
    mo.in_chans = stem->size(1);
    CNX_CHECK(mo.in_chans == 1 || mo.in_chans == 3, command, ": the stem takes ", mo.in_chans,
              " input channels; images give 1 or 3");
    mo = spec_options(spec, mo);  // throws listing the variants for an unknown name
    auto does_not_fit = [&](const std::string& why) {
        fail(command, ": weights ", o.weights, " do not fit ", spec.name, " with ", mo.num_classes, " classes and ",
             mo.in_chans, " input channels: ", why);
    };
    if (std::string why = misfit(mo, weights); !why.empty()) {
        if (spec.depths.empty())
            for (const auto& name : models::model_names())
                if (name != spec.name && misfit(models::model_options(name, mo), weights).empty()) {
                    why += "; they fit " + name;
                    break;
                }
        does_not_fit(why);
    }
    weights.clear();
    im.model = std::make_shared<models::ConvNeXt>(mo);
    try {
        im.model->load_state_dict(io::NameMap(*im.model).rename(raw, io::NameStyle::Official), /*strict=*/true);
    } catch (const Error& e) {
        does_not_fit(e.what());
    }
    im.model->eval();
    if (o.pack_weights) im.packed_weights = std::make_shared<PackedWeightsScope>(im.model->parameters());
    im.num_classes = mo.num_classes;
    im.in_chans = mo.in_chans;

    if (!o.classes.empty()) {
        im.labels = data::read_class_indices(o.classes);
        CNX_CHECK((int64_t)im.labels.size() == mo.num_classes, command, ": ", o.classes, " names ", im.labels.size(),
                  " classes but the model has ", mo.num_classes);
        im.named_classes = true;
    } else if (!md.classes.empty() && (int64_t)md.classes.size() <= mo.num_classes) {
        im.labels = md.classes;
        im.named_classes = true;
    }
    for (int64_t i = (int64_t)im.labels.size(); i < mo.num_classes; ++i) im.labels.push_back(std::to_string(i));

    // Sizes: a flag, else the file's, else 256/224. A --crop alone keeps the file's resize ratio.
    const int64_t file_crop = md.image_size, file_resize = md.eval_resize();
    im.crop = o.crop > 0 ? o.crop : file_crop > 0 ? file_crop : 224;
    if (o.resize > 0)
        im.resize = o.resize;
    else if (file_crop > 0 && file_resize > 0)
        im.resize = o.crop > 0 ? std::max<int64_t>(1, o.crop * file_resize / file_crop) : file_resize;
    else
        im.resize = 256;
    // Grey models without metadata are the Fashion-MNIST ones; RGB models use ImageNet statistics.
    if (usable_stats(md.mean, im.in_chans) && usable_stats(md.std, im.in_chans)) {
        im.mean = md.mean, im.std = md.std;
    } else {
        im.mean = im.in_chans == 1 ? std::vector<float>{data::kFashionMnistMean} : data::kImageNetMean;
        im.std = im.in_chans == 1 ? std::vector<float>{data::kFashionMnistStd} : data::kImageNetStd;
    }
    return im;
}

Tensor InferenceModel::crop_of(const std::string& image) const {
    data::DecodeOptions decode;
    decode.channels = (int)in_chans;
    return data::resize_center_crop(data::load_image(image, decode), resize, crop);
}

Tensor InferenceModel::normalized(const Tensor& c) const {
    Tensor x = c.clone();
    data::normalize_(x, mean, std);
    return x;
}

int64_t InferenceModel::folder_class(const std::string& image) const {
    if (!named_classes) return -1;
    const std::string folder = fs::path(image).parent_path().filename().string();
    if (folder.empty()) return -1;
    for (size_t k = 0; k < labels.size(); ++k)
        if (labels[k] == folder || folder_spelling(labels[k]) == folder) return (int64_t)k;
    return -1;
}

int64_t InferenceModel::class_index(const std::string& s, const std::string& command) const {
    if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        const bool is_label = std::find(labels.begin(), labels.end(), s) != labels.end();
        if (!is_label || !named_classes) {
            CNX_CHECK(s.size() < 10 && std::stoll(s) < num_classes, command, ": --class ", s,
                      " is out of range: the model has ", num_classes, " classes (0-", num_classes - 1, ")");
            return std::stoll(s);
        }
    }
    for (size_t k = 0; k < labels.size(); ++k)
        if (labels[k] == s || folder_spelling(labels[k]) == s) return (int64_t)k;
    std::string known;
    for (size_t k = 0; k < labels.size() && k < 20; ++k) known += (k ? ", " : "") + labels[k];
    if (labels.size() > 20) known += ", ...";
    fail(command, ": --class '", s, "' is neither a class index nor a class name (", known, ")");
}

std::vector<std::string> expand_images(const std::vector<std::string>& args, const std::string& command) {
    std::vector<std::string> out;
    for (const auto& a : args) {
        std::error_code ec;
        if (!fs::is_directory(a, ec)) {
            CNX_CHECK(fs::exists(a, ec), command, ": image ", a, ": no such file");
            out.push_back(a);
            continue;
        }
        std::vector<std::string> found;
        for (fs::recursive_directory_iterator it(a, ec), end; !ec && it != end; it.increment(ec)) {
            std::string name = it->path().filename().string();
            if (it->is_regular_file(ec) && name[0] != '.' && data::has_image_extension(name))
                found.push_back(it->path().string());
        }
        CNX_CHECK(!ec, command, ": cannot list ", a, " (", ec.message(), ")");
        CNX_CHECK(!found.empty(), command, ": folder ", a, " holds no .jpg .jpeg .png .bmp image");
        std::sort(found.begin(), found.end());
        out.insert(out.end(), found.begin(), found.end());
    }
    return out;
}

void apply_eval_metadata(const io::ModelMetadata& md, const EvalFlagsGiven& given, ModelSpec& spec,
                         train::DataConfig& data) {
    if (!md.present()) return;
    if (!given.model) spec.name = md.model;
    if (spec.name == md.model && spec.depths.empty() && spec.dims.empty()) spec.depths = md.depths, spec.dims = md.dims;
    if (!given.image_size && md.image_size > 0) data.image_size = md.image_size;
    if (!given.crop_pct && md.crop_pct > 0) data.crop_pct = md.crop_pct;
    if (usable_stats(md.mean, 3) && usable_stats(md.std, 3)) data.mean = md.mean, data.std = md.std;
}

void note_font_fallback() {
    static std::once_flag once;
    const std::string why = viz::Font::active().warning();
    if (!why.empty()) std::call_once(once, [&] { std::cerr << "warning: " << why << "\n"; });
}

}  // namespace cnx::app
