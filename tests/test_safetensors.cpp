// io/safetensors and io/atomic_file: round trips, dtype conversions, and every malformed-file
// rule of the reference implementation giving an error that names the file and the key.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/rng.h"
#include "data/image.h"
#include "io/atomic_file.h"
#include "io/png_writer.h"
#include "io/safetensors.h"
#include "temp_dir.h"

using namespace cnx;
namespace fs = std::filesystem;

namespace {

using test_util::TempDir;

// A file from a header text and raw data bytes, with the header length as given (or its true length).
constexpr uint64_t kTrueLength = ~0ull;
std::string make_bytes(const std::string& header, const std::string& data, uint64_t declared = kTrueLength) {
    uint64_t n = declared == kTrueLength ? header.size() : declared;
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = (char)(n >> (8 * i));
    return out + header + data;
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), (std::streamsize)bytes.size());
}

std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string f32_bytes(std::initializer_list<float> v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(s.data(), v.begin(), s.size());
    return s;
}

// The buffer and file loaders must agree, both on success and on the error.
std::string load_error(const std::string& bytes) {
    std::string buffer_msg, file_msg;
    try {
        io::load_safetensors_from_buffer(bytes.data(), bytes.size(), DType::F32, false, "mem.safetensors");
    } catch (const Error& e) {
        buffer_msg = e.what();
    }
    TempDir dir;
    std::string path = dir / "bad.safetensors";
    write_bytes(path, bytes);
    try {
        io::load_safetensors(path);
    } catch (const Error& e) {
        file_msg = e.what();
    }
    CHECK((buffer_msg.empty() == file_msg.empty()));
    if (!buffer_msg.empty()) {
        CHECK(buffer_msg.find("mem.safetensors") != std::string::npos);
        CHECK(file_msg.find(path) != std::string::npos);
    }
    return buffer_msg;
}

}  // namespace

TEST_CASE("save and load round trip: order, values, dtypes, metadata", "[io][safetensors]") {
    TempDir dir;
    Generator gen(5);
    io::NamedTensors tensors = {
        {"z.last_name_first", randn({3, 4}, DType::F32, &gen)},
        {"a.double", randn({2, 3, 5}, DType::F64, &gen)},
        {"scalar", full({}, 2.5)},
        {"empty", zeros({0, 7})},
        {"m.weight", randn({8, 1, 7, 7}, DType::F32, &gen)},
    };
    io::Metadata meta = {{"arch", "convnext_tiny"}, {"step", "42"}, {"quote", "a \"b\"\n\u00e9"}};
    std::string path = dir / "rt.safetensors";
    io::save_safetensors(path, tensors, meta);

    std::string bytes = read_bytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | (unsigned char)bytes[i];
    CHECK(n % 8 == 0);  // data section aligned
    CHECK(bytes == io::save_safetensors_to_buffer(tensors, meta));

    for (int keep = 0; keep < 2; ++keep) {
        auto f = io::load_safetensors(path, DType::F32, keep == 1);
        CHECK(f.metadata == meta);
        REQUIRE(f.tensors.size() == tensors.size());
        for (size_t i = 0; i < tensors.size(); ++i) {
            INFO(tensors[i].first);
            CHECK(f.tensors[i].first == tensors[i].first);
            CHECK(f.tensors[i].second.shape() == tensors[i].second.shape());
            bool f64 = tensors[i].second.dtype() == DType::F64;
            CHECK(f.tensors[i].second.dtype() == (keep && f64 ? DType::F64 : DType::F32));
            auto got = f.tensors[i].second.to_vector(), want = tensors[i].second.to_vector();
            for (size_t k = 0; k < want.size(); ++k)
                CHECK(got[k] == (keep || !f64 ? want[k] : (double)(float)want[k]));
        }
    }
    auto f64 = io::load_safetensors_from_buffer(bytes.data(), bytes.size(), DType::F64);
    CHECK(f64.get("a.double").to_vector() == tensors[1].second.to_vector());
    CHECK(f64.get("z.last_name_first").dtype() == DType::F64);
    CHECK(f64.contains("scalar"));
    CHECK(f64.get("scalar").item() == 2.5);
    CHECK_THROWS_WITH(f64.get("nope"), Catch::Contains("'nope'"));

    auto header = io::read_safetensors_header(path);
    REQUIRE(header.entries.size() == 5);
    CHECK(header.entries[0].name == "z.last_name_first");
    CHECK(header.entries[1].dtype == "F64");
    CHECK(header.data_start == 8 + n);

    // Saving over an existing file replaces it and leaves no temporary behind.
    io::save_safetensors(path, {{"only", ones({2})}});
    CHECK(io::load_safetensors(path).tensors.size() == 1);
    int files = 0;
    for (auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
    CHECK(files == 1);
}

TEST_CASE("save rejects bad names and tensors", "[io][safetensors]") {
    CHECK_THROWS_WITH(io::save_safetensors_to_buffer({{"a", ones({1})}, {"a", ones({1})}}), Catch::Contains("twice"));
    CHECK_THROWS_WITH(io::save_safetensors_to_buffer({{"__metadata__", ones({1})}}), Catch::Contains("reserved"));
    CHECK_THROWS_WITH(io::save_safetensors_to_buffer({{"", ones({1})}}), Catch::Contains("empty"));
    CHECK_THROWS_WITH(io::save_safetensors_to_buffer({{"u", Tensor()}}), Catch::Contains("undefined"));
    CHECK_THROWS_WITH(io::save_safetensors_to_buffer({{"bad\xff", ones({1})}}), Catch::Contains("UTF-8"));
    CHECK_THROWS_WITH(io::save_safetensors("/nonexistent_dir_cnx/x.safetensors", {{"a", ones({1})}}),
                      Catch::Contains("/nonexistent_dir_cnx/x.safetensors"));
    // An empty file list is a valid file.
    std::string empty = io::save_safetensors_to_buffer({});
    CHECK(io::load_safetensors_from_buffer(empty.data(), empty.size()).tensors.empty());
}

TEST_CASE("other dtypes are converted on load", "[io][safetensors]") {
    std::string data;
    auto put16 = [&](uint16_t v) { data.push_back((char)(v & 0xff)); data.push_back((char)(v >> 8)); };
    // F16: 1.0, -2.0, 65504 (max), smallest subnormal 2^-24, inf
    for (uint16_t h : {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00}) put16(h);
    // BF16: 1.0, -3.5
    for (uint16_t h : {0x3f80, 0xc060}) put16(h);
    // I64: -5, 1 << 40
    for (int64_t v : {int64_t(-5), int64_t(1) << 40}) data.append(reinterpret_cast<const char*>(&v), 8);
    // U8: 0, 255; BOOL: 0, 7 (true); I8: -128
    for (unsigned char c : {0, 255, 0, 7, 0x80}) data.push_back((char)c);
    // F8_E4M3: 1.0 (0x38), -448 (0xfe, the largest), 2^-9 (0x01); F8_E5M2: 1.0 (0x3c), -0.5 (0xb8)
    for (unsigned char c : {0x38, 0xfe, 0x01, 0x3c, 0xb8}) data.push_back((char)c);
    std::string header =
        R"({"f16":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},)"
        R"("bf16":{"dtype":"BF16","shape":[2],"data_offsets":[10,14]},)"
        R"("i64":{"dtype":"I64","shape":[2],"data_offsets":[14,30]},)"
        R"("u8":{"dtype":"U8","shape":[2],"data_offsets":[30,32]},)"
        R"("b":{"dtype":"BOOL","shape":[2],"data_offsets":[32,34]},)"
        R"("i8":{"dtype":"I8","shape":[1],"data_offsets":[34,35]},)"
        R"("e4m3":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[35,38]},)"
        R"("e5m2":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[38,40]}})";
    std::string bytes = make_bytes(header, data);
    auto f = io::load_safetensors_from_buffer(bytes.data(), bytes.size(), DType::F64);
    auto f16 = f.get("f16").to_vector();
    CHECK(f16[0] == 1.0);
    CHECK(f16[1] == -2.0);
    CHECK(f16[2] == 65504.0);
    CHECK(f16[3] == std::ldexp(1.0, -24));
    CHECK(std::isinf(f16[4]));
    CHECK(f.get("bf16").to_vector() == std::vector<double>{1.0, -3.5});
    CHECK(f.get("i64").to_vector() == std::vector<double>{-5.0, std::ldexp(1.0, 40)});
    CHECK(f.get("u8").to_vector() == std::vector<double>{0.0, 255.0});
    CHECK(f.get("b").to_vector() == std::vector<double>{0.0, 1.0});
    CHECK(f.get("i8").to_vector() == std::vector<double>{-128.0});
    CHECK(f.get("e4m3").to_vector() == std::vector<double>{1.0, -448.0, std::ldexp(1.0, -9)});
    CHECK(f.get("e5m2").to_vector() == std::vector<double>{1.0, -0.5});
    // Tensors come back in data order.
    CHECK(f.tensors.front().first == "f16");
    CHECK(f.tensors.back().first == "e5m2");
}

TEST_CASE("malformed files give errors naming the file and the key", "[io][safetensors]") {
    const std::string d8 = f32_bytes({1, 2});
    const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    REQUIRE(load_error(make_bytes(ok, d8)).empty());

    SECTION("truncated") {
        std::string full = make_bytes(ok, d8);
        CHECK_THAT(load_error(full.substr(0, full.size() - 1)), Catch::Contains("data section"));
        CHECK_THAT(load_error(full.substr(0, 20)), Catch::Contains("larger than the file"));
        CHECK_THAT(load_error(full.substr(0, 5)), Catch::Contains("too small for a header"));
        CHECK_THAT(load_error(""), Catch::Contains("too small"));
    }
    SECTION("header size") {
        CHECK_THAT(load_error(make_bytes(ok, d8, 100'000'001)), Catch::Contains("exceeds the limit"));
        CHECK_THAT(load_error(make_bytes(ok, d8, ~1ull)), Catch::Contains("exceeds the limit"));  // 2^64 - 2
        CHECK_THAT(load_error(make_bytes(ok, d8, ok.size() + 9)), Catch::Contains("larger than the file"));
    }
    SECTION("JSON structure") {
        CHECK_THAT(load_error(make_bytes("{\"w\": ", d8)), Catch::Contains("not valid JSON"));
        CHECK_THAT(load_error(make_bytes("[1, 2]", "")), Catch::Contains("must be a JSON object"));
        CHECK_THAT(load_error(make_bytes(R"({"w": 3})", d8)), Catch::Contains("tensor 'w': entry must be an object"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", d8)),
                   Catch::Contains("tensor 'w': missing 'data_offsets'"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", d8)),
                   Catch::Contains("tensor 'w': data_offsets must be [begin, end]"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w': unsupported dtype 'Q7'"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w'"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w': negative value -2 in shape"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", d8)),
                   Catch::Contains("tensor 'w': negative value"));
        std::string twice = ok.substr(0, ok.size() - 1) + R"(,"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
        CHECK_THAT(load_error(make_bytes(twice, d8)),
                   Catch::Contains("key 'w' appears twice"));
        CHECK_THAT(load_error(make_bytes(R"({"__metadata__":{"a":1}})", "")), Catch::Contains("'a' is not a string"));
        CHECK_THAT(load_error(make_bytes(std::string(50, '[') + std::string(50, ']'), "")), Catch::Contains("deeply"));
    }
    SECTION("offsets and sizes") {
        std::string two = f32_bytes({1, 2, 3, 4});
        CHECK_THAT(load_error(make_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                         two.substr(0, 12))),
                   Catch::Contains("tensor 'b': data_offsets [4, 12] overlap"));
        CHECK_THAT(load_error(make_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                         two)),
                   Catch::Contains("tensor 'b': data_offsets [8, 16] leave a hole"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8)),
                   Catch::Contains("tensor 'w'"));
        CHECK_THAT(load_error(make_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w': 8 bytes of data for F32[3] (12 bytes expected)"));
        CHECK_THAT(load_error(make_bytes(ok, d8 + "xx")), Catch::Contains("data section has 10"));
        CHECK_THAT(load_error(make_bytes(
                       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w': shape [4294967296,4294967296] overflows"));
        CHECK_THAT(load_error(make_bytes(
                       R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", d8)),
                   Catch::Contains("tensor 'w'"));
        // Zero-element tensors are fine, even with a huge other dimension.
        CHECK(load_error(make_bytes(R"({"e":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]},)"
                                    R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8)).empty());
    }
    CHECK_THROWS_WITH(io::load_safetensors("/nonexistent_cnx.safetensors"),
                      Catch::Contains("/nonexistent_cnx.safetensors: cannot open"));
}

TEST_CASE("mutated and truncated files never crash the loader", "[io][safetensors]") {
    Generator gen(99);
    io::NamedTensors tensors = {{"a", randn({3, 5}, DType::F32, &gen)}, {"b", randn({4}, DType::F64, &gen)},
                                {"c", randn({2, 2, 2}, DType::F32, &gen)}};
    std::string good = io::save_safetensors_to_buffer(tensors, {{"k", "v"}});
    int failures = 0, successes = 0;
    for (size_t len = 0; len < good.size(); ++len) {
        try {
            io::load_safetensors_from_buffer(good.data(), len);
            ++successes;
        } catch (const Error&) {
            ++failures;
        }
    }
    CHECK(successes == 0);  // every proper prefix is invalid
    for (int trial = 0; trial < 3000; ++trial) {
        std::string bad = good;
        int edits = 1 + (int)gen.randint(4);
        for (int e = 0; e < edits; ++e) bad[gen.randint(bad.size())] = (char)gen.randint(256);
        try {
            io::load_safetensors_from_buffer(bad.data(), bad.size());
        } catch (const Error&) {
        }
    }
    SUCCEED("no crash");
}

TEST_CASE("AtomicFile replaces the target only on commit", "[io][atomic]") {
    TempDir dir;
    std::string path = dir / "target.bin";
    io::atomic_write_file(path, std::string("first"));
    CHECK(read_bytes(path) == "first");
    {
        io::AtomicFile f(path);
        f.write("second", 6);
        CHECK(fs::exists(f.temp_path()));
        CHECK(read_bytes(path) == "first");  // not yet visible
        // destroyed without commit (as when an exception unwinds)
    }
    CHECK(read_bytes(path) == "first");
    {
        io::AtomicFile f(path);
        f.write("third", 5);
        f.commit();
        CHECK_THROWS_WITH(f.write("x", 1), Catch::Contains("already committed"));
    }
    CHECK(read_bytes(path) == "third");
    int files = 0;
    for (auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
    CHECK(files == 1);
}

TEST_CASE("write_png writes a PNG that decodes to the same pixels, atomically", "[io][png]") {
    TempDir dir;
    for (int channels : {1, 3}) {
        const int w = 37, h = 23;  // odd sizes: rows are not a multiple of any vector width
        std::vector<uint8_t> px((size_t)w * h * channels);
        for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 7 + i / 13);
        std::string path = dir / ("curves" + std::to_string(channels) + ".png");
        io::write_png(path, px.data(), w, h, channels);
        io::write_png(path, px.data(), w, h, channels);  // replaces the first one
        data::DecodeOptions opts;
        opts.channels = channels;
        data::Image img = data::load_image(path, opts);
        REQUIRE(img.width == w);
        REQUIRE(img.height == h);
        REQUIRE(img.channels == channels);
        CHECK(img.pixels == px);
    }
    int files = 0;
    for (auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
    CHECK(files == 2);  // no temporary file left behind
    CHECK_THROWS_WITH(io::write_png(dir / "x.png", nullptr, 0, 4, 3), Catch::Contains("bad image 0x4x3"));
    CHECK_THROWS_WITH(io::write_png(dir / "no/such/dir/x.png", std::vector<uint8_t>(12).data(), 2, 2, 3),
                      Catch::Contains("no/such/dir/x.png"));
}
