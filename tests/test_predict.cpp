// convnext predict: a random convnext_atto saved as safetensors, classified through the CLI, and
// checked against the same preprocessing + forward run in-process.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/autograd.h"
#include "data/data.h"
#include "core/json.h"
#include "io/safetensors.h"
#include "models/convnext.h"
#include "ops/softmax.h"
#include "temp_dir.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace cnx;
namespace fs = std::filesystem;

namespace {

using test_util::TempDir;

struct RunResult {
    int code = -1;
    std::string out, err;
};

RunResult run_cli(const std::string& args, const TempDir& dir) {
    REQUIRE(fs::exists(CONVNEXT_CLI));  // built by the default target
    std::string err_path = dir / "stderr.txt";
    std::string cmd = std::string("'") + CONVNEXT_CLI + "' --threads 2 " + args + " 2>'" + err_path + "'";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    RunResult r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream f(err_path);
    std::stringstream ss;
    ss << f.rdbuf();
    r.err = ss.str();
    return r;
}

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream is(s);
    for (std::string line; std::getline(is, line);)
        if (!line.empty()) out.push_back(line);
    return out;
}

void write_image(const std::string& path, int w, int h, int comp, uint32_t seed) {
    std::vector<uint8_t> px((size_t)w * h * comp);
    Generator g(seed);
    for (auto& v : px) v = (uint8_t)g.randint(256);
    REQUIRE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp));
}

struct Fixture {
    TempDir dir;
    std::shared_ptr<models::ConvNeXt> model;
    std::string weights, classes;
    Fixture() {
        models::ConvNeXtOptions o;
        o.num_classes = 4;
        Generator gen(7);
        model = models::create_model("convnext_atto", o, &gen);
        // Random non-trivial head so the probabilities are far from uniform.
        for (auto& [name, t] : model->state_dict())
            if (name.rfind("head.", 0) == 0) copy_(t, randn(t.shape(), DType::F32, &gen));
        model->eval();
        weights = dir / "atto.safetensors";
        io::save_safetensors(weights, model->state_dict());
        classes = dir / "class_indices.json";
        data::write_class_indices(classes, {"daisy", "dandelion", "roses", "tulips"});
        write_image(dir / "rgb.png", 50, 40, 3, 1);
        write_image(dir / "grey.png", 37, 45, 1, 2);
        write_image(dir / "rgba.png", 40, 40, 4, 3);
    }
    // The same pipeline in-process: decode, resize 40, crop 32, normalise, forward, softmax.
    std::vector<double> expected(const std::string& image) {
        Tensor x = data::resize_center_crop(data::load_image(image), 40, 32);
        data::normalize_(x, data::kImageNetMean, data::kImageNetStd);
        NoGradGuard ng;
        return softmax(model->forward(x.reshape({1, 32, 32, 3})), -1).to_vector();
    }
};

}  // namespace

// predict --json on the fixture's atto weights with `args`: the run must succeed; one object per image.
static std::vector<nlohmann::json> predict_json(const Fixture& fx, const std::string& args) {
    auto r = run_cli("predict --model convnext_atto --weights '" + fx.weights + "' " + args + " --json", fx.dir);
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::vector<nlohmann::json> out;
    for (const auto& line : lines_of(r.out)) out.push_back(parse_json(line));
    return out;
}

TEST_CASE("predict: --json top-k matches the in-process pipeline", "[predict]") {
    Fixture fx;
    auto js = predict_json(fx, "--classes '" + fx.classes + "' --image '" + fx.dir / "rgb.png" +
                                   "' --resize 40 --crop 32 --topk 3");
    REQUIRE(js.size() == 1);
    auto j = js[0];
    CHECK(j["image"] == fx.dir / "rgb.png");
    REQUIRE(j["top"].is_array());
    REQUIRE(j["top"].size() == 3);
    auto want = fx.expected(fx.dir / "rgb.png");
    const std::vector<std::string> names{"daisy", "dandelion", "roses", "tulips"};
    double sum = 0, prev = 2;
    for (auto& e : j["top"]) {
        int64_t idx = e["index"];
        double p = e["prob"];
        REQUIRE(idx >= 0);
        REQUIRE(idx < 4);
        CHECK(e["label"] == names[idx]);
        CHECK(p <= prev);
        CHECK(p == Approx(want[idx]).epsilon(1e-4));
        prev = p;
        sum += p;
    }
    CHECK(sum <= 1.0 + 1e-5);
    // The top-1 is the argmax of the reference.
    int64_t argmax = std::max_element(want.begin(), want.end()) - want.begin();
    CHECK(j["top"][0]["index"] == argmax);
}

TEST_CASE("predict: several images, a folder, the table, labels default to indices", "[predict]") {
    Fixture fx;
    auto js = predict_json(fx, "--image '" + fx.dir / "rgb.png" + "' '" + fx.dir / "grey.png" +
                                   "' --resize 40 --crop 32 --topk 10");
    REQUIRE(js.size() == 2);
    auto j = js[1];
    CHECK(j["image"] == fx.dir / "grey.png");
    REQUIRE(j["top"].size() == 4);  // top-k capped at the number of classes
    double sum = 0;
    for (auto& e : j["top"]) {
        CHECK(e["label"] == std::to_string(e["index"].get<int64_t>()));
        sum += e["prob"].get<double>();
    }
    CHECK(sum == Approx(1.0).epsilon(1e-5));
    auto want = fx.expected(fx.dir / "grey.png");  // grey decoded as RGB by both
    CHECK(j["top"][0]["prob"].get<double>() == Approx(*std::max_element(want.begin(), want.end())).epsilon(1e-4));

    // A folder: every image in it, sorted (grey, rgb, rgba), other files ignored.
    std::ofstream(fx.dir / "notes.txt") << "x";
    js = predict_json(fx, "--image '" + fx.dir.path.string() + "' --resize 40 --crop 32");
    REQUIRE(js.size() == 3);
    CHECK(js[0]["image"] == fx.dir / "grey.png");
    CHECK(js[2]["image"] == fx.dir / "rgba.png");

    auto r = run_cli("predict --model convnext_atto --weights '" + fx.weights + "' --classes '" + fx.classes +
                         "' --image '" + fx.dir / "rgba.png" + "' --resize 40 --crop 32 --topk 2",
                     fx.dir);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("rank") != std::string::npos);
    CHECK(lines_of(r.out).size() == 4);  // image, header, 2 rows
}

TEST_CASE("predict: errors", "[predict]") {
    Fixture fx;
    std::string base = "predict --model convnext_atto --weights '" + fx.weights + "' --resize 40 --crop 32 ";
    auto r = run_cli(base + "--image '" + fx.dir / "missing.jpg" + "'", fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("error: ") == 0);
    CHECK(r.err.find("missing.jpg") != std::string::npos);

    std::ofstream(fx.dir / "broken.png") << "not a png at all";
    r = run_cli(base + "--image '" + fx.dir / "broken.png" + "'", fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("broken.png") != std::string::npos);

    r = run_cli("predict --model convnext_femto --weights '" + fx.weights + "' --image '" + fx.dir / "rgb.png" + "'",
                fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("do not fit convnext_femto") != std::string::npos);
    CHECK(r.err.find("they fit convnext_atto") != std::string::npos);

    r = run_cli(base + "--num-classes 7 --image '" + fx.dir / "rgb.png" + "'", fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("head.weight") != std::string::npos);

    r = run_cli("predict --model convnext_atto --weights '" + fx.dir / "none.safetensors" + "' --image '" +
                    fx.dir / "rgb.png" + "'",
                fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("none.safetensors") != std::string::npos);

    data::write_class_indices(fx.dir / "three.json", {"a", "b", "c"});
    r = run_cli(base + "--classes '" + fx.dir / "three.json" + "' --image '" + fx.dir / "rgb.png" + "'", fx.dir);
    CHECK(r.code == 1);
    CHECK(r.err.find("3 classes") != std::string::npos);
}
