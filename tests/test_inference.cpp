// Inference from a weights file alone (metadata written by `convnext train`, io/model_metadata.h)
// and other libraries' files through the command line: torchvision's ConvNeXt and timm's small
// variants with 1x1-convolution MLP weights give PyTorch's probabilities through predict, eval,
// train --weights and convert (references from tools/gen_vis_fixtures.py).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_util.h"
#include "core/autograd.h"
#include "core/json.h"
#include "data/data.h"
#include "io/model_metadata.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "models/convnext.h"
#include "ops/softmax.h"
#include "viz/plots.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace cnx;
using namespace cli_test;
using json = nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& out) {
    std::vector<json> v;
    std::istringstream is(out);
    for (std::string line; std::getline(is, line);)
        if (!line.empty() && line[0] == '{') v.push_back(parse_json(line));
    return v;
}

// Probabilities by class index from one predict --json line.
std::vector<double> probs_of(const json& line) {
    std::vector<double> p(line.at("top").size());
    for (auto& t : line.at("top")) p.at(t.at("index").get<size_t>()) = t.at("prob").get<double>();
    return p;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        INFO("class " << i);
        CHECK(got[i] == Approx(want[i]).margin(tol));
    }
}

const json& reference() {
    static const json ref = parse_json(read_bytes(fixture("vis/reference.json")));
    return ref;
}

}  // namespace

TEST_CASE("model metadata: written, read back, and bad values named", "[inference][metadata]") {
    io::ModelMetadata m;
    m.model = "convnext_atto";
    m.depths = {1, 1, 1, 1}, m.dims = {8, 16, 32, 64};
    m.num_classes = 4, m.in_chans = 3, m.image_size = 32, m.crop_pct = 0.875;
    m.mean = {0.5f, 0.25f, 0.125f}, m.std = {0.2f, 0.3f, 0.4f};
    m.classes = {"a", "b/c", "d"};  // fewer than num_classes: a wider head
    io::Metadata md = io::to_metadata(m);
    CHECK(md.at("depths") == "[1,1,1,1]");
    CHECK(md.count("resize") == 0);
    io::ModelMetadata back = io::parse_model_metadata(md, "x");
    CHECK(back.model == m.model);
    CHECK(back.depths == m.depths);
    CHECK(back.dims == m.dims);
    CHECK(back.num_classes == 4);
    CHECK(back.crop_pct == 0.875);
    CHECK(back.mean == m.mean);
    CHECK(back.std == m.std);
    CHECK(back.classes == m.classes);
    CHECK(back.eval_resize() == 36);  // int(32 / 0.875)
    back.resize = 28;
    CHECK(back.eval_resize() == 28);  // recorded: wins over crop_pct

    // Files this project did not write: no model, no metadata.
    CHECK_FALSE(io::parse_model_metadata({{"format", "pt"}}, "x").present());
    CHECK_FALSE(io::read_model_metadata(fixture("torchvision/small.pth")).present());
    CHECK_FALSE(io::read_model_metadata(fixture("vis/gradcam_model.safetensors")).present());
    CHECK_THROWS_WITH(io::read_model_metadata("/nonexistent/w.safetensors"), Catch::Contains("/nonexistent/w.safetensors"));

    auto bad = [&](const std::string& key, const std::string& value) {
        io::Metadata b = md;
        b[key] = value;
        return io::parse_model_metadata(b, "w.safetensors");
    };
    CHECK_THROWS_WITH(bad("depths", "[1,1,1]"), Catch::Contains("metadata 'depths'"));
    CHECK_THROWS_WITH(bad("dims", "[8,16,0,64]"), Catch::Contains("'dims'"));
    CHECK_THROWS_WITH(bad("num_classes", "four"), Catch::Contains("'num_classes' is not a positive integer (\"four\")"));
    CHECK_THROWS_WITH(bad("image_size", "-32"), Catch::Contains("'image_size'"));
    CHECK_THROWS_WITH(bad("crop_pct", "1.5"), Catch::Contains("'crop_pct'"));
    CHECK_THROWS_WITH(bad("mean", "[0.5]"), Catch::Contains("'mean' is not as long as 'std'"));
    CHECK_THROWS_WITH(bad("std", "[0.2,0,0.4]"), Catch::Contains("'std'"));
    CHECK_THROWS_WITH(bad("classes", "{\"0\": \"a\"}"), Catch::Contains("'classes'"));
    CHECK_THROWS_WITH(bad("classes", "[\"a\",\"b\",\"c\",\"d\",\"e\"]"), Catch::Contains("at most num_classes = 4"));
    CHECK_THROWS_WITH(bad("classes", "[\"a\",\"b\""), Catch::Contains("w.safetensors"));
}

TEST_CASE("predict, eval and gradcam with only --weights give what the explicit flags give", "[inference][metadata]") {
    const fs::path out = temp_dir("inference_meta");
    auto r = run("train --data " + fixture("train_folder") + " " + kMicro +
                 "--batch-size 4 --epochs 2 --lr 3e-3 --no-augment --val-rate 0.25 --seed 3 --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    const std::string weights = (out / "best.safetensors").string();
    const io::ModelMetadata md = io::read_model_metadata(weights);
    CHECK(md.model == "convnext_atto");
    CHECK(md.depths == std::vector<int64_t>{1, 1, 1, 1});
    CHECK(md.dims == std::vector<int64_t>{8, 16, 32, 64});
    CHECK(md.classes == std::vector<std::string>{"circles", "squares", "stripes"});
    CHECK(md.num_classes == 3);
    CHECK(md.in_chans == 3);
    CHECK(md.image_size == 32);
    CHECK(md.crop_pct == 1.0);
    CHECK(md.eval_resize() == 32);
    CHECK(md.mean == data::kImageNetMean);
    CHECK(md.std == data::kImageNetStd);

    const std::string images = " --image " + fixture("train_folder");
    const std::string flags = " --model convnext_atto --depths 1,1,1,1 --dims 8,16,32,64 --resize 32 --crop 32 --classes " +
                              (out / "class_indices.json").string();
    auto bare = run("predict --weights " + weights + images + " --json", false);
    auto full = run("predict --weights " + weights + images + flags + " --json", false);
    REQUIRE(bare.code == 0);
    REQUIRE(full.code == 0);
    CHECK(json_lines(bare.output).size() == 24);
    CHECK(bare.output == full.output);
    CHECK(bare.output.find("\"label\":\"squares\"") != std::string::npos);  // the file's class names

    // A flag still overrides the file: another crop gives other probabilities.
    auto cropped = run("predict --weights " + weights + images + " --crop 64 --json", false);
    REQUIRE(cropped.code == 0);
    CHECK(cropped.output != bare.output);

    const std::string one = " --image " + fixture("train_folder/stripes/img_03.png");
    bare = run("gradcam --weights " + weights + one + " --json --target-layer stages.1", false);
    full = run("gradcam --weights " + weights + one + flags + " --json --target-layer stages.1", false);
    REQUIRE(bare.code == 0);
    CHECK(bare.output == full.output);

    bare = run("eval --weights " + weights + " --data " + fixture("train_folder") + " --json", false);
    full = run("eval " + kMicro + "--weights " + weights + " --data " + fixture("train_folder") + " --json", false);
    REQUIRE(bare.code == 0);
    REQUIRE(full.code == 0);
    CHECK(bare.output == full.output);

    // A file without metadata still needs --model, and says so.
    r = run("predict --weights " + fixture("vis/gradcam_model.safetensors") + one);
    CHECK(r.code == 2);
    CHECK(r.output.find("--model is required") != std::string::npos);
    CHECK(r.output.find("gradcam_model.safetensors") != std::string::npos);
    r = run("gradcam --weights " + fixture("torchvision/small.pth") + one);
    CHECK(r.code == 2);
    CHECK(r.output.find("--model is required") != std::string::npos);
}

TEST_CASE("metadata of a grey 28-pixel model: the image is padded to the crop as in training", "[inference][metadata]") {
    const fs::path dir = temp_dir("inference_grey");
    models::ConvNeXtOptions o;
    o.num_classes = 3, o.in_chans = 1;
    o.depths = {1, 1, 1, 1}, o.dims = {8, 16, 24, 32};
    Generator gen(11);
    models::ConvNeXt model(o, &gen);
    for (auto& [name, t] : model.state_dict())
        if (name.rfind("head.", 0) == 0) copy_(t, randn(t.shape(), DType::F32, &gen));
    model.eval();
    io::ModelMetadata m;
    m.model = "convnext_atto", m.depths = o.depths, m.dims = o.dims;
    m.num_classes = 3, m.in_chans = 1, m.image_size = 32, m.resize = 28;
    m.mean = {data::kFashionMnistMean}, m.std = {data::kFashionMnistStd};
    m.classes = {"T-shirt/top", "Trouser", "Bag"};
    const std::string weights = (dir / "grey.safetensors").string();
    io::save_safetensors(weights, model.state_dict(), io::to_metadata(m));
    std::vector<uint8_t> px(28 * 28);
    for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 37 % 251);
    fs::create_directories(dir / "T-shirt_top");
    const std::string image = (dir / "T-shirt_top" / "a.png").string();
    REQUIRE(stbi_write_png(image.c_str(), 28, 28, 1, px.data(), 28));

    // What FashionMnistDataset gives the model: background padded by 2, then normalised.
    Tensor x = full({1, 32, 32, 1}, (0.0 - data::kFashionMnistMean) / data::kFashionMnistStd);
    for (int y = 0; y < 28; ++y)
        for (int c = 0; c < 28; ++c)
            x.data<float>()[(y + 2) * 32 + c + 2] = (px[y * 28 + c] / 255.0f - data::kFashionMnistMean) / data::kFashionMnistStd;
    std::vector<double> want;
    {
        NoGradGuard ng;
        want = softmax(model.forward(x), -1).to_vector();
    }
    auto r = run("predict --weights " + weights + " --image " + image + " --json --grid " + (dir / "g.png").string(), false);
    INFO(r.output);
    REQUIRE(r.code == 0);
    auto lines = json_lines(r.output);
    REQUIRE(lines.size() == 1);
    check_close(probs_of(lines[0]), want, 1e-5);
    // The folder "T-shirt_top" names the class "T-shirt/top": the caption is green exactly when
    // that is the top-1 class.
    const bool right = std::max_element(want.begin(), want.end()) == want.begin();
    viz::GridItem item;
    item.crop = zeros({32, 32, 1}), item.truth = "T-shirt/top";
    const viz::GridLayout L = viz::prediction_grid({item}).layout;
    data::Image g = data::load_image((dir / "g.png").string());
    int green = 0, red = 0;
    for (int y = L.caption_y(0); y < L.caption_y(0) + 2 * L.caption_size; ++y)
        for (int x = L.margin; x < L.margin + L.cell_w; ++x) {
            const viz::Rgb p{g.at(y, x, 0), g.at(y, x, 1), g.at(y, x, 2)};
            green += p[0] < 60 && p[1] > 100 && p[2] < 60;
            red += p[0] > 150 && p[1] < 60 && p[2] < 60;
        }
    CHECK((green > 0) == right);
    CHECK((red > 0) == !right);
}

TEST_CASE("torchvision ConvNeXt weights give torchvision's probabilities through predict and convert", "[inference][names]") {
    const json& tv = reference().at("torchvision");
    const std::vector<double> want = tv.at("probs").get<std::vector<double>>();
    const std::string arch = " --model convnext_tiny --depths 1,1,2,1 --dims 8,16,24,32 --resize 32 --crop 32 --image " +
                             fixture("vis/tv_image.png") + " --json";
    auto r = run("predict --weights " + fixture("torchvision/small.pth") + arch, false);
    INFO(r.output);
    REQUIRE(r.code == 0);
    check_close(probs_of(json_lines(r.output).at(0)), want, 1e-4);

    // convert: to official names and back to torchvision's; both predict the same.
    const fs::path dir = temp_dir("inference_tv");
    const std::string official = (dir / "official.safetensors").string(), back = (dir / "tv.safetensors").string();
    REQUIRE(run("convert " + fixture("torchvision/small.pth") + " " + official).code == 0);
    REQUIRE(run("convert " + official + " " + back + " --names torchvision").code == 0);
    CHECK(io::load_safetensors(back).contains("features.1.0.layer_scale"));
    for (const auto& file : {official, back}) {
        INFO(file);
        r = run("predict --weights " + file + arch, false);
        REQUIRE(r.code == 0);
        check_close(probs_of(json_lines(r.output).at(0)), want, 1e-4);
    }
}

TEST_CASE("timm's small variants with 1x1-convolution MLP weights: predict, eval, train --weights, convert", "[inference][names]") {
    const json& ref = reference().at("timm");
    // The fixture stores the MLP as timm's atto/femto/pico/nano do.
    auto raw = io::read_pth(fixture("vis/timm_atto.pth")).tensors;
    bool conv_mlp = false;
    for (auto& [name, t] : raw)
        if (name == "stages.0.blocks.0.mlp.fc1.weight") conv_mlp = t.shape() == Shape{32, 8, 1, 1};
    CHECK(conv_mlp);

    const std::string arch = " --model convnext_atto --depths 1,1,2,1 --dims 8,16,24,32";
    std::string images;
    std::vector<std::vector<double>> want;
    for (auto& [file, p] : ref.at("probs").items()) {
        images += " " + fixture("train_folder/" + file);
        want.push_back(p.get<std::vector<double>>());
    }
    auto predict_matches = [&](const std::string& weights, const std::string& flags) {
        auto r = run("predict --weights " + weights + flags + " --json --image" + images, false);
        INFO(weights << "\n" << r.output);
        REQUIRE(r.code == 0);
        auto lines = json_lines(r.output);
        REQUIRE(lines.size() == want.size());
        for (size_t i = 0; i < want.size(); ++i) check_close(probs_of(lines[i]), want[i], 1e-4);
    };
    const std::string sizes = " --resize 32 --crop 32";
    predict_matches(fixture("vis/timm_atto.pth"), arch + sizes);
    predict_matches(fixture("vis/timm_atto.safetensors"), arch + sizes);

    auto r = run("eval" + arch + " --image-size 32 --crop-pct 1 --weights " + fixture("vis/timm_atto.safetensors") +
                     " --data " + fixture("train_folder") + " --json",
                 false);
    INFO(r.output);
    REQUIRE(r.code == 0);
    json e = parse_json(r.output.substr(r.output.find('{')));
    CHECK(e.at("loss").get<double>() == Approx(ref.at("eval_loss").get<double>()).margin(1e-4));
    CHECK(e.at("top1_acc").get<double>() == Approx(ref.at("eval_top1").get<double>()).margin(1e-9));

    // train --weights: every tensor loads (no head dropped, nothing missing); at lr 0 the best
    // weights are the file's, and predict on them needs nothing but the file.
    const fs::path dir = temp_dir("inference_timm");
    r = run("train --data " + fixture("train_folder") + arch +
            " --image-size 32 --crop-pct 1 --weights " + fixture("vis/timm_atto.pth") +
            " --epochs 1 --lr 0 --batch-size 4 --no-augment --val-rate 0.25 --show-predictions 0 --out " +
            (dir / "run").string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("timm names") != std::string::npos);
    CHECK(r.output.find("missing") == std::string::npos);
    CHECK(r.output.find("dropped") == std::string::npos);
    predict_matches((dir / "run" / "best.safetensors").string(), "");

    // convert: official names, and timm's again.
    const std::string official = (dir / "official.safetensors").string(), timm = (dir / "timm.safetensors").string();
    REQUIRE(run("convert " + fixture("vis/timm_atto.pth") + " " + official).code == 0);
    REQUIRE(run("convert " + official + " " + timm + " --names timm").code == 0);
    CHECK(io::load_safetensors(timm).contains("stages.0.blocks.0.mlp.fc1.weight"));
    predict_matches(official, arch + sizes);
    predict_matches(timm, arch + sizes);
}
