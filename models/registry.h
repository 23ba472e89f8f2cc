#pragma once
// The model registry: every name create_model, the CLI's --model and the name maps of io/ know.
// A family (one file, models/<family>.cpp) registers its variants in one place, at file scope:
//
//   CNX_MODEL_FAMILY(convnext_v2) {
//       registry.add_sizes("convnextv2_", {"atto", "femto", ..., "huge"}, make_block_v2);
//       registry.add("my_variant", {{2, 2, 6, 2}, {40, 80, 160, 320}, make_block_v2});
//   }
//
// The registry calls each family once, on first use, in the order of the file names. CMake lists
// the CNX_MODEL_FAMILY lines of models/*.cpp for it (a static initialiser alone would be dropped
// by the linker: nothing references a family's object file in the static library), so adding a
// family is adding its file. A program of its own adds names with register_model().
#include <memory>
#include <string>
#include <vector>

#include "models/convnext.h"

namespace cnx::models {

// What a name stands for: the architecture it fills into the options.
struct ModelVariant {
    std::vector<int64_t> depths, dims;  // four stages
    BlockFactory block;                 // empty: ConvNeXt V1's Block
};

class ModelRegistry {
public:
    // Adds a name; a name already taken is an error.
    void add(const std::string& name, ModelVariant variant);
    // Adds prefix + size for each named size of the shared table (atto ... xlarge, huge: the
    // depths and dims both ConvNeXt papers use), built with `block`. An unknown size is an error.
    void add_sizes(const std::string& prefix, const std::vector<std::string>& sizes, BlockFactory block);
    const ModelVariant* find(const std::string& name) const;
    std::vector<std::string> names() const;  // in registration order

private:
    std::vector<std::pair<std::string, ModelVariant>> entries_;
};

// Adds a name to the process-wide registry (after the families').
void register_model(const std::string& name, ModelVariant variant);

// Every registered name: convnext_atto, _femto, _pico, _nano, _tiny, _small, _base, _large,
// _xlarge, then the other families'.
std::vector<std::string> model_names();
bool has_model(const std::string& name);
// Options of a named variant: depths, dims and block filled in, other fields taken from base.
// Unknown names throw an error listing the valid ones.
ConvNeXtOptions model_options(const std::string& name, ConvNeXtOptions base = {});
// Builds a named variant; depths/dims/block in `options` are replaced by the variant's.
std::shared_ptr<ConvNeXt> create_model(const std::string& name, const ConvNeXtOptions& options = {},
                                       Generator* gen = nullptr);

namespace families {}  // where CNX_MODEL_FAMILY puts each family's registration function

}  // namespace cnx::models

// Defines the registration function of a family, `registry` in scope. Use at file scope, at the
// start of a line (CMake finds it there), with the file's name: models/<family>.cpp.
#define CNX_MODEL_FAMILY(family)                                                        \
    namespace cnx::models::families {                                                   \
    void family(::cnx::models::ModelRegistry& registry);                                \
    }                                                                                   \
    void cnx::models::families::family(::cnx::models::ModelRegistry& registry)
