// convnext convert IN OUT [--names official|timm|torchvision] [--key KEY] [--dtype float32|bf16]: a PyTorch
// checkpoint (.pth) or a safetensors file in, a float32 (or half-size bfloat16, for inference) safetensors
// file out, parameter names in the chosen spelling. Every command that reads weights reads a bf16
// file too, widening it to float32 as it loads.
#include <cstdio>
#include <memory>
#include <string>

#include "apps/command.h"
#include "io/model_metadata.h"
#include "io/safetensors.h"
#include "io/weights.h"

namespace {

struct ConvertOptions {
    std::string in, out, names = "official", key, dtype = "float32";
};

int run_convert(const ConvertOptions& o) {
    using namespace cnx::io;
    NameStyle target = parse_name_style(o.names);
    WeightsOptions wo;
    wo.key = o.key;
    LoadedWeights w = read_weights(o.in, wo);
    CNX_CHECK(!w.tensors.empty(), "convert: '", o.in, "' holds no tensors");
    NamedTensors tensors = rename_to(w.tensors, target);
    const bool bf16 = o.dtype == "bf16" || o.dtype == "bfloat16";
    const cnx::DType want = bf16 ? cnx::DType::BF16 : cnx::DType::F32;
    int64_t values = 0;
    for (auto& [name, t] : tensors) {
        if (t.dtype() != want) t = t.to(want);  // to bfloat16: rounded to nearest even
        values += t.numel();
    }
    Metadata meta{{"format", "pt"}, {"names", o.names}};
    // A file written by convnext train keeps what it says about its model, so predict, eval and
    // gradcam need no more flags for the converted file than for the original.
    if (w.format == "safetensors")
        for (auto& [k, v] : to_metadata(read_model_metadata(o.in))) meta.emplace(k, v);
    if (bf16) meta["dtype"] = "bfloat16";
    save_safetensors(o.out, tensors, meta);

    std::string from = w.format;
    if (!w.key.empty()) from += ", entry '" + w.key + "'";
    else if (w.format == "pth") from += ", bare state_dict";
    std::printf("read %zu tensors from %s (%s; %s names)\n", w.tensors.size(), o.in.c_str(), from.c_str(),
                name_style_name(w.source_names));
    if (w.fcmae)
        std::printf("an FCMAE pre-training checkpoint: wrote its encoder (dense names and shapes) and dropped %zu "
                    "decoder tensors; fine-tune it with `convnext train --weights`\n", w.dropped.size());
    std::printf("wrote %zu tensors (%lld %s values, %s names) to %s\n", tensors.size(), (long long)values,
                bf16 ? "bfloat16" : "float32", o.names.c_str(), o.out.c_str());
    return 0;
}

std::function<int()> setup_convert(CLI::App& root) {
    auto* cmd = root.add_subcommand("convert",
                                    "Convert a .pth checkpoint or safetensors file to float32 (or bf16) safetensors");
    auto o = std::make_shared<ConvertOptions>();
    cmd->add_option("input", o->in, "Input weights (.pth/.pt from torch.save, or .safetensors)")->required();
    cmd->add_option("output", o->out, "Output .safetensors file")->required();
    std::string styles;
    for (auto& s : cnx::io::name_style_names()) styles += (styles.empty() ? "" : ", ") + s;
    cmd->add_option("--names", o->names, "Parameter names to write: " + styles)
        ->check(CLI::IsMember(cnx::io::name_style_names()))
        ->capture_default_str();
    cmd->add_option("--key", o->key, "Top-level entry of a .pth checkpoint (default: model, state_dict, model_ema)");
    cmd->add_option("--dtype", o->dtype,
                    "float32, or bf16: half-size weights for inference (rounded to nearest even; widened to float32 "
                    "wherever weights are loaded)")
        ->check(CLI::IsMember({"float32", "fp32", "bf16", "bfloat16"}))
        ->capture_default_str();
    return [o]() { return run_convert(*o); };
}

}  // namespace

CONVNEXT_COMMAND(convert, setup_convert)
