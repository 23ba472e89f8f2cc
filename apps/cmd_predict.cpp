// convnext predict --weights FILE --image PATH [...]: classify images with a trained model. Each
// image is decoded (grey and RGBA become RGB), its shorter side resized to --resize (bilinear),
// centre-cropped to --crop, normalised, and run through the model in eval mode; the top-k softmax
// probabilities are printed as a table or, with --json, one JSON object per image. The model,
// classes, sizes and normalisation default to what a file written by `convnext train` records
// (apps/inference.h); --grid also draws the images with their predictions.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "apps/command.h"
#include "apps/inference.h"
#include "apps/pictures.h"
#include "apps/precision_option.h"
#include "core/autograd.h"
#include "core/json.h"
#include "models/convnext.h"
#include "ops/softmax.h"

namespace {

using cnx::Tensor;
namespace app = cnx::app;

struct PredictOptions {
    app::InferenceOptions in;  // model, weights, classes, sizes (apps/inference.h)
    std::vector<std::string> images;
    int64_t topk = 5, batch = 8;
    std::string precision = "fp32";
    bool json = false;
    std::string grid;  // --grid FILE.png
};

int run_predict(const PredictOptions& o) {
    using namespace cnx;
    PrecisionGuard precision(parse_precision(o.precision));
    std::vector<std::string> images = app::expand_images(o.images, "predict");
    app::InferenceModel im = app::load_inference_model(o.in, "predict");
    auto& model = im.model;
    const auto& labels = im.labels;
    const int64_t num_classes = im.num_classes;
    const int64_t k = std::min(o.topk, num_classes);
    app::PredictionGridBuilder grid(o.grid, im);

    NoGradGuard no_grad;
    const int64_t C = im.in_chans, S = im.crop, per = S * S * C;
    for (size_t start = 0; start < images.size(); start += (size_t)o.batch) {
        const size_t end = std::min(images.size(), start + (size_t)o.batch);
        Tensor batch = Tensor::empty({(int64_t)(end - start), S, S, C});
        std::vector<Tensor> crops;
        for (size_t i = start; i < end; ++i) {
            crops.push_back(im.crop_of(images[i]));
            Tensor x = im.normalized(crops.back());
            std::memcpy(batch.data<float>() + (i - start) * per, x.data<float>(), per * sizeof(float));
        }
        Tensor probs = softmax(model->forward(batch), -1);
        const float* p = probs.data<float>();
        for (size_t i = start; i < end; ++i) {
            const float* row = p + (i - start) * num_classes;
            std::vector<int64_t> order(num_classes);
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + k, order.end(),
                              [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
            grid.add(images[i], crops[i - start], order[0], row[order[0]]);
            if (o.json) {
                nlohmann::ordered_json j;
                j["image"] = images[i];
                j["top"] = nlohmann::ordered_json::array();
                for (int64_t r = 0; r < k; ++r)
                    j["top"].push_back({{"index", order[r]}, {"label", labels[order[r]]}, {"prob", row[order[r]]}});
                std::cout << dump_json(j) << "\n";
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
    grid.write();
    return 0;
}

std::function<int()> setup_predict(CLI::App& root) {
    auto* cmd = root.add_subcommand("predict", "Classify images with a trained ConvNeXt");
    auto o = std::make_shared<PredictOptions>();
    o->in.add_options(cmd);
    cmd->add_option("--image", o->images, "Image file(s) or folder(s); repeat or list several")->required();
    cmd->add_option("--topk", o->topk, "Classes printed per image")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--batch-size", o->batch, "Images per forward pass")->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "One JSON object per image: {\"image\", \"top\": [{\"index\", \"label\", \"prob\"}]}");
    cmd->add_option("--grid", o->grid,
                    "Also draw the images in a grid with their top-1 label and probability (PNG); green when the "
                    "image's folder names the predicted class, red when it names another");
    app::add_precision_option(cmd, o->precision);
    return [o] { return run_predict(*o); };
}

}  // namespace

CONVNEXT_COMMAND(predict, setup_predict)
