// PyTorch .pth import: fixtures written by torch.save (tools/gen_pth_fixtures.py) must load to
// exactly the values stored beside them; malformed and hostile files must end in a cnx::Error
// naming the problem; timm <-> official names; the convert CLI.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/key_names.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/unpickler.h"
#include "io/weights.h"
#include "io/zip_reader.h"
#include "models/convnext.h"

using namespace cnx;
using namespace cnx::io;

namespace {

std::string fixture(const std::string& name) { return std::string(CONVNEXT_SOURCE_DIR) + "/tests/fixtures/pth/" + name; }

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE(f.good());
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Same names in the same order, same shapes, bit-identical float32 values.
void require_same(const NamedTensors& got, const NamedTensors& want) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        INFO("tensor " << i << ": " << want[i].first);
        REQUIRE(got[i].first == want[i].first);
        REQUIRE(got[i].second.dtype() == DType::F32);
        REQUIRE(got[i].second.shape() == want[i].second.shape());
        REQUIRE(std::memcmp(got[i].second.raw_data(), want[i].second.raw_data(), want[i].second.nbytes()) == 0);
    }
}

NamedTensors expected(const std::string& name) { return load_safetensors(fixture(name + ".expected.safetensors")).tensors; }

Tensor get(const NamedTensors& t, const std::string& name) {
    for (auto& [n, v] : t)
        if (n == name) return v;
    FAIL("no tensor " << name);
    return Tensor();
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

struct CliResult {
    int code;
    std::string err, out;
};

CliResult run_cli(const std::string& args) {
    std::string out = "/tmp/cnx_test_pth_out.txt", err = "/tmp/cnx_test_pth_err.txt";
    std::string cmd = std::string(CONVNEXT_CLI) + " " + args + " >" + out + " 2>" + err;
    int rc = std::system(cmd.c_str());
    auto slurp = [](const std::string& p) {
        std::ifstream f(p);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    };
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(err), slurp(out)};
}

}  // namespace

TEST_CASE("pth: a state_dict under 'model' loads to the saved values", "[pth]") {
    PthContents c = read_pth(fixture("model.pth"));
    CHECK(c.key == "model");
    CHECK(c.prefix == "model");  // torch >= 1.6 names the archive folder after the file stem
    CHECK(c.top_keys == std::vector<std::string>{"model"});
    require_same(c.tensors, expected("model"));
    CHECK(get(c.tensors, "downsample_layers.0.0.weight").shape() == Shape{8, 3, 4, 4});
    CHECK(get(c.tensors, "stages.0.0.dwconv.weight").shape() == Shape{8, 1, 7, 7});
    CHECK(get(c.tensors, "head.weight").shape() == Shape{5, 8});
}

TEST_CASE("pth: the same weights in other layouts and containers", "[pth]") {
    auto want = expected("model");
    // A bare state_dict; pickle protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE); the archive/
    // prefix of older PyTorch; entries re-zipped with deflate; ZIP64 extra fields everywhere; a
    // "byteorder" entry as PyTorch >= 2.1 writes it.
    for (const char* name : {"bare.pth", "proto4.pth", "archive_prefix.pth", "deflate.pth", "zip64.pth", "byteorder.pth"}) {
        INFO(name);
        PthContents c = read_pth(fixture(name));
        require_same(c.tensors, want);
        CHECK(c.key == (std::string(name) == "bare.pth" ? "" : "model"));
        if (std::string(name) == "archive_prefix.pth") CHECK(c.prefix == "archive");
    }
    require_same(load_pth(fixture("model.pth")), want);
}

TEST_CASE("pth: non-contiguous views are copied in logical order", "[pth]") {
    auto got = load_pth(fixture("noncontig.pth"));
    require_same(got, expected("noncontig"));
    // transposed: t[i][j] = base[j][i] = (5 j + i) / 7 with base [8,5]
    Tensor t = get(got, "transposed");
    REQUIRE(t.shape() == Shape{5, 8});
    CHECK(t.data<float>()[1 * 8 + 2] == Approx((5 * 2 + 1) / 7.0f));
    Tensor e = get(got, "expanded");  // stride 0 over a [2,1] tensor
    CHECK(e.to_vector() == std::vector<double>{1.5, 1.5, 1.5, -2.0, -2.0, -2.0});
}

TEST_CASE("pth: tensors sharing one storage honour offsets and share memory", "[pth]") {
    auto got = load_pth(fixture("shared.pth"));
    require_same(got, expected("shared"));
    Tensor a = get(got, "a"), b = get(got, "b"), c = get(got, "c"), d = get(got, "d");
    CHECK(b.to_vector().front() == 3.0);  // flat[6] = 6 * 0.5
    CHECK(d.to_vector() == std::vector<double>{0, 2.5, 5, 7.5, 10});
    // Contiguous views keep sharing the converted storage, as torch.load's tensors do.
    CHECK(a.same_storage(b));
    CHECK(a.same_storage(c));
    CHECK_FALSE(a.same_storage(d));  // strided: copied
}

TEST_CASE("pth: half, bfloat16, double, integer and bool tensors become float32", "[pth]") {
    auto got = load_pth(fixture("dtypes.pth"));
    require_same(got, expected("dtypes"));
    CHECK(get(got, "num_batches_tracked").shape().empty());
    CHECK(get(got, "num_batches_tracked").item() == 12345);
    CHECK(get(got, "half").to_vector()[2] == 65504.0);
    CHECK(get(got, "int8").to_vector() == std::vector<double>{-128, 127});
    CHECK(get(got, "uint8").to_vector() == std::vector<double>{0, 255});
    CHECK(get(got, "bool").to_vector() == std::vector<double>{1, 0, 1});
    CHECK(get(got, "int32").to_vector() == std::vector<double>{-7, 0, 1 << 20});
}

TEST_CASE("pth: a training checkpoint picks 'model', or 'model_ema' on request", "[pth]") {
    PthContents c = read_pth(fixture("checkpoint.pth"));
    CHECK(c.key == "model");
    CHECK(c.top_keys == std::vector<std::string>{"model", "model_ema", "optimizer", "epoch", "best", "name", "note"});
    require_same(c.tensors, expected("model"));
    require_same(load_pth(fixture("checkpoint.pth"), "model_ema"), expected("model_ema"));
    require_same(load_pth(fixture("ema_only.pth")), expected("model_ema"));  // the only state_dict there

    CHECK_THAT(error_of([] { load_pth(fixture("checkpoint.pth"), "nope"); }),
               Catch::Contains("no top-level entry 'nope'") && Catch::Contains("model_ema, optimizer, epoch"));
    CHECK_THAT(error_of([] { load_pth(fixture("checkpoint.pth"), "epoch"); }),
               Catch::Contains("entry 'epoch' is an int, not a state_dict"));
    CHECK_THAT(error_of([] { load_pth(fixture("checkpoint.pth"), "optimizer"); }),
               Catch::Contains("entry 'state' under 'optimizer' is a dict, not a tensor"));
}

TEST_CASE("pth: a script's checkpoint with argparse options and numpy values loads its model", "[pth]") {
    // Beside "model": args (argparse.Namespace), max_accuracy (numpy.float64), steps (a numpy
    // array). Their globals are kept as inert names, never called, and not read.
    PthContents c = read_pth(fixture("checkpoint_args.pth"));
    CHECK(c.key == "model");
    CHECK(c.top_keys ==
          std::vector<std::string>{"model", "optimizer", "epoch", "args", "max_accuracy", "steps", "scaler"});
    require_same(c.tensors, expected("model"));
    CHECK_THAT(error_of([] { load_pth(fixture("checkpoint_args.pth"), "args"); }),
               Catch::Contains("entry 'args': refusing global 'argparse.Namespace'"));
    // A whole pickled module is an object of a class we would have to run.
    CHECK_THAT(error_of([] { load_pth(fixture("bad_whole_module.pth")); }),
               Catch::Contains("the top level: refusing global 'torch.nn.modules.linear.Linear'") &&
                   Catch::Contains("save its state_dict() instead"));
}

TEST_CASE("pth: a pickled nn.Parameter rebuilds to its data", "[pth]") {
    require_same(load_pth(fixture("parameter.pth")), expected("parameter"));
}

TEST_CASE("pth: malformed and hostile files end in errors naming the problem", "[pth][hardening]") {
    const std::map<std::string, std::string> cases = {
        {"bad_truncated.pth", "no end-of-central-directory record"},
        {"bad_truncated_tail.pth", "no end-of-central-directory record"},
        {"bad_offsets.pth", "a local header is missing, damaged or disagrees with the central directory"},
        {"bad_crc.pth", "CRC mismatch in entry 'model/data/0'"},
        {"bad_numel.pth", "tensor 'w' [10] with strides [1] at offset 0 reaches element 9 but storage '0' has 4"},
        {"bad_offset_beyond.pth", "reaches element 6 but storage '0' has 4 elements"},
        {"bad_storage_size.pth", "storage '0' (4 x float32) needs 16 bytes but entry 'archive/data/0' holds 12"},
        {"bad_missing_storage.pth", "storage '7' has no entry 'archive/data/7'"},
        {"bad_stride0_bomb.pth", "tensor 'w' needs 1099511627776 x 4 bytes as float32"},
        {"bad_stride0_wrap.pth", "tensor 'w' needs 4611686018427387904 x 4 bytes as float32"},
        {"bad_overflow.pth", "sizes/strides that overflow"},
        {"bad_nontensor.pth", "entry 'step' under 'model' is an int, not a tensor"},
        {"bad_toplist.pth", "holds a list at the top level"},
        {"bad_system_p2.pth", "refusing global 'posix.system'"},
        {"bad_system_p4.pth", "refusing global 'posix.system'"},
        {"bad_storage_call.pth", "calling torch.FloatStorage is not supported"},
        {"bad_bigendian.pth", "stores tensors in 'big' byte order"},
        {"bad_opcode.pth", "unknown or unsupported opcode 0xff"},
        {"bad_memo.pth", "memo index 5 was never stored"},
        {"bad_deep_marks.pth", "MARKs nested deeper than 1000"},
        {"bad_deep_lists.pth", "objects nested deeper than 1000"},
        {"bad_underflow.pth", "stack underflow"},
        {"bad_no_stop.pth", "ends without STOP"},
        {"bad_legacy.pth", "PyTorch < 1.6"},
    };
    for (auto& [file, message] : cases) {
        INFO(file);
        CHECK_THAT(error_of([&] { load_pth(fixture(file)); }), Catch::Contains(message));
        // The weights front end reports the same error.
        CHECK_THAT(error_of([&] { load_weights(fixture(file)); }), Catch::Contains(message));
    }
    CHECK_THAT(error_of([] { load_pth(fixture("does_not_exist.pth")); }), Catch::Contains("cannot open"));
}

TEST_CASE("pth: every truncation and many byte flips of a real file fail cleanly", "[pth][hardening]") {
    auto bytes = read_bytes(fixture("model.pth"));
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);  // own buffer: ASan sees overreads
        CHECK_THROWS_AS(read_pth_buffer(cut.data(), cut.size()), Error);
    }
    // Without the CRC check a flip reaches the pickle and the tensor code; whatever it hits
    // must be a clean cnx::Error or a successful load, never another exception or a crash.
    PthOptions no_crc;
    no_crc.verify_crc = false;
    size_t ok = 0, failed = 0;
    for (size_t i = 0; i < bytes.size(); i += 3) {
        for (uint8_t mask : {0x01, 0x80, 0xff}) {
            auto m = bytes;
            m[i] ^= mask;
            try {
                read_pth_buffer(m.data(), m.size(), no_crc);
                ++ok;
            } catch (const Error&) {
                ++failed;
            }
        }
    }
    CHECK(ok > 0);      // flips inside tensor data still load
    CHECK(failed > 0);  // flips in headers and the pickle are caught
    auto bad_crc = read_bytes(fixture("bad_crc.pth"));
    CHECK_NOTHROW(read_pth_buffer(bad_crc.data(), bad_crc.size(), no_crc));
}

TEST_CASE("pth: unpickler opcodes and limits", "[pth][pickle]") {
    using namespace cnx::io::pickle;
    auto run = [](const std::string& bytes, Limits lim = {}) {
        auto up = std::make_shared<Unpickler>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test", lim);
        uint32_t root = up->load();
        return std::make_pair(up, root);
    };
    // [1, -1, -32768, 1.5, 513, True, None, "ab", (1, 2, 3)] via BININT1/BININT/LONG1/BINFLOAT/
    // BININT2/NEWTRUE/NONE/SHORT_BINUNICODE/TUPLE3, memoised with LONG_BINPUT.
    std::string p("\x80\x02]r\x07\x00\x00\x00(K\x01J\xff\xff\xff\xff\x8a\x02\x00\x80G?\xf8\x00\x00\x00\x00\x00\x00"
                  "M\x01\x02\x88N\x8c\x02" "abK\x01K\x02K\x03\x87" "e.",
                  47);
    auto [up, root] = run(p);
    const Object& list = up->obj(root);
    REQUIRE(list.kind == Kind::List);
    REQUIRE(list.items.size() == 9);
    CHECK(up->obj(list.items[0]).i == 1);
    CHECK(up->obj(list.items[1]).i == -1);
    CHECK(up->obj(list.items[2]).i == -32768);
    CHECK(up->obj(list.items[3]).f == 1.5);
    CHECK(up->obj(list.items[4]).i == 513);
    CHECK(up->obj(list.items[5]).kind == Kind::Bool);
    CHECK(up->obj(list.items[6]).kind == Kind::None);
    CHECK(up->obj(list.items[7]).s == "ab");
    CHECK(up->obj(list.items[8]).items.size() == 3);

    // A list that contains itself (through the memo) neither loops nor leaks: objects are indices.
    auto [up2, root2] = run(std::string("\x80\x02]q\x00h\x00" "a.", 9));
    CHECK(up2->obj(root2).items == std::vector<uint32_t>{root2});

    CHECK_THAT(error_of([&] { run(std::string("\x80\x02j\x00\x00\x01\x00.", 8)); }),
               Catch::Contains("memo index 65536 was never stored"));
    CHECK_THAT(error_of([&] { run("\x80\x02X\xff\xff\xff\x7f" "abc."); }), Catch::Contains("truncated"));
    CHECK_THAT(error_of([&] { run("\x80\x02\x8a\x09" "123456789."); }), Catch::Contains("does not fit in 64 bits"));
    CHECK_THAT(error_of([&] { run("\x80\x02" "cbuiltins\neval\n."); }), Catch::Contains("refusing global 'builtins.eval'"));
    CHECK_THAT(error_of([&] { run("\x80\x02" "ctorch\nload\n."); }), Catch::Contains("refusing global 'torch.load'"));
    Limits small;
    small.max_stack = 100;
    CHECK_THAT(error_of([&] { run("\x80\x02" + std::string(200, 'N') + ".", small); }),
               Catch::Contains("stack deeper than 100"));
    CHECK_THAT(error_of([&] { run("\x80\x02" "}K\x01" "a."); }), Catch::Contains("APPEND to a dict"));

    // keep_unknown_globals: the call becomes an inert Opaque named after the global; its
    // arguments, BUILD state and appended items are dropped, and nothing is called.
    using namespace std::string_literals;
    Limits keep;
    keep.keep_unknown_globals = true;
    auto [up3, root3] = run("\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00" "ls\x85R}bK\x01" "a."s, keep);
    CHECK(up3->obj(root3).kind == Kind::Opaque);
    CHECK(up3->obj(root3).s == "posix.system");
    CHECK(up3->obj(root3).items.empty());
    CHECK_THAT(error_of([&] { run("\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00" "ls\x85R."s, {}); }),
               Catch::Contains("refusing global 'posix.system'"));
}

TEST_CASE("pth: zip reader checks every offset", "[pth][zip]") {
    auto bytes = read_bytes(fixture("zip64.pth"));
    ZipReader z(bytes.data(), bytes.size(), "zip64.pth");
    REQUIRE(z.entries().size() == 10);  // data.pkl, 8 storages, version
    const ZipEntry* e = z.find("model/data/0");
    REQUIRE(e);
    CHECK(e->size == 8 * 3 * 4 * 4 * 4);
    CHECK(z.read(*e).size() == e->size);
    CHECK(z.find("model/data/99") == nullptr);
    CHECK_THAT(error_of([&] { z.read("nope"); }), Catch::Contains("no entry named 'nope'"));
    CHECK_FALSE(looks_like_zip(bytes.data(), 3));
    std::string junk(100, 'x');
    CHECK_THAT(error_of([&] { ZipReader(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), "junk"); }),
               Catch::Contains("no end-of-central-directory"));
}

TEST_CASE("pth: official and timm names map both ways", "[pth][names]") {
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"downsample_layers.0.0.weight", "stem.0.weight"},
        {"downsample_layers.0.1.bias", "stem.1.bias"},
        {"downsample_layers.2.0.weight", "stages.2.downsample.0.weight"},
        {"downsample_layers.3.1.bias", "stages.3.downsample.1.bias"},
        {"stages.1.2.dwconv.weight", "stages.1.blocks.2.conv_dw.weight"},
        {"stages.0.0.norm.bias", "stages.0.blocks.0.norm.bias"},
        {"stages.2.26.pwconv1.weight", "stages.2.blocks.26.mlp.fc1.weight"},
        {"stages.3.0.pwconv2.bias", "stages.3.blocks.0.mlp.fc2.bias"},
        {"stages.0.1.gamma", "stages.0.blocks.1.gamma"},
        {"norm.weight", "head.norm.weight"},
        {"head.bias", "head.fc.bias"},
    };
    for (auto& [official, timm] : pairs) {
        INFO(official << " <-> " << timm);
        CHECK(official_to_timm(official) == timm);
        CHECK(timm_to_official(timm) == official);
        CHECK(official_to_timm(timm) == timm);        // already timm: unchanged
        CHECK(timm_to_official(official) == official);  // already official: unchanged
    }
    for (const char* other : {"fc.weight", "stages.x.0.dwconv.weight", "head.extra.weight", "module.norm.weight"}) {
        CHECK(official_to_timm(other) == other);
        CHECK(timm_to_official(other) == other);
    }

    // Every parameter of ConvNeXt-T: distinct timm names, and back to the same official ones.
    auto shapes = models::parameter_shapes(models::model_options("convnext_tiny"));
    std::vector<std::string> official, timm;
    for (auto& [n, s] : shapes) {
        official.push_back(n);
        timm.push_back(official_to_timm(n));
        CHECK(timm_to_official(timm.back()) == n);
    }
    CHECK(detect_name_style(official) == NameStyle::Official);
    CHECK(detect_name_style(timm) == NameStyle::Timm);
    CHECK(std::set<std::string>(timm.begin(), timm.end()).size() == timm.size());
    auto mixed = official;
    mixed.push_back("stem.0.weight");
    CHECK(detect_name_style(mixed) == NameStyle::Mixed);
    CHECK(detect_name_style(std::vector<std::string>{"fc.weight"}) == NameStyle::Unknown);
}

TEST_CASE("pth: timm-named and DDP-prefixed state_dicts load into a model", "[pth][names]") {
    // The file holds timm names; load_weights hands back official ones.
    auto raw = load_pth(fixture("timm.pth"));
    CHECK(detect_name_style(raw) == NameStyle::Timm);
    require_same(load_weights(fixture("timm.pth")), expected("model"));
    LoadedWeights w = read_weights(fixture("timm.pth"));
    CHECK(w.source_names == NameStyle::Timm);
    CHECK(w.format == "pth");

    models::ConvNeXtOptions o;
    o.num_classes = 5;
    auto model = models::create_model("convnext_atto", o);
    auto sd = model->state_dict();
    NamedTensors wrapped;
    for (auto& [n, t] : rename_to(sd, NameStyle::Timm)) wrapped.emplace_back("module." + n, t.clone());
    NamedTensors back = rename_to(strip_module_prefix(wrapped), NameStyle::Official);
    auto fresh = models::create_model("convnext_atto", o);
    CHECK(fresh->load_state_dict(back, /*strict=*/true).ok());
    CHECK(fresh->find("head.weight").to_vector() == model->find("head.weight").to_vector());

    // Names that would collide after renaming are refused.
    NamedTensors clash = {{"head.weight", ones({1})}, {"head.fc.weight", ones({1})}};
    CHECK_THAT(error_of([&] { rename_to(clash, NameStyle::Official); }), Catch::Contains("already has"));
}

TEST_CASE("pth: convnext convert round trip", "[pth][cli]") {
    std::string out = "/tmp/cnx_test_pth_convert.safetensors", timm_out = "/tmp/cnx_test_pth_convert_timm.safetensors",
                back = "/tmp/cnx_test_pth_convert_back.safetensors";
    auto r = run_cli("convert " + fixture("checkpoint.pth") + " " + out);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.out, Catch::Contains("wrote 8 tensors"));
    require_same(load_safetensors(out).tensors, expected("model"));

    r = run_cli("convert " + fixture("checkpoint.pth") + " " + out + " --key model_ema");
    REQUIRE(r.code == 0);
    require_same(load_safetensors(out).tensors, expected("model_ema"));

    r = run_cli("convert " + fixture("model.pth") + " " + timm_out + " --names timm");
    REQUIRE(r.code == 0);
    auto timm = load_safetensors(timm_out).tensors;
    CHECK(detect_name_style(timm) == NameStyle::Timm);
    CHECK(timm.front().first == "stem.0.weight");

    r = run_cli("convert " + timm_out + " " + back);  // safetensors in, official names out
    REQUIRE(r.code == 0);
    require_same(load_safetensors(back).tensors, expected("model"));

    r = run_cli("convert " + fixture("bad_system_p4.pth") + " " + out);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("refusing global 'posix.system'"));
    r = run_cli("convert " + fixture("model.pth") + " " + out + " --names keras");
    CHECK(r.code == 2);
    for (auto& p : {out, timm_out, back}) std::remove(p.c_str());
}
