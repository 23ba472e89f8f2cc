#include "models/registry.h"

#include <mutex>

// CNX_FAMILY(<family>) for every CNX_MODEL_FAMILY in models/*.cpp, in file-name order (generated
// by CMake into the build tree).
#define CNX_FAMILY(family) \
    namespace cnx::models::families { void family(::cnx::models::ModelRegistry& registry); }
#include "convnext_model_families.inc"
#undef CNX_FAMILY

namespace cnx::models {
namespace {

struct Global {
    std::mutex mu;
    ModelRegistry registry;
};

Global& global() {
    static Global* g = [] {
        auto* r = new Global();  // never destroyed: models may be built during static destruction
#define CNX_FAMILY(family) families::family(r->registry);
#include "convnext_model_families.inc"
#undef CNX_FAMILY
        return r;
    }();
    return *g;
}

std::string name_list(const std::vector<std::string>& names) {
    std::string out;
    for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
}

}  // namespace

void ModelRegistry::add(const std::string& name, ModelVariant variant) {
    CNX_CHECK(!name.empty(), "model registry: empty model name");
    CNX_CHECK(find(name) == nullptr, "model registry: '", name, "' is already registered");
    CNX_CHECK(variant.depths.size() == 4 && variant.dims.size() == 4, "model registry: '", name,
              "' needs 4 depths and 4 dims, got ", shape_str(variant.depths), " and ", shape_str(variant.dims));
    entries_.emplace_back(name, std::move(variant));
}

void ModelRegistry::add_sizes(const std::string& prefix, const std::vector<std::string>& sizes,
                              BlockFactory block) {
    struct Size {
        const char* name;
        std::vector<int64_t> depths, dims;
    };
    static const Size kSizes[] = {
        {"atto", {2, 2, 6, 2}, {40, 80, 160, 320}},       {"femto", {2, 2, 6, 2}, {48, 96, 192, 384}},
        {"pico", {2, 2, 6, 2}, {64, 128, 256, 512}},      {"nano", {2, 2, 8, 2}, {80, 160, 320, 640}},
        {"tiny", {3, 3, 9, 3}, {96, 192, 384, 768}},      {"small", {3, 3, 27, 3}, {96, 192, 384, 768}},
        {"base", {3, 3, 27, 3}, {128, 256, 512, 1024}},   {"large", {3, 3, 27, 3}, {192, 384, 768, 1536}},
        {"xlarge", {3, 3, 27, 3}, {256, 512, 1024, 2048}}, {"huge", {3, 3, 27, 3}, {352, 704, 1408, 2816}},
    };
    for (const auto& size : sizes) {
        const Size* found = nullptr;
        for (const auto& s : kSizes)
            if (size == s.name) found = &s;
        CNX_CHECK(found, "model registry: no size '", size, "' (atto, femto, pico, nano, tiny, small, base, large, "
                  "xlarge, huge)");
        add(prefix + size, {found->depths, found->dims, block});
    }
}

const ModelVariant* ModelRegistry::find(const std::string& name) const {
    for (auto& [n, v] : entries_)
        if (n == name) return &v;
    return nullptr;
}

std::vector<std::string> ModelRegistry::names() const {
    std::vector<std::string> out;
    for (auto& [n, v] : entries_) out.push_back(n);
    return out;
}

void register_model(const std::string& name, ModelVariant variant) {
    Global& g = global();
    std::lock_guard<std::mutex> lock(g.mu);
    g.registry.add(name, std::move(variant));
}

std::vector<std::string> model_names() {
    Global& g = global();
    std::lock_guard<std::mutex> lock(g.mu);
    return g.registry.names();
}

bool has_model(const std::string& name) {
    Global& g = global();
    std::lock_guard<std::mutex> lock(g.mu);
    return g.registry.find(name) != nullptr;
}

ConvNeXtOptions model_options(const std::string& name, ConvNeXtOptions base) {
    Global& g = global();
    std::lock_guard<std::mutex> lock(g.mu);
    const ModelVariant* v = g.registry.find(name);
    if (!v) fail("unknown model '", name, "'; valid names: ", name_list(g.registry.names()));
    base.depths = v->depths;
    base.dims = v->dims;
    base.block = v->block;
    return base;
}

std::shared_ptr<ConvNeXt> create_model(const std::string& name, const ConvNeXtOptions& options, Generator* gen) {
    return std::make_shared<ConvNeXt>(model_options(name, options), gen);
}

}  // namespace cnx::models
