#include "io/weights.h"

#include <cstdio>

#include "core/error.h"
#include "io/fcmae.h"
#include "io/pth.h"
#include "io/safetensors.h"

namespace cnx::io {

bool is_pth_file(const std::string& path) {
    unsigned char head[4] = {0, 0, 0, 0};
    FILE* f = std::fopen(path.c_str(), "rb");
    CNX_CHECK(f, "weights: cannot open '", path, "'");
    size_t got = std::fread(head, 1, 4, f);
    std::fclose(f);
    // The first bytes decide rather than the extension (checkpoints get renamed). A bare pickle
    // and anything named like a checkpoint go to the .pth reader, whose errors explain the
    // unsupported pre-1.6 format better than the safetensors parser could.
    bool pickle = got >= 2 && head[0] == 0x80 && head[1] <= 5;
    size_t dot = path.find_last_of("./");
    std::string ext = dot != std::string::npos && path[dot] == '.' ? path.substr(dot) : "";
    bool pth_ext = ext == ".pth" || ext == ".pt" || ext == ".ckpt";
    return is_pth(head, got) || pickle || pth_ext;
}

LoadedWeights read_weights(const std::string& path, const WeightsOptions& options) {
    LoadedWeights out;
    if (is_pth_file(path)) {
        PthOptions po;
        po.key = options.key;
        PthContents c = read_pth(path, po);
        out.format = "pth";
        out.tensors = std::move(c.tensors);
        out.key = c.key;
        out.top_keys = std::move(c.top_keys);
    } else {
        CNX_CHECK(options.key.empty(), "weights: '", path, "' is not a .pth checkpoint; a key applies to .pth files only");
        out.format = "safetensors";
        out.tensors = load_safetensors(path, DType::F32, /*keep_f64=*/true).tensors;
    }
    out.tensors = strip_module_prefix(out.tensors);
    std::vector<std::string> keys;
    for (auto& [n, t] : out.tensors) keys.push_back(n);
    if (options.official_names && is_fcmae_checkpoint(keys)) {
        FcmaeRemap r = remap_fcmae(out.tensors);
        out.tensors = std::move(r.tensors);
        out.dropped = std::move(r.dropped);
        out.fcmae = true;
        keys.clear();
        for (auto& [n, t] : out.tensors) keys.push_back(n);
    }
    std::shared_ptr<const NameMap> names =
        options.model ? std::make_shared<const NameMap>(*options.model) : NameMap::registered();
    out.source_names = names->detect(keys);
    if (options.official_names) out.tensors = names->rename(out.tensors, NameStyle::Official);
    return out;
}

NamedTensors load_weights(const std::string& path, const std::string& key) {
    WeightsOptions o;
    o.key = key;
    return read_weights(path, o).tensors;
}

}  // namespace cnx::io
