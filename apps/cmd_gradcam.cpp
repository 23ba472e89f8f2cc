// convnext gradcam --weights FILE --image PATH [...]: where the model looks. For each image, the
// Grad-CAM of the target class (the top-1 by default) at a layer's output (the last stage by
// default), computed by the framework's own autograd (viz/gradcam.h); written as the crop with
// the heatmap blended over it (--out) and/or printed as JSON (--json, the grid before
// upsampling). Model, classes and sizes as predict (apps/inference.h).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/command.h"
#include "apps/inference.h"
#include "apps/pictures.h"
#include "apps/precision_option.h"
#include "core/json.h"
#include "viz/gradcam.h"

namespace {

namespace fs = std::filesystem;
using namespace cnx;

struct GradcamOptions {
    app::InferenceOptions in;
    std::vector<std::string> images;
    std::string target_class;  // index or label; "": top-1
    std::string layer = "stages.3";
    std::string out, grid;
    std::string precision = "fp32";
    bool json = false;
};

bool is_png_path(const std::string& p) {
    std::string ext = fs::path(p).extension().string();
    for (auto& c : ext) c = (char)std::tolower((unsigned char)c);
    return ext == ".png";
}

// Where each image's overlay goes: --out itself for one image named *.png, else a file per image
// in the --out folder named after the image (a second image of the same name gets "_2", ...).
std::vector<std::string> overlay_paths(const std::vector<std::string>& images, const std::string& out) {
    if (out.empty()) return std::vector<std::string>(images.size());
    std::error_code ec;
    if (is_png_path(out) && !fs::is_directory(out, ec)) {
        CNX_CHECK(images.size() == 1, "gradcam: --out ", out, " is one PNG file but ", images.size(),
                  " images were given; pass a folder");
        return {out};
    }
    fs::create_directories(out, ec);
    CNX_CHECK(fs::is_directory(out, ec), "gradcam: cannot create the folder --out ", out);
    std::vector<std::string> paths;
    std::map<std::string, int> used;
    for (const auto& image : images) {
        std::string stem = fs::path(image).stem().string();
        int n = ++used[stem];
        paths.push_back((fs::path(out) / (stem + (n > 1 ? "_" + std::to_string(n) : "") + "_gradcam.png")).string());
    }
    return paths;
}

int run_gradcam(const GradcamOptions& o) {
    PrecisionGuard precision(parse_precision(o.precision));
    std::vector<std::string> images = app::expand_images(o.images, "gradcam");
    app::InferenceModel im = app::load_inference_model(o.in, "gradcam");
    viz::GradCamOptions go;
    go.target_layer = o.layer;
    if (!o.target_class.empty()) go.target_class = im.class_index(o.target_class, "gradcam");
    const std::vector<std::string> paths = overlay_paths(images, o.out);
    app::PredictionGridBuilder grid(o.grid, im);
    for (size_t i = 0; i < images.size(); ++i) {
        Tensor crop = im.crop_of(images[i]);
        Tensor x = im.normalized(crop);
        viz::GradCamResult r = viz::grad_cam(*im.model, x.reshape({1, im.crop, im.crop, im.in_chans}), go);
        viz::Canvas overlay = viz::gradcam_overlay(crop, r);
        if (!paths[i].empty()) overlay.write_png(paths[i]);
        grid.add(images[i], overlay.to_tensor(), r.target_class, r.probs[r.target_class]);
        const double prob = r.probs[r.target_class];
        const std::string& label = im.labels[r.target_class];
        if (o.json) {
            nlohmann::ordered_json j;
            j["image"] = images[i];
            j["class"] = r.target_class;
            j["label"] = label;
            j["prob"] = prob;
            j["layer"] = r.layer;
            auto cam = nlohmann::ordered_json::array();
            for (int64_t y = 0; y < r.height; ++y)
                cam.push_back(std::vector<float>(r.cam.begin() + y * r.width, r.cam.begin() + (y + 1) * r.width));
            j["cam"] = cam;
            std::cout << dump_json(j) << "\n";
        } else {
            std::printf("%s: class %lld %s (%.4f), %s %lldx%lld%s%s\n", images[i].c_str(), (long long)r.target_class,
                        label.c_str(), prob, r.layer.c_str(), (long long)r.height, (long long)r.width,
                        paths[i].empty() ? "" : " -> ", paths[i].c_str());
        }
        std::fflush(stdout);
    }
    grid.write();
    return 0;
}

std::function<int()> setup_gradcam(CLI::App& root) {
    auto* cmd = root.add_subcommand("gradcam", "Grad-CAM heatmaps: where a trained ConvNeXt looks for a class");
    auto o = std::make_shared<GradcamOptions>();
    o->in.add_options(cmd);
    cmd->add_option("--image", o->images, "Image file(s) or folder(s); repeat or list several")->required();
    cmd->add_option("--class", o->target_class, "Target class: an index or a class name (default: the top-1 class)");
    cmd->add_option("--target-layer", o->layer,
                    "Module whose output is explained: a stage (stages.0-3) or a block (stages.2.1)")
        ->capture_default_str();
    cmd->add_option("--out", o->out,
                    "Overlay PNG: a .png file for one image, else a folder (one <image>_gradcam.png per image)");
    cmd->add_option("--grid", o->grid,
                    "Also draw the overlays in a grid (PNG), captioned with the class explained and its probability: "
                    "green when the image's folder names that class, red when it names another");
    cmd->add_flag("--json", o->json,
                  "One JSON object per image: {\"image\", \"class\", \"label\", \"prob\", \"layer\", \"cam\"} with cam "
                  "the [h][w] grid at the layer's resolution, scaled to [0, 1]");
    app::add_precision_option(cmd, o->precision);
    return [o] { return run_gradcam(*o); };
}

}  // namespace

CONVNEXT_COMMAND(gradcam, setup_gradcam)
