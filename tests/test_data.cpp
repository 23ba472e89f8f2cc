// data/: decoding, image folders and the split, IDX, transforms (against PyTorch), the loader.
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "data/data.h"
#include "core/json.h"
#include "temp_dir.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace cnx;
using namespace cnx::data;
namespace fs = std::filesystem;

namespace {

using test_util::TempDir;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write((const char*)bytes.data(), (std::streamsize)bytes.size());
}

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A w x h image with channel c of pixel (y, x) = (y * 37 + x * 11 + c * 80) % 256.
std::vector<uint8_t> pattern(int w, int h, int comp) {
    std::vector<uint8_t> p((size_t)w * h * comp);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < comp; ++c) p[((size_t)y * w + x) * comp + c] = (uint8_t)((y * 37 + x * 11 + c * 80) % 256);
    return p;
}

void write_png(const std::string& path, int w, int h, int comp) {
    auto p = pattern(w, h, comp);
    REQUIRE(stbi_write_png(path.c_str(), w, h, comp, p.data(), w * comp));
}

// PNG by hand (for what stb_image_write cannot produce: 16-bit, lying headers).
void put_be32(std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back((uint8_t)(x >> s));
}
void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
    put_be32(out, (uint32_t)data.size());
    std::vector<uint8_t> td(type, type + 4);
    td.insert(td.end(), data.begin(), data.end());
    out.insert(out.end(), td.begin(), td.end());
    put_be32(out, (uint32_t)crc32(0, td.data(), (uInt)td.size()));
}
std::vector<uint8_t> make_png(uint32_t w, uint32_t h, int bit_depth, int color_type, const std::vector<uint8_t>& raw) {
    std::vector<uint8_t> out{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    std::vector<uint8_t> ihdr;
    put_be32(ihdr, w);
    put_be32(ihdr, h);
    ihdr.insert(ihdr.end(), {(uint8_t)bit_depth, (uint8_t)color_type, 0, 0, 0});
    png_chunk(out, "IHDR", ihdr);
    uLongf n = compressBound((uLong)raw.size());
    std::vector<uint8_t> z(n);
    REQUIRE(compress(z.data(), &n, raw.data(), (uLong)raw.size()) == Z_OK);
    z.resize(n);
    png_chunk(out, "IDAT", z);
    png_chunk(out, "IEND", {});
    return out;
}

// Two-frame GIF, 3x2: frame 1 red with a green pixel at (x 1, y 1); frame 2 all blue.
const std::vector<uint8_t> kGif{71, 73, 70, 56, 55, 97, 3,  0,  2,  0,  129, 0,  0,  0, 255, 0,  255, 0,  0, 0,
                                0,  0,  0,  0,  0,  44, 0,  0,  0,  0,  3,   0,  2,  0, 0,   8,  8,   0,  3, 8,
                                12, 0,  32, 64, 64, 0,  44, 0,  0,  0,  0,   3,  0,  2, 0,   129, 0,  0,  255, 0,
                                0,  0,  0,  0,  0,  0,  0,  0,  8,  6,  0,   1,  8,  28, 24,  16, 0,  59};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Decoding

TEST_CASE("decode: PNG, BMP, TGA round trip exactly, grey and RGBA become RGB", "[data][decode]") {
    TempDir dir;
    write_png(dir / "rgb.png", 5, 4, 3);
    Image img = load_image(dir / "rgb.png");
    REQUIRE(img.height == 4);
    REQUIRE(img.width == 5);
    REQUIRE(img.channels == 3);
    CHECK(img.pixels == pattern(5, 4, 3));

    auto p3 = pattern(6, 3, 3);
    REQUIRE(stbi_write_bmp((dir / "a.bmp").c_str(), 6, 3, 3, p3.data()));
    REQUIRE(stbi_write_tga((dir / "a.tga").c_str(), 6, 3, 3, p3.data()));
    CHECK(load_image(dir / "a.bmp").pixels == p3);
    CHECK(load_image(dir / "a.tga").pixels == p3);

    write_png(dir / "grey.png", 4, 3, 1);
    Image g = load_image(dir / "grey.png");
    REQUIRE(g.channels == 3);
    auto gp = pattern(4, 3, 1);
    for (int i = 0; i < 12; ++i)
        for (int c = 0; c < 3; ++c) CHECK(g.pixels[i * 3 + c] == gp[i]);
    CHECK(load_image(dir / "grey.png", {1}).pixels == gp);

    write_png(dir / "rgba.png", 4, 3, 4);
    Image a = load_image(dir / "rgba.png");
    REQUIRE(a.channels == 3);
    auto ap = pattern(4, 3, 4);
    for (int i = 0; i < 12; ++i)
        for (int c = 0; c < 3; ++c) CHECK(a.pixels[i * 3 + c] == ap[i * 4 + c]);

    write_png(dir / "ga.png", 2, 2, 2);  // grey + alpha
    Image ga = load_image(dir / "ga.png");
    auto gap = pattern(2, 2, 2);
    for (int i = 0; i < 4; ++i) CHECK(ga.pixels[i * 3 + 1] == gap[i * 2]);

    // One channel from RGB is luma.
    Image l = load_image(dir / "rgb.png", {1});
    REQUIRE(l.channels == 1);
    auto rgb = pattern(5, 4, 3);
    int r = rgb[0], gg = rgb[1], b = rgb[2];
    CHECK(l.pixels[0] == ((r * 77 + gg * 150 + b * 29) >> 8));
}

TEST_CASE("decode: JPEG is close, 16-bit PNG keeps the high byte, GIF gives its first frame", "[data][decode]") {
    TempDir dir;
    std::vector<uint8_t> flat(16 * 16 * 3);
    for (size_t i = 0; i < flat.size(); i += 3) flat[i] = 200, flat[i + 1] = 100, flat[i + 2] = 50;
    REQUIRE(stbi_write_jpg((dir / "a.jpg").c_str(), 16, 16, 3, flat.data(), 95));
    Image j = load_image(dir / "a.jpg");
    REQUIRE(j.height == 16);
    for (size_t i = 0; i < flat.size(); ++i) CHECK(std::abs((int)j.pixels[i] - (int)flat[i]) <= 3);

    // 2x2 grey 16-bit: each row = filter byte 0 + big-endian samples.
    std::vector<uint8_t> raw{0, 0xAB, 0xCD, 0x12, 0x34, 0, 0xFF, 0xFF, 0x00, 0x01};
    write_bytes(dir / "deep.png", make_png(2, 2, 16, 0, raw));
    Image d = load_image(dir / "deep.png", {1});
    REQUIRE(d.pixels == std::vector<uint8_t>{0xAB, 0x12, 0xFF, 0x00});

    write_bytes(dir / "anim.gif", kGif);
    Image gif = load_image(dir / "anim.gif");
    REQUIRE(gif.height == 2);
    REQUIRE(gif.width == 3);
    for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 3; ++x) {
            bool green = y == 1 && x == 1;
            CHECK((int)gif.at(y, x, 0) == (green ? 0 : 255));
            CHECK((int)gif.at(y, x, 1) == (green ? 255 : 0));
            CHECK((int)gif.at(y, x, 2) == 0);
        }
}

TEST_CASE("decode: errors name the file and never crash", "[data][decode]") {
    TempDir dir;
    std::string missing = dir / "nope.png";
    auto e = error_of([&] { load_image(missing); });
    CHECK(contains(e, missing));
    CHECK(contains(e, "no such file"));

    write_bytes(dir / "empty.jpg", {});
    CHECK(contains(error_of([&] { load_image(dir / "empty.jpg"); }), "empty"));
    CHECK(contains(error_of([&] { load_image(dir.path.string()); }), "directory"));

    std::string txt = dir / "text.jpg";
    write_bytes(txt, std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
    e = error_of([&] { load_image(txt); });
    CHECK(contains(e, txt));
    CHECK(contains(e, "cannot decode"));

    // A real JPEG cut in the middle, and one with its bytes scrambled after the header:
    // either an error naming the file or a decoded image of the declared size, never a crash.
    std::vector<uint8_t> flat(64 * 64 * 3, 128);
    REQUIRE(stbi_write_jpg((dir / "ok.jpg").c_str(), 64, 64, 3, flat.data(), 90));
    std::ifstream f(dir / "ok.jpg", std::ios::binary);
    std::vector<uint8_t> jpg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    for (size_t cut : {size_t(2), size_t(20), jpg.size() / 2}) {
        std::vector<uint8_t> part(jpg.begin(), jpg.begin() + cut);
        try {
            Image im = decode_image(part.data(), part.size(), "cut.jpg");
            CHECK(im.pixels.size() == 64u * 64u * 3u);
        } catch (const BadImageError& err) {
            CHECK(contains(err.what(), "cut.jpg"));
        }
    }
    // A Huffman table declaring more than 256 codes: stb_image 2.27 would write past its table.
    const uint8_t dht_marker[2] = {0xFF, 0xC4};
    auto dht = std::search(jpg.begin(), jpg.end(), dht_marker, dht_marker + 2);
    REQUIRE(dht != jpg.end());
    auto overfull = jpg;
    size_t at = (dht - jpg.begin()) + 5;  // marker (2), length (2), class/id (1), then 16 counts
    for (int k = 0; k < 16; ++k) overfull[at + k] = 20;
    e = error_of([&] { decode_image(overfull.data(), overfull.size(), "overfull.jpg"); });
    CHECK(contains(e, "overfull.jpg"));
    CHECK(contains(e, "Huffman"));
    Generator gen(3);
    for (int trial = 0; trial < 20; ++trial) {
        auto bad = jpg;
        for (size_t i = 20; i < bad.size(); ++i)
            if (gen.uniform() < 0.05) bad[i] = (uint8_t)gen.randint(256);
        try {
            Image im = decode_image(bad.data(), bad.size(), "noisy.jpg");
            CHECK(im.pixels.size() == (size_t)(im.height * im.width * 3));
        } catch (const BadImageError& err) {
            CHECK(contains(err.what(), "noisy.jpg"));
        }
    }
}

TEST_CASE("decode: a header declaring a huge image is refused before decoding", "[data][decode]") {
    TempDir dir;
    // 100000 x 100000 RGB would need 30 GB; the file is a few dozen bytes.
    std::vector<uint8_t> tiny_raw(1 + 3, 0);
    std::string bomb = dir / "bomb.png";
    write_bytes(bomb, make_png(100000, 100000, 8, 2, tiny_raw));
    auto e = error_of([&] { load_image(bomb); });
    CHECK(contains(e, bomb));
    CHECK(contains(e, "100000x100000"));
    CHECK(contains(e, "limit of 178956970"));
    // JPEG: start-of-frame declaring 60000 x 60000 after an APP0 segment.
    std::vector<uint8_t> jpg{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xEA, 0x60,
                             0xEA, 0x60, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
    e = error_of([&] { decode_image(jpg.data(), jpg.size(), "bomb.jpg"); });
    CHECK(contains(e, "bomb.jpg: image is 60000x60000 = 3600000000 pixels"));

    // The limit is configurable, and applies to honest images too.
    write_png(dir / "small.png", 40, 30, 3);
    DecodeOptions opts;
    opts.max_pixels = 1000;
    CHECK(contains(error_of([&] { load_image(dir / "small.png", opts); }), "limit of 1000"));
    opts.max_pixels = 1200;
    CHECK(load_image(dir / "small.png", opts).height == 30);
}

// ---------------------------------------------------------------------------------------------
// Transforms

TEST_CASE("transforms: bilinear resize of a 4x4 ramp by hand", "[data][transforms]") {
    // v(y, x) = 4y + x. Halving samples at source (0.5, 0.5), (0.5, 2.5), ...: the 2x2 block means.
    Tensor ramp = arange(16).reshape({4, 4, 1});
    auto v = resize(ramp, 2, 2).to_vector();
    REQUIRE(v.size() == 4);
    CHECK(v[0] == Approx(2.5));
    CHECK(v[1] == Approx(4.5));
    CHECK(v[2] == Approx(10.5));
    CHECK(v[3] == Approx(12.5));
    // Doubling: output 0 maps to source -0.25, clamped to 0 (edge replicate); output 1 to 0.25.
    auto up = resize(ramp, 8, 8).to_vector();
    CHECK(up[0] == Approx(0.0));
    CHECK(up[1] == Approx(0.25));
    CHECK(up[2] == Approx(0.75));
    CHECK(up[7] == Approx(3.0));
    CHECK(up[8] == Approx(1.0));  // row 1: source y 0.25 -> 4 * 0.25
    // Same size is the identity.
    CHECK(resize(ramp, 4, 4).to_vector() == ramp.to_vector());
}

TEST_CASE("transforms: resize and resized crop match torch.nn.functional.interpolate", "[data][transforms]") {
    std::ifstream f(std::string(CONVNEXT_SOURCE_DIR) + "/tests/fixtures/transforms.json");
    REQUIRE(f.good());
    auto j = parse_json(f);
    REQUIRE(j["cases"].size() >= 9);
    for (auto& c : j["cases"]) {
        INFO(c["name"].get<std::string>());
        auto shape = c["shape"].get<std::vector<int64_t>>();
        int64_t oh = c["out"][0], ow = c["out"][1];
        Box box{0, 0, shape[0], shape[1]};
        bool has_box = !c["box"].is_null();
        if (has_box) box = {c["box"][0], c["box"][1], c["box"][2], c["box"][3]};
        Tensor out;
        if (c["uint8"].get<bool>()) {
            Image img{shape[0], shape[1], shape[2], c["input"].get<std::vector<uint8_t>>()};
            out = has_box ? resized_crop(img, box, oh, ow) : resize(img, oh, ow);
        } else {
            Tensor img = from_vector(c["input"].get<std::vector<double>>(), shape);
            out = has_box ? resized_crop(img, box, oh, ow) : resize(img, oh, ow);
        }
        REQUIRE(out.shape() == Shape{oh, ow, shape[2]});
        auto got = out.to_vector();
        auto want = c["expected"].get<std::vector<double>>();
        REQUIRE(got.size() == want.size());
        for (size_t i = 0; i < got.size(); ++i) REQUIRE(std::abs(got[i] - want[i]) <= 1e-5 * std::max(1.0, std::abs(want[i])));
    }
}

TEST_CASE("transforms: torchvision sizes and offsets", "[data][transforms]") {
    using P = std::pair<int64_t, int64_t>;
    CHECK(resize_shorter_size(480, 640, 256) == P{256, 341});  // int(256 * 640 / 480) = int(341.33)
    CHECK(resize_shorter_size(640, 480, 256) == P{341, 256});
    CHECK(resize_shorter_size(300, 300, 256) == P{256, 256});
    CHECK(resize_shorter_size(375, 500, 256) == P{256, 341});
    CHECK(eval_resize_size(224, 0.875) == 256);
    CHECK(eval_resize_size(224, 0.9) == 248);
    CHECK(eval_resize_size(288, 1.0) == 288);

    // Offsets use Python's round: half to even.
    Box b = center_crop_box(256, 341, 224, 224);
    CHECK(b.top == 16);
    CHECK(b.left == 58);  // round(58.5) = 58
    CHECK(center_crop_box(5, 5, 2, 2).top == 2);   // round(1.5) = 2
    CHECK(center_crop_box(7, 7, 2, 2).top == 2);   // round(2.5) = 2
    CHECK(center_crop_box(9, 9, 2, 2).top == 4);   // round(3.5) = 4
    CHECK(center_crop_box(4, 4, 6, 6).top == -1);  // crop bigger than the image: zero border

    Tensor img = arange(30).reshape({5, 6, 1});
    auto c = center_crop(img, 3, 2).to_vector();
    // top = round(1.0) = 1, left = round(2.0) = 2
    CHECK(c == std::vector<double>{8, 9, 14, 15, 20, 21});
    auto big = center_crop(arange(4).reshape({2, 2, 1}), 4, 4).to_vector();
    CHECK(big == std::vector<double>{0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 3, 0, 0, 0, 0, 0});

    // Fused resize + centre crop equals the two steps.
    Generator gen(1);
    Tensor r = rand({37, 53, 3}, DType::F32, &gen);
    auto fused = resize_center_crop(r, 24, 20).to_vector();
    auto steps = center_crop(resize_shorter(r, 24), 20, 20).to_vector();
    REQUIRE(fused.size() == steps.size());
    for (size_t i = 0; i < fused.size(); ++i) REQUIRE(fused[i] == steps[i]);
}

TEST_CASE("transforms: flip, normalize, pad, channels", "[data][transforms]") {
    Tensor img = arange(12).reshape({2, 3, 2});
    CHECK(hflip(img).to_vector() == std::vector<double>{4, 5, 2, 3, 0, 1, 10, 11, 8, 9, 6, 7});

    Tensor n = from_vector({0.485, 0.456, 0.406, 1.0, 0.0, 0.5}, {1, 2, 3});
    normalize_(n, kImageNetMean, kImageNetStd);
    auto nv = n.to_vector();
    CHECK(nv[0] == Approx(0.0).margin(1e-6));
    CHECK(nv[2] == Approx(0.0).margin(1e-6));
    CHECK(nv[3] == Approx((1.0 - 0.485) / 0.229).epsilon(1e-6));
    CHECK(nv[4] == Approx((0.0 - 0.456) / 0.224).epsilon(1e-6));
    CHECK(nv[5] == Approx((0.5 - 0.406) / 0.225).epsilon(1e-6));
    CHECK_THROWS_WITH(normalize_(n, {0.1f, 0.2f}, {1.0f}), Catch::Contains("2 means"));

    Tensor g = full({28, 28, 1}, 0.5);
    Tensor p = pad(g, 2);
    REQUIRE(p.shape() == Shape{32, 32, 1});
    auto pv = p.to_vector();
    CHECK(pv[0] == 0.0);
    CHECK(pv[2 * 32 + 2] == 0.5);
    CHECK(pv[29 * 32 + 29] == 0.5);
    CHECK(pv[30 * 32 + 29] == 0.0);

    Tensor three = to_channels(from_vector({0.2, 0.7}, {1, 2, 1}), 3);
    CHECK(three.to_vector() == std::vector<double>{0.2f, 0.2f, 0.2f, 0.7f, 0.7f, 0.7f});
    Tensor one = to_channels(from_vector({1.0, 0.0, 0.0}, {1, 1, 3}), 1);
    CHECK(one.to_vector()[0] == Approx(0.2989));
}

TEST_CASE("transforms: RandomResizedCrop boxes", "[data][transforms]") {
    Generator gen(0);
    int fallbacks = 0;
    for (int i = 0; i < 500; ++i) {
        int64_t H = 20 + (int64_t)gen.randint(200), W = 20 + (int64_t)gen.randint(200);
        Box b = random_resized_crop_box(H, W, gen);
        REQUIRE(b.top >= 0);
        REQUIRE(b.left >= 0);
        REQUIRE(b.height >= 1);
        REQUIRE(b.width >= 1);
        REQUIRE(b.top + b.height <= H);
        REQUIRE(b.left + b.width <= W);
        double frac = (double)b.height * b.width / (H * W);
        double aspect = (double)b.width / b.height;
        // Rounding to whole pixels moves area and ratio a little.
        if (frac < 0.06 || aspect < 0.7 || aspect > 1.45) ++fallbacks;
    }
    CHECK(fallbacks == 0);

    // A 1x100 strip never fits: the fallback is the centre crop clamped to ratio 4/3.
    Box s = random_resized_crop_box(1, 100, gen);
    CHECK(s.height == 1);
    CHECK(s.width == 1);  // round(1 * 4/3)
    CHECK(s.left == 49);
    Box t = random_resized_crop_box(100, 3, gen);
    CHECK(t.width == 3);
    CHECK(t.height == 4);  // round(3 / (3/4))
    CHECK(t.top == 48);

    // Same generator state, same box.
    Generator a(9), b(9);
    for (int i = 0; i < 10; ++i) {
        Box x = random_resized_crop_box(300, 400, a), y = random_resized_crop_box(300, 400, b);
        CHECK((x.top == y.top && x.left == y.left && x.height == y.height && x.width == y.width));
    }
}

TEST_CASE("transforms: train and eval pipelines", "[data][transforms]") {
    Image img{50, 70, 3, pattern(70, 50, 3)};
    Generator gen(5);
    Tensor t = train_transform({32})(img, gen);
    CHECK(t.shape() == Shape{32, 32, 3});
    auto ev = eval_transform(32, 0.875)(img, gen);
    REQUIRE(ev.shape() == Shape{32, 32, 3});
    // Eval = resize shorter to int(32 / 0.875) = 36, centre crop 32, normalise.
    Tensor ref = resize_center_crop(img, 36, 32);
    normalize_(ref, kImageNetMean, kImageNetStd);
    CHECK(ev.to_vector() == ref.to_vector());
    // Training crops differ from draw to draw but repeat with the same generator state.
    Generator g1(42), g2(42);
    auto tr = train_transform({32});
    CHECK(tr(img, g1).to_vector() == tr(img, g2).to_vector());
    CHECK(tr(img, g1).to_vector() != tr(img, g1).to_vector());
}

// ---------------------------------------------------------------------------------------------
// Image folders and the split

namespace {
// root/<class>/<n images>, PNGs of varying size.
void make_folder(const fs::path& root, const std::vector<std::pair<std::string, int>>& classes) {
    for (auto& [name, n] : classes) {
        fs::create_directories(root / name);
        for (int i = 0; i < n; ++i) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "img_%03d.png", i);
            write_png((root / name / buf).string(), 4 + i % 3, 5, 3);
        }
    }
}
}  // namespace

TEST_CASE("image folder: classes, extensions and errors", "[data][folder]") {
    TempDir dir;
    fs::path root = dir.path / "flowers";
    make_folder(root, {{"tulips", 2}, {"daisy", 3}});
    write_png((root / "daisy" / "UPPER.JPG").string(), 4, 4, 3);  // content is PNG; the name is what counts
    write_png((root / "daisy" / "x.Jpeg").string(), 4, 4, 3);
    write_png((root / "daisy" / "y.BMP").string(), 4, 4, 3);
    write_bytes((root / "daisy" / "notes.txt").string(), {'h', 'i'});
    write_bytes((root / "daisy" / ".hidden.jpg").string(), {'h', 'i'});
    fs::create_directories(root / ".ipynb_checkpoints");
    write_bytes((root / "README.md").string(), {'x'});

    ImageFolderIndex idx = scan_image_folder(root.string());
    REQUIRE(idx.classes == std::vector<std::string>{"daisy", "tulips"});
    std::vector<std::string> names;
    for (auto& p : idx.paths) names.push_back(fs::path(p).filename().string());
    CHECK(names == std::vector<std::string>{"UPPER.JPG", "img_000.png", "img_001.png", "img_002.png", "x.Jpeg",
                                            "y.BMP", "img_000.png", "img_001.png"});
    CHECK(idx.labels == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 1});

    CHECK(contains(error_of([&] { scan_image_folder(dir / "missing"); }), dir / "missing"));
    fs::create_directories(dir.path / "empty");
    CHECK(contains(error_of([&] { scan_image_folder(dir / "empty"); }), "no class subfolders"));
    fs::create_directories(dir.path / "noimages" / "cat");
    write_bytes(dir / "noimages/cat/a.txt", {'x'});
    CHECK(contains(error_of([&] { scan_image_folder(dir / "noimages"); }), "no images"));
}

TEST_CASE("split: seeded, per class, printed, class_indices.json exact", "[data][folder]") {
    TempDir dir;
    fs::path root = dir.path / "ds";
    make_folder(root, {{"daisy", 10}, {"dandelion", 7}, {"roses", 3}});
    SplitOptions opts;
    opts.class_indices_path = dir / "class_indices.json";
    std::ostringstream log;
    opts.log = &log;
    SplitData s = read_split_data(root.string(), opts);
    // int(10 * 0.2) = 2, int(7 * 0.2) = 1, int(3 * 0.2) = 0.
    CHECK(s.val_paths.size() == 3);
    CHECK(s.train_paths.size() == 17);
    CHECK(contains(log.str(), "20 images were found in the dataset.\n17 images for training.\n"
                              "3 images for validation.\n"));
    CHECK(contains(log.str(), "daisy: 10 (8 train, 2 val)"));
    CHECK(std::count(s.val_labels.begin(), s.val_labels.end(), 0) == 2);
    CHECK(std::count(s.val_labels.begin(), s.val_labels.end(), 1) == 1);
    std::set<std::string> all(s.train_paths.begin(), s.train_paths.end());
    all.insert(s.val_paths.begin(), s.val_paths.end());
    CHECK(all.size() == 20);
    CHECK(read_text(dir / "class_indices.json") == "{\n    \"0\": \"daisy\",\n    \"1\": \"dandelion\",\n    \"2\": \"roses\"\n}");
    CHECK(read_class_indices(dir / "class_indices.json") == std::vector<std::string>{"daisy", "dandelion", "roses"});

    SplitData again = read_split_data(root.string(), opts);
    CHECK(again.val_paths == s.val_paths);
    CHECK(again.train_paths == s.train_paths);
    opts.seed = 1;
    SplitData other = read_split_data(root.string(), opts);
    CHECK(other.val_paths != s.val_paths);
    CHECK(other.val_paths.size() == 3);

    opts.val_rate = 0;
    SplitData none = read_split_data(root.string(), opts);
    CHECK(none.val_paths.empty());
    CHECK(none.train_paths.size() == 20);
    opts.val_rate = 0.2;
    fs::path tiny = dir.path / "tiny";
    make_folder(tiny, {{"a", 2}, {"b", 2}});
    CHECK(contains(error_of([&] { read_split_data(tiny.string(), opts); }), "no validation image"));
}

TEST_CASE("class_indices.json: order past 9, non-ASCII escaped, bad files named", "[data][folder]") {
    std::vector<std::string> classes;
    for (int i = 0; i < 11; ++i) classes.push_back("c" + std::to_string(i));
    classes[3] = "caf\xc3\xa9";
    std::string text = class_indices_json(classes);
    CHECK(text.find("\"9\": \"c9\",\n    \"10\": \"c10\"\n}") != std::string::npos);
    CHECK(contains(text, "\"3\": \"caf\\u00e9\""));
    TempDir dir;
    write_bytes(dir / "bad.json", {'{', '"', 'x', '"', ':', '"', 'y', '"', '}'});
    CHECK(contains(error_of([&] { read_class_indices(dir / "bad.json"); }), "bad.json"));
    write_class_indices(dir / "ok.json", classes);
    CHECK(read_class_indices(dir / "ok.json") == classes);
}

// ---------------------------------------------------------------------------------------------
// IDX

namespace {
void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, bytes.data(), (unsigned)bytes.size()) == (int)bytes.size());
    gzclose(f);
}
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out{0, 0, 8, (uint8_t)dims.size()};
    for (auto d : dims) put_be32(out, d);
    out.insert(out.end(), data.begin(), data.end());
    return out;
}
}  // namespace

TEST_CASE("idx: parse, validate, refuse truncated and malformed files", "[data][idx]") {
    TempDir dir;
    std::vector<uint8_t> pix(3 * 2 * 4);
    for (size_t i = 0; i < pix.size(); ++i) pix[i] = (uint8_t)(i * 7);
    write_gz(dir / "img.gz", idx_bytes({3, 2, 4}, pix));
    IdxArray a = read_idx(dir / "img.gz");
    CHECK(a.dims == std::vector<int64_t>{3, 2, 4});
    CHECK(a.data == pix);

    auto full_bytes = idx_bytes({3, 2, 4}, pix);
    write_gz(dir / "short.gz", std::vector<uint8_t>(full_bytes.begin(), full_bytes.end() - 5));
    auto e = error_of([&] { read_idx(dir / "short.gz"); });
    CHECK(contains(e, "short.gz"));
    CHECK(contains(e, "truncated"));

    // A gzip stream cut short (not a short payload): zlib reports it, we name the file.
    std::ifstream f(dir / "img.gz", std::ios::binary);
    std::vector<uint8_t> gz((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    write_bytes(dir / "cut.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() - 12));
    CHECK(contains(error_of([&] { read_idx(dir / "cut.gz"); }), "cut.gz"));

    auto extra = full_bytes;
    extra.push_back(1);
    write_gz(dir / "extra.gz", extra);
    CHECK(contains(error_of([&] { read_idx(dir / "extra.gz"); }), "trailing"));

    auto magic = full_bytes;
    magic[0] = 0x1f;
    write_gz(dir / "magic.gz", magic);
    CHECK(contains(error_of([&] { read_idx(dir / "magic.gz"); }), "bad magic"));
    auto type = full_bytes;
    type[2] = 0x0D;
    write_gz(dir / "float.gz", type);
    CHECK(contains(error_of([&] { read_idx(dir / "float.gz"); }), "not supported"));
    // A header declaring far more data than the file holds is refused without allocating it.
    write_gz(dir / "huge.gz", idx_bytes({60000, 4000, 4000}, {1, 2, 3}));
    CHECK(contains(error_of([&] { read_idx(dir / "huge.gz"); }), "declare more than"));
    write_gz(dir / "big.gz", idx_bytes({1000, 1000, 1000}, {1, 2, 3}));
    CHECK(contains(error_of([&] { read_idx(dir / "big.gz"); }), "found 3"));
    CHECK(contains(error_of([&] { read_idx(dir / "nothing.gz"); }), "no such file"));
}

TEST_CASE("fashion-mnist: loader checks and dataset samples", "[data][idx]") {
    TempDir dir;
    std::vector<uint8_t> pix(4 * 28 * 28, 0);
    for (int i = 0; i < 4; ++i) pix[i * 784 + 0] = 255, pix[i * 784 + 27] = 51;  // row 0: left 255, right 51
    write_gz(dir / "train-images-idx3-ubyte.gz", idx_bytes({4, 28, 28}, pix));
    write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes({4}, {0, 9, 3, 1}));
    FashionMnistSplit s = load_fashion_mnist(dir.path.string(), true);
    CHECK(s.count == 4);
    CHECK(s.labels == std::vector<int64_t>{0, 9, 3, 1});

    FashionMnistDataset plain(s);
    Generator gen(0);
    Sample smp = plain.get(1, gen);
    REQUIRE(smp.image.shape() == Shape{32, 32, 1});
    CHECK(smp.label == 9);
    auto v = smp.image.to_vector();
    CHECK(v[0] == Approx((0 - 0.2860) / 0.3530));
    CHECK(v[2 * 32 + 2] == Approx((1.0 - 0.2860) / 0.3530));
    CHECK(v[2 * 32 + 29] == Approx((0.2 - 0.2860) / 0.3530));

    FashionMnistOptions aug;
    aug.augment = true;
    aug.channels = 3;
    FashionMnistDataset augmented(s, aug);
    int flipped = 0;
    for (uint64_t seed = 0; seed < 40; ++seed) {
        Generator g(seed);
        auto a = augmented.get(0, g).image.to_vector();
        REQUIRE(a.size() == 32u * 32u * 3u);
        bool f = a[(2 * 32 + 2) * 3] < 0;  // the bright pixel moved to the right
        flipped += f;
        CHECK(a[(2 * 32 + (f ? 29 : 2)) * 3 + 2] == Approx((1.0 - 0.2860) / 0.3530));
    }
    CHECK(flipped > 5);
    CHECK(flipped < 35);

    write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_bytes({4, 28, 28}, pix));
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_bytes({3}, {0, 1, 2}));
    CHECK(contains(error_of([&] { load_fashion_mnist(dir.path.string(), false); }), "3 labels"));
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_bytes({4}, {0, 1, 2, 10}));
    CHECK(contains(error_of([&] { load_fashion_mnist(dir.path.string(), false); }), "label 10"));
}

TEST_CASE("fashion-mnist: the installed dataset", "[data][idx]") {
    if (!fs::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) {
        WARN("Fashion-MNIST not installed at " << kFashionMnistDir << "; skipped");
        return;
    }
    FashionMnistSplit test = load_fashion_mnist(kFashionMnistDir, false);
    CHECK(test.count == 10000);
    CHECK(test.height == 28);
    CHECK(test.width == 28);
    std::vector<int> per_class(10, 0);
    for (auto l : test.labels) per_class[l]++;
    for (int c : per_class) CHECK(c == 1000);
    CHECK(kFashionMnistClasses.size() == 10);
    CHECK(kFashionMnistClasses[0] == "T-shirt/top");
    CHECK(kFashionMnistClasses[9] == "Ankle boot");
}

// ---------------------------------------------------------------------------------------------
// Loader

namespace {
// Sample i: a 2x2x1 image holding i + a random draw from its generator, label i % 3. Indices in
// `bad` throw BadImageError, `broken` a plain error.
class ToyDataset : public Dataset {
public:
    int64_t n;
    std::set<int64_t> bad, broken;
    mutable std::atomic<int> calls{0};
    explicit ToyDataset(int64_t n) : n(n) {}
    int64_t size() const override { return n; }
    Sample get(int64_t i, Generator& gen) const override {
        ++calls;
        if (bad.count(i)) throw BadImageError("cannot decode toy_" + std::to_string(i) + ".jpg: corrupt");
        if (broken.count(i)) fail("toy dataset: broken sample ", i);
        Tensor t = full({2, 2, 1}, (double)i + gen.uniform());
        return {t, i % 3};
    }
    std::string describe(int64_t i) const override { return "toy_" + std::to_string(i) + ".jpg"; }
};

std::vector<Batch> epoch_batches(DataLoader& dl, int64_t epoch, int64_t start = 0) {
    dl.start_epoch(epoch, start);
    std::vector<Batch> out;
    Batch b;
    while (dl.next(b)) out.push_back(b);
    return out;
}
}  // namespace

TEST_CASE("loader: every sample once per epoch, with and without drop_last", "[data][loader]") {
    auto ds = std::make_shared<ToyDataset>(23);
    for (bool drop_last : {false, true}) {
        LoaderOptions o;
        o.batch_size = 5;
        o.drop_last = drop_last;
        o.num_workers = 2;
        DataLoader dl(ds, o);
        CHECK(dl.batches_per_epoch() == (drop_last ? 4 : 5));
        for (int64_t epoch = 0; epoch < 2; ++epoch) {
            auto batches = epoch_batches(dl, epoch);
            REQUIRE((int64_t)batches.size() == dl.batches_per_epoch());
            std::multiset<int64_t> seen;
            for (size_t k = 0; k < batches.size(); ++k) {
                auto& b = batches[k];
                CHECK(b.batch == (int64_t)k);
                CHECK(b.epoch == epoch);
                CHECK(b.images.shape() == Shape{b.size(), 2, 2, 1});
                auto v = b.images.to_vector();
                for (int64_t s = 0; s < b.size(); ++s) {
                    CHECK(b.labels[s] == b.indices[s] % 3);
                    CHECK((int64_t)std::floor(v[s * 4]) == b.indices[s]);  // the sample's own image
                    seen.insert(b.indices[s]);
                }
                if (k + 1 < batches.size()) CHECK(b.size() == 5);
            }
            CHECK(seen.size() == (drop_last ? 20u : 23u));
            CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == seen.size());
            if (!drop_last) CHECK(batches.back().size() == 3);
        }
        // Each epoch shuffles differently.
        CHECK(epoch_batches(dl, 0)[0].indices != epoch_batches(dl, 1)[0].indices);
    }
    LoaderOptions seq;
    seq.shuffle = false;
    seq.batch_size = 10;
    DataLoader dl(ds, seq);
    CHECK(epoch_batches(dl, 0)[1].indices == std::vector<int64_t>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
}

TEST_CASE("loader: identical batches for any worker count, and on resume", "[data][loader]") {
    auto ds = std::make_shared<ToyDataset>(50);
    auto run = [&](int workers, int64_t epoch, int64_t start) {
        LoaderOptions o;
        o.batch_size = 8;
        o.num_workers = workers;
        o.seed = 1234;
        o.drop_last = true;
        DataLoader dl(ds, o);
        return epoch_batches(dl, epoch, start);
    };
    auto same = [](const std::vector<Batch>& a, const std::vector<Batch>& b, size_t offset) {
        REQUIRE(a.size() == b.size() + offset);
        for (size_t k = 0; k < b.size(); ++k) {
            CHECK(a[k + offset].indices == b[k].indices);
            CHECK(a[k + offset].labels == b[k].labels);
            CHECK(a[k + offset].images.to_vector() == b[k].images.to_vector());
        }
    };
    auto ref = run(0, 3, 0);
    same(ref, run(1, 3, 0), 0);
    same(ref, run(2, 3, 0), 0);
    same(ref, run(5, 3, 0), 0);
    same(ref, run(2, 3, 4), 4);  // resumed at batch 4 of epoch 3
    // A different seed changes order and augmentation.
    LoaderOptions o;
    o.batch_size = 8;
    o.seed = 1235;
    DataLoader other(ds, o);
    CHECK(epoch_batches(other, 3)[0].indices != ref[0].indices);
}

TEST_CASE("loader: errors propagate, bad images throw or are skipped", "[data][loader]") {
    auto ds = std::make_shared<ToyDataset>(12);
    ds->bad = {5};
    LoaderOptions o;
    o.batch_size = 4;
    o.shuffle = false;
    o.num_workers = 2;
    {
        DataLoader dl(ds, o);
        dl.start_epoch(0);
        Batch b;
        REQUIRE(dl.next(b));
        CHECK_THROWS_WITH(dl.next(b), Catch::Contains("toy_5.jpg"));
        REQUIRE(dl.next(b));  // the loader goes on after a failed batch
        CHECK(b.indices == std::vector<int64_t>{8, 9, 10, 11});
    }
    {
        std::ostringstream log;
        o.skip_bad_images = true;
        o.log = &log;
        DataLoader dl(ds, o);
        auto batches = epoch_batches(dl, 0);
        REQUIRE(batches.size() == 3);
        CHECK(batches[1].indices == std::vector<int64_t>{4, 6, 7});
        CHECK(batches[1].images.size(0) == 3);
        CHECK(dl.skipped() == 1);
        CHECK(contains(log.str(), "warning: skipping toy_5.jpg"));
    }
    {
        // Only decoding failures are skippable; other errors still surface, from any worker.
        auto broken = std::make_shared<ToyDataset>(12);
        broken->broken = {9};
        for (int workers : {0, 3}) {
            o.num_workers = workers;
            DataLoader dl(broken, o);
            CHECK_THROWS_WITH(epoch_batches(dl, 0), Catch::Contains("broken sample 9"));
        }
    }
    {
        // Every sample of a batch bad: that batch is dropped entirely.
        auto all_bad = std::make_shared<ToyDataset>(8);
        all_bad->bad = {0, 1, 2, 3};
        std::ostringstream log;
        o.log = &log;
        o.num_workers = 1;
        DataLoader dl(all_bad, o);
        auto batches = epoch_batches(dl, 0);
        REQUIRE(batches.size() == 1);
        CHECK(batches[0].indices == std::vector<int64_t>{4, 5, 6, 7});
    }
}

TEST_CASE("loader: a generated image folder with a corrupt file", "[data][loader][folder]") {
    TempDir dir;
    fs::path root = dir.path / "ds";
    fs::create_directories(root / "cats");
    fs::create_directories(root / "dogs");
    write_png((root / "cats" / "grey.png").string(), 20, 30, 1);
    write_png((root / "cats" / "rgba.png").string(), 50, 25, 4);
    auto p = pattern(33, 17, 3);
    REQUIRE(stbi_write_bmp((root / "dogs" / "a.bmp").string().c_str(), 33, 17, 3, p.data()));
    REQUIRE(stbi_write_jpg((root / "dogs" / "b.jpg").string().c_str(), 33, 17, 3, p.data(), 90));
    write_bytes((root / "dogs" / "notes.txt").string(), {'n', 'o'});
    std::string corrupt = (root / "dogs" / "corrupt.jpg").string();
    write_bytes(corrupt, {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 2, 3, 4, 5, 6, 7});

    ImageFolderIndex idx = scan_image_folder(root.string());
    REQUIRE(idx.paths.size() == 5);
    auto ds = std::make_shared<ImageFolderDataset>(idx.paths, idx.labels, eval_transform(16));
    LoaderOptions o;
    o.batch_size = 2;
    o.num_workers = 2;
    {
        DataLoader dl(ds, o);
        CHECK_THROWS_WITH(epoch_batches(dl, 0), Catch::Contains(corrupt));
    }
    std::ostringstream log;
    o.skip_bad_images = true;
    o.log = &log;
    DataLoader dl(ds, o);
    auto batches = epoch_batches(dl, 0);
    std::set<int64_t> seen;
    for (auto& b : batches) {
        CHECK(b.images.shape() == Shape{b.size(), 16, 16, 3});
        seen.insert(b.indices.begin(), b.indices.end());
    }
    CHECK(seen.size() == 4);
    CHECK(contains(log.str(), corrupt));
    auto train = std::make_shared<ImageFolderDataset>(idx.paths, idx.labels, train_transform({24}));
    DataLoader tl(train, o);
    for (auto& b : epoch_batches(tl, 1)) CHECK(b.images.shape() == Shape{b.size(), 24, 24, 3});
}
