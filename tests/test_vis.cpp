// Pictures and Grad-CAM (viz/, `convnext gradcam`, `eval --plot`, `predict --grid`): Grad-CAM
// against PyTorch (tests/fixtures/vis, written by tools/gen_vis_fixtures.py), the library's
// guarantees, the text, and the pictures checked pixel by pixel where cells, bars and captions
// must be.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_util.h"
#include "core/autograd.h"
#include "core/json.h"
#include "data/idx.h"
#include "data/image.h"
#include "models/convnext.h"
#include "viz/font.h"
#include "viz/gradcam.h"
#include "viz/plots.h"

using namespace cnx;
using namespace cli_test;
using json = nlohmann::json;

namespace {

viz::Rgb pixel(const data::Image& img, int x, int y) {
    return {img.at(y, x, 0), img.at(y, x, 1), img.at(y, x, 2)};
}

// Whether a rectangle of the picture holds a pixel of this colour, each channel within `tol`
// (anti-aliased text reaches its colour only where a glyph covers a pixel almost fully).
bool has_color(const viz::Canvas& c, int x0, int y0, int w, int h, viz::Rgb color, int tol = 40) {
    for (int y = std::max(0, y0); y < std::min(c.height(), y0 + h); ++y)
        for (int x = std::max(0, x0); x < std::min(c.width(), x0 + w); ++x) {
            viz::Rgb p = c.at(x, y);
            if (std::abs(p[0] - color[0]) <= tol && std::abs(p[1] - color[1]) <= tol && std::abs(p[2] - color[2]) <= tol)
                return true;
        }
    return false;
}
// Pixels darker than mid-grey in a rectangle: text drawn there.
int dark_pixels(const viz::Canvas& c, int x0, int y0, int w, int h) {
    int n = 0;
    for (int y = std::max(0, y0); y < std::min(c.height(), y0 + h); ++y)
        for (int x = std::max(0, x0); x < std::min(c.width(), x0 + w); ++x) {
            viz::Rgb p = c.at(x, y);
            n += p[0] + p[1] + p[2] < 3 * 110;
        }
    return n;
}

viz::Canvas decode_png(const std::string& path) {
    data::Image img = data::load_image(path);
    return viz::Canvas((int)img.width, (int)img.height, img.pixels);
}

// An independent overlay: bilinear with half-pixel centres (as cv2.resize), jet, 0.5 blend.
viz::Rgb expected_overlay(const std::vector<std::vector<double>>& cam, const data::Image& img, int x, int y) {
    const int h = (int)cam.size(), w = (int)cam[0].size(), H = (int)img.height, W = (int)img.width;
    auto axis = [](int o, int out, int in, int& i0, int& i1, double& f) {
        double s = std::max(0.0, (o + 0.5) * in / out - 0.5);
        i0 = std::min((int)s, in - 1), i1 = std::min(i0 + 1, in - 1), f = s - i0;
    };
    int y0, y1, x0, x1;
    double fy, fx;
    axis(y, H, h, y0, y1, fy);
    axis(x, W, w, x0, x1, fx);
    double v = (cam[y0][x0] * (1 - fx) + cam[y0][x1] * fx) * (1 - fy) + (cam[y1][x0] * (1 - fx) + cam[y1][x1] * fx) * fy;
    double t = std::floor(std::clamp(v, 0.0, 1.0) * 255) / 255;
    double jet[3] = {1.5 - std::fabs(4 * t - 3), 1.5 - std::fabs(4 * t - 2), 1.5 - std::fabs(4 * t - 1)};
    viz::Rgb out;
    for (int k = 0; k < 3; ++k) out[k] = (uint8_t)std::lround(0.5 * 255 * std::clamp(jet[k], 0.0, 1.0) + 0.5 * img.at(y, x, k));
    return out;
}

std::shared_ptr<models::ConvNeXt> small_model(int64_t classes) {
    models::ConvNeXtOptions o;
    o.num_classes = classes;
    o.depths = {1, 1, 2, 1};
    o.dims = {8, 16, 24, 32};
    o.layer_scale_init_value = 1.0;
    Generator gen(5);
    return std::make_shared<models::ConvNeXt>(o, &gen);
}

// The micro model trained once per process on the tiny folder (well under a second).
const fs::path& trained_run() {
    static fs::path out = [] {
        fs::path dir = temp_dir("vis_run");
        auto r = run("train --data " + fixture("train_folder") + " " + kMicro +
                     "--batch-size 4 --epochs 3 --lr 3e-3 --no-augment --val-rate 0.25 --seed 3 --out " + dir.string());
        INFO(r.output);
        REQUIRE(r.code == 0);
        return dir;
    }();
    return out;
}

}  // namespace

TEST_CASE("gradcam: --json matches PyTorch's Grad-CAM on every cell, and the overlay is the crop", "[vis][gradcam]") {
    const json ref = parse_json(read_bytes(fixture("vis/reference.json"))).at("gradcam");
    const fs::path out = temp_dir("gradcam_torch");
    const std::string base = "gradcam --model convnext_atto --depths 1,1,2,1 --dims 8,16,24,32 --weights " +
                             fixture("vis/gradcam_model.safetensors") + " --image " + fixture("vis/gradcam.png") +
                             " --resize 128 --crop 128 --json ";
    const data::Image image = data::load_image(fixture("vis/gradcam.png"));
    int index = 0;
    for (const json& c : ref.at("cases")) {
        const std::string layer = c.at("layer");
        INFO(layer);
        const fs::path png = out / ("case" + std::to_string(index++) + ".png");
        std::string args = base + "--out " + png.string();
        if (layer != "stages.3") args += " --target-layer " + layer;  // stages.3 is the default
        if (!c.at("requested_class").is_null()) args += " --class " + std::to_string(c.at("requested_class").get<int>());
        auto r = run(args, false);
        INFO(r.output);
        REQUIRE(r.code == 0);
        const json j = parse_json(r.output);
        CHECK(j.at("image") == fixture("vis/gradcam.png"));
        CHECK(j.at("layer") == layer);
        CHECK(j.at("class") == c.at("class"));  // the same class (the top-1 where none was asked)
        CHECK(j.at("label") == std::to_string(c.at("class").get<int>()));
        CHECK(j.at("prob").get<double>() == Approx(c.at("prob").get<double>()).margin(1e-4));
        const auto want = c.at("cam").get<std::vector<std::vector<double>>>();
        const auto got = j.at("cam").get<std::vector<std::vector<double>>>();
        REQUIRE(got.size() == want.size());
        double worst = 0;
        for (size_t y = 0; y < want.size(); ++y) {
            REQUIRE(got[y].size() == want[y].size());
            for (size_t x = 0; x < want[y].size(); ++x) worst = std::max(worst, std::fabs(got[y][x] - want[y][x]));
        }
        INFO("largest difference " << worst);
        CHECK(worst <= 2e-3);
        // The overlay: the crop's size, PyTorch's cam upsampled, jet-coloured, blended at 0.5.
        data::Image overlay = data::load_image(png.string());
        CHECK(overlay.width == 128);
        CHECK(overlay.height == 128);
        int off = 0;
        for (int y = 0; y < 128; y += 3)
            for (int x = 0; x < 128; x += 3) {
                viz::Rgb e = expected_overlay(want, image, x, y), g = pixel(overlay, x, y);
                for (int k = 0; k < 3; ++k) off += std::abs(e[k] - g[k]) > 4;
            }
        CHECK(off == 0);
    }
}

TEST_CASE("gradcam: images, folders, labels and errors on the command line", "[vis][gradcam]") {
    const fs::path run_dir = trained_run();
    const std::string weights = (run_dir / "best.safetensors").string();
    const fs::path out = temp_dir("gradcam_cli");
    // A folder of images into a folder of overlays, one per image, named after it.
    auto r = run("gradcam --weights " + weights + " --image " + fixture("train_folder/circles") + " --out " +
                 (out / "cams").string() + " --class squares --grid " + (out / "grid.png").string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("class 1 squares") != std::string::npos);
    std::vector<viz::GridItem> items(8);
    for (int i = 0; i < 8; ++i) {
        fs::path png = out / "cams" / ("img_0" + std::to_string(i) + "_gradcam.png");
        REQUIRE(fs::exists(png));
        data::Image overlay = data::load_image(png.string());
        CHECK(overlay.width == 32);
        items[i].crop = data::image_to_tensor(overlay), items[i].truth = "circles";
    }
    // --grid: the overlays, captioned in red (the folder says circles, the class explained is squares).
    const auto layout = viz::prediction_grid(items).layout;
    const viz::Canvas grid = decode_png((out / "grid.png").string());
    CHECK(grid.width() == 2 * layout.margin + layout.cols * layout.cell_w);
    for (int i = 0; i < 8; ++i) {
        data::Image overlay = data::load_image((out / "cams" / ("img_0" + std::to_string(i) + "_gradcam.png")).string());
        const viz::Rgb corner = pixel(overlay, 0, 0);  // the tile scales the overlay: its flat corner stays
        const viz::Rgb got = grid.at(layout.tile_x(i), layout.tile_y(i));
        for (int k = 0; k < 3; ++k) CHECK(std::abs(got[k] - corner[k]) <= 8);
        const int h = layout.cell_h - layout.tile - layout.pad - 4;
        CHECK(has_color(grid, layout.tile_x(i) - layout.pad_x, layout.caption_y(i), layout.cell_w, h, viz::kRed));
    }
    // Errors: an unknown layer lists the stages; a layer without a spatial output; a bad class.
    const std::string one = "gradcam --weights " + weights + " --image " + fixture("train_folder/circles/img_00.png");
    r = run(one + " --target-layer stages.7");
    CHECK(r.code == 1);
    CHECK(r.output.find("'stages.7' is not a module") != std::string::npos);
    CHECK(r.output.find("stages.3") != std::string::npos);
    r = run(one + " --target-layer head");
    CHECK(r.code == 1);
    CHECK(r.output.find("NHWC") != std::string::npos);
    r = run(one + " --class tulips");
    CHECK(r.code == 1);
    CHECK(r.output.find("circles, squares, stripes") != std::string::npos);
    r = run(one + " --class 3");
    CHECK(r.code == 1);
    CHECK(r.output.find("out of range") != std::string::npos);
    r = run("gradcam --weights " + weights + " --image " + fixture("train_folder/circles") + " --out " +
            (out / "one.png").string());
    CHECK(r.code == 1);
    CHECK(r.output.find("pass a folder") != std::string::npos);
}

TEST_CASE("grad_cam: any stage or block, the model left as it was, errors", "[vis][gradcam]") {
    auto model = small_model(4);
    Generator gen(2);
    Tensor x = randn({1, 64, 64, 3}, DType::F32, &gen);
    model->train();
    auto r = viz::grad_cam(*model, x);
    CHECK(r.layer == "stages.3");
    CHECK(r.height == 2);
    CHECK(r.width == 2);
    CHECK(r.target_class == std::max_element(r.probs.begin(), r.probs.end()) - r.probs.begin());
    CHECK(*std::max_element(r.cam.begin(), r.cam.end()) == Approx(1.0).margin(1e-5));
    CHECK(*std::min_element(r.cam.begin(), r.cam.end()) == 0.0f);
    // Left as it was: training mode, trainable parameters without gradients, no hooks.
    CHECK(model->is_training());
    for (auto& [name, p] : model->named_parameters()) {
        INFO(name);
        CHECK(p.requires_grad());
        CHECK_FALSE(p.grad().defined());
    }
    for (auto& [name, m] : model->named_modules()) CHECK_FALSE(m->has_forward_hooks());
    {
        NoGradGuard ng;  // callers doing inference: Grad-CAM records its own graph
        auto block = viz::grad_cam(*model, x, {"stages.1.0", 2});
        CHECK(block.height == 8);
        CHECK(block.target_class == 2);
        CHECK(block.cam.size() == 64);
        CHECK_FALSE(autograd::grad_enabled());
    }
    // The same answer twice (nothing accumulates between calls).
    auto again = viz::grad_cam(*model, x);
    CHECK(again.cam == r.cam);
    CHECK_THROWS_WITH(viz::grad_cam(*model, x, {"stages.9"}), Catch::Contains("stages.0, stages.1, stages.2, stages.3"));
    CHECK_THROWS_WITH(viz::grad_cam(*model, x, {"norm"}), Catch::Contains("NHWC"));
    CHECK_THROWS_WITH(viz::grad_cam(*model, x, {"stages.3", 4}), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(viz::grad_cam(*model, randn({2, 64, 64, 3}), {}), Catch::Contains("one NHWC image"));
    for (auto& [name, m] : model->named_modules()) CHECK_FALSE(m->has_forward_hooks());
    CHECK(model->is_training());
}

TEST_CASE("colour maps and the overlay", "[vis]") {
    CHECK(viz::jet(0) == viz::Rgb{0, 0, 128});
    CHECK(viz::jet(1) == viz::Rgb{128, 0, 0});
    CHECK(viz::jet(0.5f) == viz::Rgb{128, 255, 128});
    CHECK(viz::blues(0) == viz::Rgb{247, 251, 255});
    CHECK(viz::blues(1) == viz::Rgb{8, 48, 107});
    CHECK(viz::blues(0.5f)[2] < viz::blues(0.25f)[2]);
    CHECK(viz::text_color_on(viz::blues(1)) == viz::kWhite);
    CHECK(viz::text_color_on(viz::blues(0)) == viz::kBlack);
    viz::GradCamResult r;
    r.height = 1, r.width = 2;
    r.cam = {0.0f, 1.0f};
    Tensor grey = full({4, 8, 1}, 0.5);
    viz::Canvas c = viz::gradcam_overlay(grey, r);
    CHECK(c.width() == 8);
    CHECK(c.height() == 4);
    CHECK(c.at(0, 0) == viz::Rgb{64, 64, 128});   // jet(0) over grey 0.5: 0.5 * (0, 0, 128) + 0.5 * 127.5
    CHECK(c.at(7, 3) == viz::Rgb{128, 64, 64});   // jet(1)
    CHECK_THROWS_WITH(viz::gradcam_overlay(full({4, 8, 2}, 0.5), r), Catch::Contains("1 or 3"));
}

TEST_CASE("fonts: the TrueType font, the built-in fallback, errors", "[vis][font]") {
    auto builtin = viz::Font::builtin();
    CHECK_FALSE(builtin->is_truetype());
    CHECK(builtin->warning().find("fonts-dejavu-core") != std::string::npos);
    viz::TextMask m = builtin->render("Ab1", 24);
    CHECK(m.height == 24);
    CHECK(m.width == builtin->text_width("Ab1", 24));
    CHECK(std::count(m.alpha.begin(), m.alpha.end(), 255) > 20);
    CHECK(builtin->render("é", 24).alpha == builtin->render("?", 24).alpha);  // ASCII only

    CHECK_THROWS_WITH(viz::Font::load("/nonexistent/font.ttf"), Catch::Contains("/nonexistent/font.ttf"));
    CHECK_THROWS_WITH(viz::Font::load(fixture("vis/reference.json")), Catch::Contains("not a TrueType font"));

    const std::string dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    if (!fs::exists(dejavu)) {
        WARN("fonts-dejavu-core is not installed: the TrueType checks are skipped");
        return;
    }
    auto font = viz::Font::load(dejavu);
    CHECK(font->is_truetype());
    CHECK(font->warning().empty());
    auto ink_rows = [](const viz::TextMask& t, int y0, int y1) {
        int n = 0;
        for (int y = y0; y < y1; ++y)
            for (int x = 0; x < t.width; ++x) n += t.alpha[(size_t)y * t.width + x] > 128;
        return n;
    };
    viz::TextMask g = font->render("g", 20), a = font->render("A", 20);
    CHECK(ink_rows(g, g.baseline + 1, g.height) > 0);  // a descender below the baseline
    CHECK(ink_rows(a, a.baseline + 1, a.height) == 0);
    CHECK(ink_rows(a, 0, a.baseline) > 20);
    CHECK(font->text_width("WWW", 14) > font->text_width("iii", 14));
    CHECK(font->render("é", 20).alpha != font->render("?", 20).alpha);  // Latin-1 has its glyphs
    CHECK(font->render("\xff\xfe", 20).width > 0);                      // bad UTF-8 is drawn as '?'
}

TEST_CASE("confusion plot: cells, counts, names and bars where they belong", "[vis][plot]") {
    const std::vector<std::vector<int64_t>> conf{{5, 0, 0}, {1, 3, 1}, {0, 0, 0}};
    const std::vector<double> acc{1.0, 0.6, std::nan("")};
    auto plot = viz::confusion_plot(conf, acc, {"cat", "dog", "T-shirt/top"}, "3 classes");
    const auto& L = plot.layout;
    const viz::Canvas& c = plot.canvas;
    REQUIRE(L.labels);
    REQUIRE(L.counts);
    auto cell_corner = [&](int t, int p) { return c.at(L.matrix_x + p * L.cell + 2, L.matrix_y + t * L.cell + 2); };
    CHECK(cell_corner(0, 0) == viz::blues(1.0f));
    CHECK(cell_corner(0, 1) == viz::blues(0.0f));
    CHECK(cell_corner(1, 0) == viz::blues(0.2f));
    CHECK(cell_corner(1, 1) == viz::blues(0.6f));
    CHECK(cell_corner(2, 2) == viz::blues(0.0f));  // a class without samples: an empty row
    // Counts: white on the dark cell, black on the light ones.
    const int mid = L.cell / 3;
    auto cell_box = [&](int t, int p, viz::Rgb color) {
        return has_color(c, L.matrix_x + p * L.cell + mid, L.matrix_y + t * L.cell + mid, L.cell - 2 * mid,
                         L.cell - 2 * mid, color);
    };
    CHECK(cell_box(0, 0, viz::kWhite));
    CHECK(cell_box(1, 0, viz::kBlack));
    CHECK(cell_box(1, 1, viz::text_color_on(viz::blues(0.6f))));
    // Names left of every row and below every column.
    for (int i = 0; i < 3; ++i) {
        CHECK(dark_pixels(c, L.matrix_x - 120, L.matrix_y + i * L.cell, 114, L.cell) > 10);
        CHECK(dark_pixels(c, L.matrix_x + i * L.cell, L.matrix_y + 3 * L.cell + 4, L.cell, 80) > 10);
    }
    CHECK(dark_pixels(c, L.matrix_x - 120, L.matrix_y + 3 * L.cell + 2, 114, 40) == 0);  // nothing below the rows
    // Bars: 100 % full, 60 % to 0.6 of the length, none for the class without samples.
    auto bar_at = [&](int t, double frac) {
        return c.at(L.bars_x + (int)std::lround(frac * L.bar_length), L.matrix_y + t * L.cell + L.cell / 2);
    };
    CHECK(bar_at(0, 0.01) == viz::kBarColor);
    CHECK(bar_at(0, 0.99) == viz::kBarColor);
    CHECK(bar_at(1, 0.55) == viz::kBarColor);
    CHECK(bar_at(1, 0.65) == viz::kBarTrack);
    CHECK(bar_at(2, 0.01) == viz::kBarTrack);
    // Between the rows' bars, the background.
    CHECK(c.at(L.bars_x + 5, L.matrix_y + L.cell) == viz::kWhite);
    // The value beside each bar.
    for (int t = 0; t < 3; ++t) CHECK(dark_pixels(c, L.bars_x + L.bar_length + 4, L.matrix_y + t * L.cell, 60, L.cell) > 2);

    // A thousand classes: cells shrink, names and counts are left out, the picture stays bounded.
    std::vector<std::vector<int64_t>> big(1000, std::vector<int64_t>(1000, 0));
    for (int i = 0; i < 1000; ++i) big[i][i] = 1;
    auto large = viz::confusion_plot(big, std::vector<double>(1000, 1.0), {}, "");
    CHECK_FALSE(large.layout.counts);
    CHECK(large.canvas.width() < 3000);
    CHECK_THROWS_WITH(viz::confusion_plot({{1, 2}}, {1.0}, {}, ""), Catch::Contains("row of 2"));
}

TEST_CASE("prediction grid: tiles and green, red or black captions", "[vis][plot]") {
    std::vector<viz::GridItem> items(3);
    const float shades[3] = {0.2f, 0.6f, 1.0f};
    for (int i = 0; i < 3; ++i) {
        items[i].crop = full({32, 32, 3}, shades[i]);
        items[i].predicted = "cat";
        items[i].prob = 0.875;
    }
    items[0].truth = "cat";  // right
    items[1].truth = "dog";  // wrong
    auto grid = viz::prediction_grid(items);
    const auto& L = grid.layout;
    const viz::Canvas& c = grid.canvas;
    CHECK(L.tile == 128);
    CHECK(L.cols == 2);
    CHECK(L.rows == 2);
    CHECK(c.width() == 2 * L.margin + 2 * L.cell_w);
    CHECK(c.height() == 2 * L.margin + 2 * L.cell_h);
    for (int i = 0; i < 3; ++i) {
        INFO(i);
        const uint8_t v = (uint8_t)std::lround(shades[i] * 255);
        CHECK(c.at(L.tile_x(i) + 64, L.tile_y(i) + 64) == viz::Rgb{v, v, v});
        CHECK(c.at(L.tile_x(i) + 1, L.tile_y(i) + 126) == viz::Rgb{v, v, v});
        const int x = L.tile_x(i) - L.pad_x, y = L.caption_y(i), w = L.cell_w, h = L.cell_h - L.tile - L.pad - 4;
        CHECK(has_color(c, x, y, w, h, viz::kGreen) == (i == 0));
        CHECK(has_color(c, x, y, w, h, viz::kRed) == (i == 1));
        CHECK(dark_pixels(c, x, y, w, h) > 10);
    }
    // The fourth cell is empty.
    CHECK(dark_pixels(c, L.tile_x(3), L.tile_y(3), L.tile, L.tile) == 0);
}

TEST_CASE("eval --plot and predict --grid draw what the commands report", "[vis][plot]") {
    const fs::path run_dir = trained_run();
    const std::string weights = (run_dir / "best.safetensors").string();
    const fs::path out = temp_dir("vis_pictures");
    auto r = run("eval --weights " + weights + " --data " + fixture("train_folder") + " --json --plot " +
                     (out / "confusion.png").string(),
                 false);
    INFO(r.output);
    REQUIRE(r.code == 0);
    const json j = parse_json(r.output.substr(r.output.find('{')));
    const auto conf = j.at("confusion").get<std::vector<std::vector<int64_t>>>();
    std::vector<double> acc;
    for (auto& name : j.at("classes")) acc.push_back(j.at("per_class_acc").at(name.get<std::string>()).get<double>());
    const auto expect = viz::confusion_plot(conf, acc, j.at("classes").get<std::vector<std::string>>(), "");
    const viz::Canvas png = decode_png((out / "confusion.png").string());
    const auto& L = expect.layout;
    CHECK(png.width() == expect.canvas.width());
    CHECK(png.height() == expect.canvas.height());
    for (size_t t = 0; t < conf.size(); ++t) {
        int64_t total = 0;
        for (auto v : conf[t]) total += v;
        for (size_t p = 0; p < conf.size(); ++p)
            CHECK(png.at(L.matrix_x + (int)p * L.cell + 2, L.matrix_y + (int)t * L.cell + 2) ==
                  viz::blues((float)conf[t][p] / (float)total));
        const int end = L.bars_x + (int)std::lround(acc[t] * L.bar_length), y = L.matrix_y + (int)t * L.cell + L.cell / 2;
        if (acc[t] > 0.05) CHECK(png.at(end - 3, y) == viz::kBarColor);
        if (acc[t] < 0.95) CHECK(png.at(end + 3, y) == viz::kBarTrack);
    }

    // predict --grid over the folder: a caption is green exactly where predict's top-1 is the
    // image's folder.
    r = run("predict --weights " + weights + " --image " + fixture("train_folder") + " --json --topk 1 --grid " +
                (out / "grid.png").string(),
            false);
    INFO(r.output);
    REQUIRE(r.code == 0);
    std::vector<json> preds;
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);) preds.push_back(parse_json(line));
    REQUIRE(preds.size() == 24);
    std::vector<viz::GridItem> items(24);
    for (auto& it : items) it.crop = zeros({32, 32, 3}), it.truth = "x";
    const auto layout = viz::prediction_grid(items).layout;
    const viz::Canvas grid = decode_png((out / "grid.png").string());
    CHECK(grid.width() == 2 * layout.margin + layout.cols * layout.cell_w);
    CHECK(grid.height() == 2 * layout.margin + layout.rows * layout.cell_h);
    int right = 0;
    for (int i = 0; i < 24; ++i) {
        const std::string folder = fs::path(preds[i].at("image").get<std::string>()).parent_path().filename().string();
        const bool correct = preds[i].at("top")[0].at("label") == folder;
        right += correct;
        const int x = layout.tile_x(i) - layout.pad_x, y = layout.caption_y(i);
        const int h = layout.cell_h - layout.tile - layout.pad - 4;
        CHECK(has_color(grid, x, y, layout.cell_w, h, viz::kGreen) == correct);
        CHECK(has_color(grid, x, y, layout.cell_w, h, viz::kRed) == !correct);
    }
    CHECK(right > 0);  // both colours are exercised by the micro model
    CHECK(right < 24);
}

TEST_CASE("pictures without a TrueType font: the built-in one and a warning, and a bad font path is an error", "[vis][font]") {
    const fs::path run_dir = trained_run();
    const fs::path out = temp_dir("vis_font");
    const std::string eval = "eval --weights " + (run_dir / "best.safetensors").string() + " --data " +
                             fixture("train_folder") + " --plot ";
    RunResult r = shell("CONVNEXT_FONT=builtin " + std::string(CONVNEXT_CLI) + " " + eval + (out / "a.png").string());
    INFO(r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("warning: no TrueType font found") != std::string::npos);
    CHECK(fs::exists(out / "a.png"));
    r = shell("CONVNEXT_FONT=/nonexistent/x.ttf " + std::string(CONVNEXT_CLI) + " " + eval + (out / "b.png").string());
    CHECK(r.code == 1);
    CHECK(r.output.find("/nonexistent/x.ttf") != std::string::npos);
    CHECK(r.output.find("images: top-1") == std::string::npos);  // refused before evaluating
    CHECK_FALSE(fs::exists(out / "b.png"));
}

TEST_CASE("export-images: Fashion-MNIST as PNG files in class folders", "[vis]") {
    if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) {
        WARN("dataset-fashion-mnist is not installed: skipped");
        return;
    }
    const fs::path out = temp_dir("export_images");
    auto r = run("export-images --dataset fashion-mnist --start 5 --count 20 --out " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    const data::FashionMnistSplit test = data::load_fashion_mnist(data::kFashionMnistDir, false);
    int files = 0;
    for (int64_t i = 5; i < 25; ++i) {
        std::string folder = data::kFashionMnistClasses[test.labels[i]];
        std::replace(folder.begin(), folder.end(), '/', '_');
        char name[32];
        std::snprintf(name, sizeof name, "test_%05lld.png", (long long)i);
        const fs::path png = out / folder / name;
        INFO(png);
        REQUIRE(fs::exists(png));
        data::DecodeOptions grey;
        grey.channels = 1;
        data::Image img = data::load_image(png.string(), grey);
        REQUIRE(img.width == 28);
        CHECK(std::equal(img.pixels.begin(), img.pixels.end(), test.images.begin() + i * 28 * 28));
        ++files;
    }
    int found = 0;
    for (auto& e : fs::recursive_directory_iterator(out)) found += e.is_regular_file();
    CHECK(found == files);
    CHECK(run("export-images --dataset cifar10 --out " + out.string()).code == 1);
    CHECK(run("export-images --dataset fashion-mnist --start 10000 --out " + out.string()).code == 1);
}
