#pragma once
// Parameter names in the spellings found in the wild: the official repository's
// (facebookresearch/ConvNeXt, which this project's modules use), timm's and torchvision's. The
// maps are not written here: they come from the module tree, where each module declares the name
// it has in each style (nn::Alias, see models/convnext.cpp), so a model (or a family) added to the
// registry brings its own names. For ConvNeXt V1:
//
//   official                                  timm                                    torchvision
//   downsample_layers.0.{0,1}.*               stem.{0,1}.*                            features.0.{0,1}.*
//   downsample_layers.i.{0,1}.*  (i >= 1)     stages.i.downsample.{0,1}.*             features.<2i>.{0,1}.*
//   stages.i.j.dwconv.*                       stages.i.blocks.j.conv_dw.*             features.<2i+1>.j.block.0.*
//   stages.i.j.norm.*                         stages.i.blocks.j.norm.*                features.<2i+1>.j.block.2.*
//   stages.i.j.pwconv1.* / pwconv2.*          stages.i.blocks.j.mlp.fc1.* / fc2.*     ....block.3.* / block.5.*
//   stages.i.j.gamma [C]                      stages.i.blocks.j.gamma                 features.<2i+1>.j.layer_scale [C,1,1]
//   norm.{weight,bias}                        head.norm.{weight,bias}                 classifier.0.*
//   head.{weight,bias}                        head.fc.{weight,bias}                   classifier.2.*
//
// A new style is a NameStyle value with its row in key_names.cpp's table plus the aliases the
// modules declare for it; nothing else here changes.
//
// Renaming leaves names it does not recognise unchanged and is the identity on names already in
// the target spelling, so it is safe to apply to any state_dict. Without a model at hand the
// functions use every registered model's names (each built without weights, once).
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace cnx::io {

using cnx::NamedTensors;  // declared once, in core/tensor.h

enum class NameStyle { Official, Timm, Torchvision, Mixed, Unknown };
const char* name_style_name(NameStyle s);          // "official", "timm", "torchvision", "mixed", "unknown"
NameStyle parse_name_style(const std::string& s);  // a style's name, else throws
std::vector<NameStyle> name_styles();              // the spellings one can rename to, Official first
std::vector<std::string> name_style_names();       // their names

// Every state_dict entry of one or more models under each style.
class NameMap {
public:
    NameMap() = default;
    explicit NameMap(const nn::Module& model) { add(model); }
    // Adds a model's entries (names already known are kept as they are).
    void add(const nn::Module& model);
    // The names of every registered model; rebuilt when the registry has grown.
    static std::shared_ptr<const NameMap> registered();

    // Which spelling a set of names uses: a name counts for a style when that style alone has
    // it; Mixed when names count for several styles, Unknown when none counts.
    NameStyle detect(const std::vector<std::string>& names) const;
    // The name in `to`'s spelling, or unchanged when the map does not know it.
    std::string rename(const std::string& name, NameStyle to) const;
    // Renames every tensor (throws if two names collide). A tensor whose stored shape differs
    // between the styles by dimensions of size 1 ([C] and [C,1,1]) is reshaped to `to`'s.
    NamedTensors rename(const NamedTensors& tensors, NameStyle to) const;
    size_t size() const { return entries_.size(); }

private:
    struct Entry {
        std::vector<std::string> names;  // per style, in name_styles() order
        std::vector<Shape> shapes;       // per style: the declaring model's stored shape
        bool reshaped = false;           // the styles store different shapes
    };
    struct Hit {
        size_t entry;
        size_t style;
    };
    const Hit* find(const std::string& name, NameStyle preferred) const;
    NamedTensors::value_type rename_one(const std::string& name, const Tensor& t, NameStyle from, NameStyle to) const;

    std::vector<Entry> entries_;
    std::unordered_map<std::string, std::vector<Hit>> index_;
};

// The same over every registered model's names (NameMap::registered()).
std::string timm_to_official(const std::string& name);
std::string official_to_timm(const std::string& name);
NameStyle detect_name_style(const std::vector<std::string>& names);
NameStyle detect_name_style(const NamedTensors& tensors);
// Renames every tensor (throws if two names collide). to_style: a style of name_styles().
NamedTensors rename_to(const NamedTensors& tensors, NameStyle to_style);

// Drops a "module." prefix (DistributedDataParallel's wrapper) when every name carries it.
NamedTensors strip_module_prefix(const NamedTensors& tensors);

}  // namespace cnx::io
