#pragma once
// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N
// bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the tensor bytes, offsets relative to the data start.
//
// Reading validates like the reference implementation: header length bounded (100 MB) and
// inside the file, a JSON object, every entry complete, offsets in order with no overlap or
// hole and ending exactly at the end of the file, byte counts equal to numel x dtype size,
// overflow-checked. Any violation is a cnx::Error naming the file and the key; nothing is read
// out of bounds. F32, F64, F16, BF16, F8 (E4M3, E5M2), integers and BOOL are converted on load.
//
//   io::save_safetensors("model.safetensors", model->state_dict(), {{"arch", "convnext_tiny"}});
//   auto f = io::load_safetensors("model.safetensors");
//   model->load_state_dict(f.tensors);
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace cnx::io {

using cnx::NamedTensors;  // declared once, in core/tensor.h
using Metadata = std::map<std::string, std::string>;

constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

struct SafetensorsFile {
    NamedTensors tensors;  // in data order (for files written here: the order they were saved in)
    Metadata metadata;
    bool contains(const std::string& name) const;
    Tensor get(const std::string& name) const;  // throws naming the key when absent
};

struct SafetensorsEntry {
    std::string name;
    std::string dtype;  // as in the file: "F32", "BF16", ...
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

struct SafetensorsHeader {
    std::vector<SafetensorsEntry> entries;  // sorted by offset
    Metadata metadata;
    uint64_t data_start = 0;  // 8 + header length
};

// want: the dtype every tensor is converted to (to bfloat16: rounded to nearest even; BF16 entries
// keep their bits). keep_f64: F64 tensors stay F64 (the others still become `want`), for files
// that mix exact double state with float weights.
SafetensorsFile load_safetensors(const std::string& path, DType want = DType::F32, bool keep_f64 = false);
SafetensorsFile load_safetensors_from_buffer(const void* data, size_t size, DType want = DType::F32,
                                             bool keep_f64 = false, const std::string& name = "<buffer>");
// Reads and validates only the header (no tensor data is read).
SafetensorsHeader read_safetensors_header(const std::string& path);

// F32 tensors are written as F32, F64 as F64, bfloat16 as BF16, keys in the given order. The file is replaced
// atomically (io/atomic_file.h). Names must be unique, non-empty and not "__metadata__".
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});
std::string save_safetensors_to_buffer(const NamedTensors& tensors, const Metadata& metadata = {});

}  // namespace cnx::io
