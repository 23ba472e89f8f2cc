#pragma once
// ConvNeXt parameter names in the two spellings found in the wild: the official repository's
// (facebookresearch/ConvNeXt, which this project uses) and timm's. The tensors and their shapes
// are identical; only the paths differ:
//
//   official                                  timm
//   downsample_layers.0.{0,1}.*               stem.{0,1}.*
//   downsample_layers.i.{0,1}.*  (i >= 1)     stages.i.downsample.{0,1}.*
//   stages.i.j.dwconv.*                       stages.i.blocks.j.conv_dw.*
//   stages.i.j.norm.*                         stages.i.blocks.j.norm.*
//   stages.i.j.pwconv1.* / pwconv2.*          stages.i.blocks.j.mlp.fc1.* / mlp.fc2.*
//   stages.i.j.gamma                          stages.i.blocks.j.gamma
//   norm.{weight,bias}                        head.norm.{weight,bias}
//   head.{weight,bias}                        head.fc.{weight,bias}
//
// Each mapping leaves names it does not recognise unchanged, and is the identity on names
// already in its target spelling, so both directions are safe to apply to any state_dict.
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace cnx::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

enum class NameStyle { Official, Timm, Mixed, Unknown };
const char* name_style_name(NameStyle s);      // "official", "timm", "mixed", "unknown"
NameStyle parse_name_style(const std::string& s);  // "official" | "timm", else throws

std::string timm_to_official(const std::string& name);
std::string official_to_timm(const std::string& name);

// Which spelling a set of names uses: Mixed when both appear, Unknown when neither does.
NameStyle detect_name_style(const std::vector<std::string>& names);
NameStyle detect_name_style(const NamedTensors& tensors);

// Renames every tensor (throws if two names collide). to_style: Official or Timm.
NamedTensors rename_to(const NamedTensors& tensors, NameStyle to_style);

// Drops a "module." prefix (DistributedDataParallel's wrapper) when every name carries it.
NamedTensors strip_module_prefix(const NamedTensors& tensors);

}  // namespace cnx::io
