#include "io/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "io/atomic_file.h"
#include "core/json.h"

namespace cnx::io {
namespace {

using json = nlohmann::json;

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE floats expected");

bool host_is_little_endian() {
    uint16_t one = 1;
    unsigned char b;
    std::memcpy(&b, &one, 1);
    return b == 1;
}

// ---- dtypes as named in the format ----

enum class FileType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

struct TypeInfo {
    const char* name;
    FileType type;
    size_t size;
};

const TypeInfo kTypes[] = {
    {"F64", FileType::F64, 8},   {"F32", FileType::F32, 4},         {"F16", FileType::F16, 2},
    {"BF16", FileType::BF16, 2}, {"F8_E4M3", FileType::F8_E4M3, 1}, {"F8_E5M2", FileType::F8_E5M2, 1},
    {"I64", FileType::I64, 8},   {"I32", FileType::I32, 4},         {"I16", FileType::I16, 2},
    {"I8", FileType::I8, 1},     {"U64", FileType::U64, 8},         {"U32", FileType::U32, 4},
    {"U16", FileType::U16, 2},   {"U8", FileType::U8, 1},           {"BOOL", FileType::BOOL, 1},
};

const TypeInfo* find_type(const std::string& name) {
    for (auto& t : kTypes)
        if (name == t.name) return &t;
    return nullptr;
}

float bf16_bits_to_float(uint16_t b) { return bf16_to_float(BFloat16{b}); }

// float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN.
float f8e4m3_to_float(uint8_t b) {
    uint32_t exp = (b >> 3) & 0xf, mant = b & 0x7;
    float v;
    if (exp == 15 && mant == 7)
        v = std::numeric_limits<float>::quiet_NaN();
    else if (exp == 0)
        v = std::ldexp((float)mant, -9);
    else
        v = std::ldexp(1.0f + mant / 8.0f, (int)exp - 7);
    return (b & 0x80) ? -v : v;
}

// float8 e5m2 is the top byte of an IEEE half.
float f8e5m2_to_float(uint8_t b) { return half_bits_to_float((uint16_t)(b << 8)); }

template <class S>
S load_le(const unsigned char* p) {
    S v;
    std::memcpy(&v, p, sizeof(S));  // the data section need not be aligned
    return v;
}

// dst[i] = f(i-th stored value of type S).
template <class S, class Out, class F>
void convert_as(const unsigned char* src, Out* dst, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) dst[i] = (Out)f(load_le<S>(src + sizeof(S) * i));
}

template <class Out>
void convert(const unsigned char* src, FileType type, Out* dst, int64_t n) {
    auto same = [](auto v) { return v; };
    switch (type) {
        case FileType::F64: convert_as<double>(src, dst, n, same); break;
        case FileType::F32: convert_as<float>(src, dst, n, same); break;
        case FileType::F16: convert_as<uint16_t>(src, dst, n, half_bits_to_float); break;
        case FileType::BF16: convert_as<uint16_t>(src, dst, n, bf16_bits_to_float); break;
        case FileType::F8_E4M3: convert_as<uint8_t>(src, dst, n, f8e4m3_to_float); break;
        case FileType::F8_E5M2: convert_as<uint8_t>(src, dst, n, f8e5m2_to_float); break;
        case FileType::I64: convert_as<int64_t>(src, dst, n, same); break;
        case FileType::I32: convert_as<int32_t>(src, dst, n, same); break;
        case FileType::I16: convert_as<int16_t>(src, dst, n, same); break;
        case FileType::I8: convert_as<int8_t>(src, dst, n, same); break;
        case FileType::U64: convert_as<uint64_t>(src, dst, n, same); break;
        case FileType::U32: convert_as<uint32_t>(src, dst, n, same); break;
        case FileType::U16: convert_as<uint16_t>(src, dst, n, same); break;
        case FileType::U8: convert_as<uint8_t>(src, dst, n, same); break;
        case FileType::BOOL: convert_as<uint8_t>(src, dst, n, [](uint8_t v) { return v != 0; }); break;
    }
}

// ---- header ----

uint64_t read_u64_le(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// Checks the 8-byte prefix against the total size; returns the header length.
uint64_t check_prefix(const unsigned char* prefix, uint64_t total, const std::string& file) {
    CNX_CHECK(total >= 8, "safetensors ", file, ": ", total, " bytes is too small for a header");
    uint64_t n = read_u64_le(prefix);
    CNX_CHECK(n <= kSafetensorsMaxHeader, "safetensors ", file, ": header size ", n, " exceeds the limit of ",
              kSafetensorsMaxHeader, " bytes");
    CNX_CHECK(n <= total - 8, "safetensors ", file, ": header size ", n, " is larger than the file (", total,
              " bytes)");
    return n;
}

uint64_t get_u64(const json& v, const std::string& file, const std::string& key, const char* what) {
    if (v.is_number_integer() && !v.is_number_unsigned())
        fail("safetensors ", file, ": tensor '", key, "': negative value ", dump_json(v), " in ", what);
    CNX_CHECK(v.is_number_unsigned(), "safetensors ", file, ": tensor '", key, "': ", what,
              " must hold non-negative integers, got ", dump_json(v));
    return v.get<uint64_t>();
}

SafetensorsHeader parse_header(const char* text, uint64_t n, uint64_t data_bytes, const std::string& file) {
    std::set<std::string> seen;
    auto guard = [&](int depth, json::parse_event_t ev, json& parsed) {
        // No valid header nests deeper than entry -> field -> array; a bound keeps hostile input cheap.
        CNX_CHECK(depth <= 6, "safetensors ", file, ": header nests too deeply");
        if (ev == json::parse_event_t::key && depth == 1) {
            std::string k = parsed.get<std::string>();
            CNX_CHECK(seen.insert(k).second, "safetensors ", file, ": key '", k, "' appears twice in the header");
        }
        return true;
    };
    json j;
    try {
        j = json::parse(text, text + n, guard);
    } catch (const json::exception& e) {
        fail("safetensors ", file, ": header is not valid JSON: ", e.what());
    }
    CNX_CHECK(j.is_object(), "safetensors ", file, ": header must be a JSON object, got ", j.type_name());

    SafetensorsHeader h;
    h.data_start = 8 + n;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& key = it.key();
        const json& v = it.value();
        if (key == "__metadata__") {
            CNX_CHECK(v.is_object(), "safetensors ", file, ": __metadata__ must be an object of strings");
            for (auto m = v.begin(); m != v.end(); ++m) {
                CNX_CHECK(m.value().is_string(), "safetensors ", file, ": __metadata__ value for '", m.key(),
                          "' is not a string");
                h.metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        CNX_CHECK(v.is_object(), "safetensors ", file, ": tensor '", key, "': entry must be an object");
        for (const char* field : {"dtype", "shape", "data_offsets"})
            CNX_CHECK(v.contains(field), "safetensors ", file, ": tensor '", key, "': missing '", field, "'");
        SafetensorsEntry e;
        e.name = key;
        CNX_CHECK(v["dtype"].is_string(), "safetensors ", file, ": tensor '", key, "': dtype must be a string");
        e.dtype = v["dtype"].get<std::string>();
        CNX_CHECK(find_type(e.dtype), "safetensors ", file, ": tensor '", key, "': unsupported dtype '", e.dtype, "'");
        const json& shape = v["shape"];
        CNX_CHECK(shape.is_array(), "safetensors ", file, ": tensor '", key, "': shape must be an array");
        for (auto& d : shape) {
            uint64_t x = get_u64(d, file, key, "shape");
            CNX_CHECK(x <= (uint64_t)std::numeric_limits<int64_t>::max(), "safetensors ", file, ": tensor '", key,
                      "': dimension ", x, " overflows");
            e.shape.push_back((int64_t)x);
        }
        const json& off = v["data_offsets"];
        CNX_CHECK(off.is_array() && off.size() == 2, "safetensors ", file, ": tensor '", key,
                  "': data_offsets must be [begin, end]");
        e.begin = get_u64(off[0], file, key, "data_offsets");
        e.end = get_u64(off[1], file, key, "data_offsets");
        h.entries.push_back(std::move(e));
    }

    // Like the reference: in offset order, each tensor starts where the previous ended, its
    // size matches its shape, and the last ends exactly at the end of the file.
    std::stable_sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t pos = 0;
    for (auto& e : h.entries) {
        if (e.begin != pos || e.end < e.begin) {
            const char* why = e.end < e.begin ? "end before they begin"
                              : e.begin < pos ? "overlap the previous tensor"
                                              : "leave a hole after the previous tensor";
            fail("safetensors ", file, ": tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] ", why,
                 " (expected begin ", pos, ")");
        }
        // Element count first, then bytes, each product checked (the reference's order).
        const uint64_t max = (uint64_t)std::numeric_limits<int64_t>::max();
        uint64_t numel = 1;
        for (int64_t d : e.shape) {
            uint64_t ud = (uint64_t)d;
            CNX_CHECK(ud == 0 || numel <= max / ud, "safetensors ", file, ": tensor '", e.name, "': shape ",
                      shape_str(e.shape), " overflows");
            numel *= ud;
        }
        uint64_t size = find_type(e.dtype)->size;
        CNX_CHECK(numel <= max / size, "safetensors ", file, ": tensor '", e.name, "': shape ", shape_str(e.shape),
                  " overflows");
        uint64_t bytes = numel * size;
        CNX_CHECK(e.end - e.begin == bytes, "safetensors ", file, ": tensor '", e.name, "': ", e.end - e.begin,
                  " bytes of data for ", e.dtype, shape_str(e.shape), " (", bytes, " bytes expected)");
        pos = e.end;
    }
    CNX_CHECK(pos == data_bytes, "safetensors ", file, ": tensors cover ", pos, " bytes but the data section has ",
              data_bytes);
    return h;
}

Tensor make_tensor(const SafetensorsEntry& e, DType want, bool keep_f64) {
    DType out = (keep_f64 && e.dtype == "F64") ? DType::F64 : want;
    // An entry that passed validation has numel * size == its byte count, so no overflow here.
    return Tensor::empty(e.shape, out);
}

void fill_tensor(Tensor& t, const SafetensorsEntry& e, const unsigned char* bytes) {
    FileType type = find_type(e.dtype)->type;
    if (t.dtype() == DType::BF16) {  // BF16 bits as they are; anything else through float32, rounded
        BFloat16* dst = t.data<BFloat16>();
        if (type == FileType::BF16) {
            std::memcpy(dst, bytes, t.nbytes());
            return;
        }
        std::vector<float> f(t.numel());
        convert(bytes, type, f.data(), t.numel());
        bf16_from_float(f.data(), dst, t.numel());
        return;
    }
    CNX_DISPATCH(t.dtype(), "safetensors", { convert(bytes, type, t.data<scalar_t>(), t.numel()); });
}

const char* file_dtype_name(DType d) { return d == DType::F32 ? "F32" : d == DType::F64 ? "F64" : "BF16"; }

// Reads exactly n bytes or fails naming the file.
void read_exact(FILE* f, void* dst, size_t n, const std::string& file, const std::string& what) {
    if (n == 0) return;
    CNX_CHECK(std::fread(dst, 1, n, f) == n, "safetensors ", file, ": unexpected end of file reading ", what);
}

struct FileCloser {
    FILE* f;
    ~FileCloser() {
        if (f) std::fclose(f);
    }
};

FILE* open_checked(const std::string& path, uint64_t& size) {
    FILE* f = std::fopen(path.c_str(), "rb");
    CNX_CHECK(f != nullptr, "safetensors ", path, ": cannot open: ", std::strerror(errno));
    if (fseeko(f, 0, SEEK_END) != 0) {
        std::fclose(f);
        fail("safetensors ", path, ": cannot seek: ", std::strerror(errno));
    }
    off_t end = ftello(f);
    std::rewind(f);
    if (end < 0) {
        std::fclose(f);
        fail("safetensors ", path, ": not a regular file");
    }
    size = (uint64_t)end;
    return f;
}

SafetensorsHeader read_header(FILE* f, uint64_t size, const std::string& path) {
    unsigned char prefix[8] = {0};
    if (size >= 8) read_exact(f, prefix, 8, path, "the header size");
    uint64_t n = check_prefix(prefix, size, path);
    std::string text(n, '\0');
    read_exact(f, text.data(), n, path, "the header");
    return parse_header(text.data(), n, size - 8 - n, path);
}

// ---- writing ----

std::string quoted(const std::string& s, const char* what) {
    try {
        return dump_json(json(s));
    } catch (const json::exception&) {
        fail("save_safetensors: ", what, " '", s, "' is not valid UTF-8");
    }
}

std::string build_header(const NamedTensors& tensors, const Metadata& metadata) {
    std::set<std::string> names;
    std::string h = "{";
    bool first = true;
    if (!metadata.empty()) {
        h += "\"__metadata__\":{";
        for (auto& [k, v] : metadata) {
            if (!first) h += ",";
            first = false;
            h += quoted(k, "metadata key") + ":" + quoted(v, "metadata value");
        }
        h += "}";
    }
    uint64_t pos = 0;
    for (auto& [name, t] : tensors) {
        CNX_CHECK(!name.empty(), "save_safetensors: empty tensor name");
        CNX_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved");
        CNX_CHECK(names.insert(name).second, "save_safetensors: tensor '", name, "' appears twice");
        CNX_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
        if (!metadata.empty() || h.size() > 1) h += ",";
        std::string shape = "[";
        for (size_t i = 0; i < t.shape().size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape()[i]);
        shape += "]";
        uint64_t end = pos + t.nbytes();
        h += quoted(name, "tensor name") + ":{\"dtype\":\"" + file_dtype_name(t.dtype()) +
             "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(pos) + "," + std::to_string(end) + "]}";
        pos = end;
    }
    h += "}";
    // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
    while (h.size() % 8) h += ' ';
    return h;
}

template <class Sink>
void write_all(const NamedTensors& tensors, const Metadata& metadata, Sink&& sink) {
    CNX_CHECK(host_is_little_endian(), "save_safetensors: big-endian hosts are not supported");
    std::string header = build_header(tensors, metadata);
    unsigned char prefix[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) prefix[i] = (unsigned char)(n >> (8 * i));
    sink(prefix, 8);
    sink(header.data(), header.size());
    for (auto& [name, t] : tensors) sink(t.raw_data(), t.nbytes());
}

}  // namespace

bool SafetensorsFile::contains(const std::string& name) const {
    for (auto& [n, t] : tensors)
        if (n == name) return true;
    return false;
}

Tensor SafetensorsFile::get(const std::string& name) const {
    for (auto& [n, t] : tensors)
        if (n == name) return t;
    fail("safetensors: no tensor named '", name, "'");
}

SafetensorsFile load_safetensors_from_buffer(const void* data, size_t size, DType want, bool keep_f64,
                                             const std::string& name) {
    CNX_CHECK(host_is_little_endian(), "load_safetensors: big-endian hosts are not supported");
    CNX_CHECK(data != nullptr || size == 0, "safetensors ", name, ": null buffer");
    const unsigned char* bytes = static_cast<const unsigned char*>(data);
    uint64_t n = check_prefix(bytes, size, name);
    SafetensorsHeader h = parse_header(reinterpret_cast<const char*>(bytes) + 8, n, size - 8 - n, name);
    SafetensorsFile out;
    out.metadata = std::move(h.metadata);
    for (auto& e : h.entries) {
        Tensor t = make_tensor(e, want, keep_f64);
        fill_tensor(t, e, bytes + h.data_start + e.begin);
        out.tensors.emplace_back(e.name, t);
    }
    return out;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
    uint64_t size = 0;
    FileCloser fc{open_checked(path, size)};
    return read_header(fc.f, size, path);
}

SafetensorsFile load_safetensors(const std::string& path, DType want, bool keep_f64) {
    CNX_CHECK(host_is_little_endian(), "load_safetensors: big-endian hosts are not supported");
    uint64_t size = 0;
    FileCloser fc{open_checked(path, size)};
    SafetensorsHeader h = read_header(fc.f, size, path);
    SafetensorsFile out;
    out.metadata = std::move(h.metadata);
    // Validated entries are contiguous in offset order: one sequential pass over the data.
    std::vector<unsigned char> scratch;
    for (auto& e : h.entries) {
        Tensor t = make_tensor(e, want, keep_f64);
        size_t bytes = (size_t)(e.end - e.begin);
        const bool same = e.dtype == file_dtype_name(t.dtype());
        if (same) {
            read_exact(fc.f, t.raw_data(), bytes, path, "tensor '" + e.name + "'");
        } else {
            scratch.resize(bytes);
            read_exact(fc.f, scratch.data(), bytes, path, "tensor '" + e.name + "'");
            fill_tensor(t, e, scratch.data());
        }
        out.tensors.emplace_back(e.name, t);
    }
    return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
    AtomicFile f(path);
    write_all(tensors, metadata, [&](const void* p, size_t n) { f.write(p, n); });
    f.commit();
}

std::string save_safetensors_to_buffer(const NamedTensors& tensors, const Metadata& metadata) {
    std::string out;
    write_all(tensors, metadata, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
    return out;
}

}  // namespace cnx::io
