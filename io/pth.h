#pragma once
// PyTorch checkpoint (.pth / .pt) import, without PyTorch and without running pickle.
//
// A file written by torch.save (PyTorch >= 1.6) is a ZIP archive: <prefix>/data.pkl holds the
// pickled object and <prefix>/data/<key> the raw bytes of each storage (<prefix> is "archive" in
// older files and the file's stem in newer ones). data.pkl is read by the restricted unpickler in
// io/unpickler.h; tensors are rebuilt from their storage, offset and strides (non-contiguous
// views copied, contiguous views of one storage sharing it) and converted to float32 — integer
// and bool tensors (e.g. BatchNorm's num_batches_tracked) included, so a state_dict comes back
// complete.
//
// The top level may be a bare state_dict or a checkpoint dict holding one under "model",
// "state_dict" or "model_ema" (preferred in that order; other entries such as "optimizer" or
// "epoch" are ignored). Pass `key` to pick one explicitly, e.g. "model_ema".
//
//   auto sd = io::load_pth("convnext_tiny_1k_224_ema.pth");          // [(name, float32 tensor)]
//   auto ema = io::load_pth("checkpoint.pth", "model_ema");
//
// Untrusted files are safe to open: every zip offset, pickle read, memo index, tensor extent and
// size is checked, unknown globals are refused by name, and the bytes produced are bounded.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/unpickler.h"

namespace cnx::io {

using cnx::NamedTensors;  // declared once, in core/tensor.h

struct PthOptions {
    std::string key;          // "" = auto: model, state_dict, model_ema, else the whole dict
    bool verify_crc = true;   // check each zip entry's CRC-32
    // Upper bound on float32 bytes produced; 0 = 4 x file size + 64 MiB, enough for any
    // float16/int8 file yet a stop for stride-0 views that would expand a few bytes to gigabytes.
    uint64_t max_output_bytes = 0;
    pickle::Limits limits;
};

struct PthContents {
    NamedTensors tensors;               // in the order the state_dict lists them
    std::string prefix;                 // archive prefix ("archive", the file stem, ...)
    std::string key;                    // top-level key the tensors came from; "" for a bare state_dict
    std::vector<std::string> top_keys;  // string keys of the top-level dict
};

PthContents read_pth(const std::string& path, const PthOptions& options = {});
PthContents read_pth_buffer(const uint8_t* data, size_t size, const PthOptions& options = {},
                            const std::string& what = "<buffer>");
NamedTensors load_pth(const std::string& path, const std::string& key = "");

// True when the bytes look like a torch.save zip archive (checks the signature only).
bool is_pth(const uint8_t* data, size_t size);

}  // namespace cnx::io
