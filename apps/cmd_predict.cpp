// convnext predict --model NAME --weights FILE --image PATH [...]: classify images with a trained
// model. Each image is decoded (grey and RGBA become RGB), its shorter side resized to --resize
// (bilinear), centre-cropped to --crop, normalised, and run through the model in eval mode; the
// top-k softmax probabilities are printed as a table or, with --json, one JSON object per image.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "apps/command.h"
#include "apps/precision_option.h"
#include "core/autograd.h"
#include "data/image.h"
#include "data/image_folder.h"
#include "data/transforms.h"
#include "io/weights.h"
#include "models/convnext.h"
#include "ops/softmax.h"

namespace {

namespace fs = std::filesystem;
using cnx::Tensor;

struct PredictOptions {
    std::string model, weights, classes;
    std::vector<std::string> images;
    int64_t num_classes = 0;  // 0: rows of head.weight
    int64_t resize = 256, crop = 224, topk = 5, batch = 8;
    std::string precision = "fp32";
    bool json = false;
};

// Files named on the command line, plus every image under the folders named (sorted, recursive).
std::vector<std::string> expand_images(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    for (const auto& a : args) {
        std::error_code ec;
        if (!fs::is_directory(a, ec)) {
            CNX_CHECK(fs::exists(a, ec), "predict: image ", a, ": no such file");
            out.push_back(a);
            continue;
        }
        std::vector<std::string> found;
        for (fs::recursive_directory_iterator it(a, ec), end; !ec && it != end; it.increment(ec)) {
            std::string name = it->path().filename().string();
            if (it->is_regular_file(ec) && name[0] != '.' && cnx::data::has_image_extension(name))
                found.push_back(it->path().string());
        }
        CNX_CHECK(!ec, "predict: cannot list ", a, " (", ec.message(), ")");
        CNX_CHECK(!found.empty(), "predict: folder ", a, " holds no .jpg .jpeg .png .bmp image");
        std::sort(found.begin(), found.end());
        out.insert(out.end(), found.begin(), found.end());
    }
    return out;
}

const Tensor* find_tensor(const cnx::io::NamedTensors& tensors, const std::string& name) {
    for (const auto& [n, t] : tensors)
        if (n == name) return &t;
    return nullptr;
}

// Checks the file against the architecture's parameter shapes (computed, nothing allocated) and
// returns a short description of what differs, or "" when everything fits.
std::string misfit(const cnx::models::ConvNeXtOptions& mo, const cnx::io::NamedTensors& weights) {
    std::map<std::string, cnx::Shape> file;
    for (const auto& [n, t] : weights) file[n] = t.shape();
    std::vector<std::string> problems;
    int64_t missing = 0, mismatched = 0;
    for (const auto& [name, shape] : cnx::models::parameter_shapes(mo)) {
        auto it = file.find(name);
        if (it == file.end()) {
            if (missing++ == 0) problems.push_back("missing " + name);
        } else {
            if (!cnx::nn::same_up_to_unit_dims(it->second, shape) && mismatched++ < 2)
                problems.push_back(name + " is " + cnx::shape_str(it->second) + ", the model's is " +
                                   cnx::shape_str(shape));
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

int run_predict(const PredictOptions& o) {
    using namespace cnx;
    CNX_CHECK(o.crop <= o.resize, "predict: --crop ", o.crop, " is larger than --resize ", o.resize);
    PrecisionGuard precision(parse_precision(o.precision));
    std::vector<std::string> images = expand_images(o.images);

    io::NamedTensors weights = io::load_weights(o.weights);
    const Tensor* head = find_tensor(weights, "head.weight");
    CNX_CHECK(head && head->dim() == 2, "predict: ", o.weights,
              " has no 2-D head.weight; not a ConvNeXt classifier state dict");
    const Tensor* stem = find_tensor(weights, "downsample_layers.0.0.weight");
    CNX_CHECK(stem && stem->dim() == 4, "predict: ", o.weights, " has no 4-D downsample_layers.0.0.weight (the stem)");

    models::ConvNeXtOptions mo;
    mo.num_classes = o.num_classes > 0 ? o.num_classes : head->size(0);
    mo.in_chans = stem->size(1);
    CNX_CHECK(mo.in_chans == 1 || mo.in_chans == 3, "predict: the stem takes ", mo.in_chans,
              " input channels; images give 1 or 3");
    mo = models::model_options(o.model, mo);  // throws listing the variants for an unknown name
    if (std::string why = misfit(mo, weights); !why.empty()) {
        std::string hint;
        for (const auto& name : models::model_names())
            if (name != o.model && misfit(models::model_options(name, mo), weights).empty())
                hint = "; they fit " + name;
        fail("predict: weights ", o.weights, " do not fit ", o.model, " with ", mo.num_classes, " classes and ",
             mo.in_chans, " input channels: ", why, hint);
    }
    auto model = models::create_model(o.model, mo);
    try {
        model->load_state_dict(weights, /*strict=*/true);
    } catch (const Error& e) {
        fail("predict: weights ", o.weights, " do not fit ", o.model, " with ", mo.num_classes, " classes and ",
             mo.in_chans, " input channels: ", e.what());
    }
    model->eval();
    weights.clear();

    std::vector<std::string> labels;
    if (!o.classes.empty()) {
        labels = data::read_class_indices(o.classes);
        CNX_CHECK((int64_t)labels.size() == mo.num_classes, "predict: ", o.classes, " names ", labels.size(),
                  " classes but the model has ", mo.num_classes);
    } else {
        for (int64_t i = 0; i < mo.num_classes; ++i) labels.push_back(std::to_string(i));
    }
    // Grey models are the Fashion-MNIST ones; RGB models use ImageNet statistics.
    const std::vector<float> mean = mo.in_chans == 1 ? std::vector<float>{data::kFashionMnistMean} : data::kImageNetMean;
    const std::vector<float> stdv = mo.in_chans == 1 ? std::vector<float>{data::kFashionMnistStd} : data::kImageNetStd;
    data::DecodeOptions decode;
    decode.channels = (int)mo.in_chans;
    const int64_t k = std::min(o.topk, mo.num_classes);

    NoGradGuard no_grad;
    const int64_t C = mo.in_chans, S = o.crop, per = S * S * C;
    for (size_t start = 0; start < images.size(); start += (size_t)o.batch) {
        const size_t end = std::min(images.size(), start + (size_t)o.batch);
        Tensor batch = Tensor::empty({(int64_t)(end - start), S, S, C});
        for (size_t i = start; i < end; ++i) {
            Tensor x = data::resize_center_crop(data::load_image(images[i], decode), o.resize, S);
            data::normalize_(x, mean, stdv);
            std::memcpy(batch.data<float>() + (i - start) * per, x.data<float>(), per * sizeof(float));
        }
        Tensor probs = softmax(model->forward(batch), -1);
        const float* p = probs.data<float>();
        for (size_t i = start; i < end; ++i) {
            const float* row = p + (i - start) * mo.num_classes;
            std::vector<int64_t> order(mo.num_classes);
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + k, order.end(),
                              [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
            if (o.json) {
                nlohmann::ordered_json j;
                j["image"] = images[i];
                j["top"] = nlohmann::ordered_json::array();
                for (int64_t r = 0; r < k; ++r)
                    j["top"].push_back({{"index", order[r]}, {"label", labels[order[r]]}, {"prob", row[order[r]]}});
                std::cout << j.dump() << "\n";
            } else {
                std::cout << images[i] << "\n";
                std::printf("  %4s  %6s  %-24s  %8s\n", "rank", "index", "label", "prob");
                for (int64_t r = 0; r < k; ++r)
                    std::printf("  %4lld  %6lld  %-24s  %8.4f\n", (long long)r + 1, (long long)order[r],
                                labels[order[r]].c_str(), row[order[r]]);
                std::fflush(stdout);
            }
        }
    }
    return 0;
}

std::function<int()> setup(CLI::App& root) {
    auto* cmd = root.add_subcommand("predict", "Classify images with a trained ConvNeXt");
    auto o = std::make_shared<PredictOptions>();
    cmd->add_option("--model", o->model, "Variant the weights belong to (convnext_tiny, ...)")->required();
    cmd->add_option("--weights", o->weights, "Weights: .safetensors or .pth")->required();
    cmd->add_option("--image", o->images, "Image file(s) or folder(s); repeat or list several")->required();
    cmd->add_option("--num-classes", o->num_classes, "Classes of the head (default: rows of head.weight)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--classes", o->classes, "class_indices.json naming the classes ({\"0\": \"daisy\", ...})");
    cmd->add_option("--resize", o->resize, "Shorter side after resizing")->check(CLI::Range(32, 1 << 16))
        ->capture_default_str();
    cmd->add_option("--crop", o->crop, "Side of the centre crop fed to the model")->check(CLI::Range(32, 1 << 16))
        ->capture_default_str();
    cmd->add_option("--topk", o->topk, "Classes printed per image")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--batch-size", o->batch, "Images per forward pass")->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "One JSON object per image: {\"image\", \"top\": [{\"index\", \"label\", \"prob\"}]}");
    cnx::app::add_precision_option(cmd, o->precision);
    return [o] { return run_predict(*o); };
}

}  // namespace

CONVNEXT_COMMAND(predict, setup)
