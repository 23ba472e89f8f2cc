#include "io/key_names.h"

#include <mutex>
#include <unordered_set>

#include "core/error.h"
#include "models/convnext.h"

namespace cnx::io {

namespace {

// The spellings one can rename to, by name, with the style the modules' aliases use for them.
struct StyleRow {
    NameStyle style;
    const char* name;
    const char* alias_style;  // "": no alias applies (a style always names one), the modules' own names
};
const StyleRow kStyles[] = {
    {NameStyle::Official, "official", ""},
    {NameStyle::Timm, "timm", "timm"},
    {NameStyle::Torchvision, "torchvision", "torchvision"},
};
constexpr size_t kNumStyles = sizeof(kStyles) / sizeof(kStyles[0]);

size_t style_index(NameStyle s) {
    for (size_t i = 0; i < kNumStyles; ++i)
        if (kStyles[i].style == s) return i;
    fail("names: '", name_style_name(s), "' is not a style one can rename to");
}

Shape squeezed(const Shape& s) {
    Shape out;
    for (auto d : s)
        if (d != 1) out.push_back(d);
    return out;
}

// `shape`'s sizes laid out like `pattern` (size-1 dimensions where it has them), or `shape`
// itself when the two do not have the same number of other dimensions.
Shape like_pattern(const Shape& shape, const Shape& pattern) {
    const Shape sizes = squeezed(shape);
    if (sizes.size() != squeezed(pattern).size()) return shape;
    Shape out;
    size_t k = 0;
    for (auto d : pattern) out.push_back(d == 1 ? 1 : sizes[k++]);
    return out;
}

}  // namespace

const char* name_style_name(NameStyle s) {
    for (auto& row : kStyles)
        if (row.style == s) return row.name;
    return s == NameStyle::Mixed ? "mixed" : "unknown";
}

std::vector<NameStyle> name_styles() {
    std::vector<NameStyle> out;
    for (auto& row : kStyles) out.push_back(row.style);
    return out;
}

std::vector<std::string> name_style_names() {
    std::vector<std::string> out;
    for (auto& row : kStyles) out.push_back(row.name);
    return out;
}

NameStyle parse_name_style(const std::string& s) {
    std::string known;
    for (auto& row : kStyles) {
        if (s == row.name) return row.style;
        known += (known.empty() ? "'" : ", '") + std::string(row.name) + "'";
    }
    fail("names: unknown naming '", s, "' (expected ", known, ")");
}

void NameMap::add(const nn::Module& model) {
    std::vector<std::vector<nn::StateName>> per_style;
    for (auto& row : kStyles) per_style.push_back(model.state_dict_names(row.alias_style));
    for (size_t i = 0; i < per_style[0].size(); ++i) {
        Entry e;
        for (auto& names : per_style) {
            e.names.push_back(names[i].styled);
            e.shapes.push_back(names[i].styled_shape);
            e.reshaped = e.reshaped || names[i].styled_shape != per_style[0][i].styled_shape;
        }
        bool known = false;
        if (auto it = index_.find(e.names[0]); it != index_.end())
            for (auto& h : it->second) known = known || (h.style == 0 && entries_[h.entry].names == e.names);
        if (known) continue;
        entries_.push_back(std::move(e));
        const Entry& added = entries_.back();
        for (size_t s = 0; s < kNumStyles; ++s) index_[added.names[s]].push_back({entries_.size() - 1, s});
    }
}

std::shared_ptr<const NameMap> NameMap::registered() {
    static std::mutex mu;
    static std::shared_ptr<const NameMap> cached;
    static std::vector<std::string> cached_names;
    std::vector<std::string> names = models::model_names();
    std::lock_guard<std::mutex> lock(mu);
    if (!cached || names != cached_names) {
        auto map = std::make_shared<NameMap>();
        for (auto& n : names) {
            try {
                map->add(*models::build_meta(models::model_options(n)));
            } catch (const Error& e) {
                fail("names: model '", n, "' cannot be built without weights (meta mode) for its name maps: ",
                     e.what());
            }
        }
        cached = map;
        cached_names = names;
    }
    return cached;
}

const NameMap::Hit* NameMap::find(const std::string& name, NameStyle preferred) const {
    auto it = index_.find(name);
    if (it == index_.end()) return nullptr;
    if (preferred != NameStyle::Mixed && preferred != NameStyle::Unknown)
        for (auto& h : it->second)
            if (h.style == style_index(preferred)) return &h;
    return &it->second.front();
}

NameStyle NameMap::detect(const std::vector<std::string>& names) const {
    std::vector<size_t> evidence(kNumStyles, 0);
    for (auto& n : names) {
        auto it = index_.find(n);
        if (it == index_.end()) continue;
        std::vector<bool> in(kNumStyles, false);
        for (auto& h : it->second) in[h.style] = true;
        size_t count = 0, which = 0;
        for (size_t s = 0; s < kNumStyles; ++s)
            if (in[s]) ++count, which = s;
        if (count == 1) ++evidence[which];  // a name several styles share says nothing
    }
    size_t found = 0;
    NameStyle style = NameStyle::Unknown;
    for (size_t s = 0; s < kNumStyles; ++s)
        if (evidence[s]) ++found, style = kStyles[s].style;
    return found > 1 ? NameStyle::Mixed : style;
}

std::string NameMap::rename(const std::string& name, NameStyle to) const {
    const size_t target = style_index(to);
    const Hit* h = find(name, NameStyle::Unknown);
    return h ? entries_[h->entry].names[target] : name;
}

NamedTensors::value_type NameMap::rename_one(const std::string& name, const Tensor& t, NameStyle from,
                                             NameStyle to) const {
    const Hit* h = find(name, from);
    if (!h) return {name, t};
    const Entry& e = entries_[h->entry];
    const size_t target = style_index(to);
    if (!e.reshaped || !t.defined()) return {e.names[target], t};
    Shape shape = like_pattern(t.shape(), e.shapes[target]);
    return {e.names[target], shape == t.shape() ? t : t.detach().reshape(shape)};
}

NamedTensors NameMap::rename(const NamedTensors& tensors, NameStyle to) const {
    style_index(to);  // a style one can rename to
    std::vector<std::string> names;
    names.reserve(tensors.size());
    for (auto& [n, t] : tensors) names.push_back(n);
    const NameStyle from = detect(names);
    NamedTensors out;
    out.reserve(tensors.size());
    std::unordered_set<std::string> seen;
    for (auto& [n, t] : tensors) {
        auto renamed = rename_one(n, t, from, to);
        CNX_CHECK(seen.insert(renamed.first).second, "names: '", n, "' becomes '", renamed.first,
                  "', which another tensor already has");
        out.push_back(std::move(renamed));
    }
    return out;
}

std::string timm_to_official(const std::string& name) {
    return NameMap::registered()->rename(name, NameStyle::Official);
}

std::string official_to_timm(const std::string& name) { return NameMap::registered()->rename(name, NameStyle::Timm); }

NameStyle detect_name_style(const std::vector<std::string>& names) { return NameMap::registered()->detect(names); }

NameStyle detect_name_style(const NamedTensors& tensors) {
    std::vector<std::string> names;
    names.reserve(tensors.size());
    for (auto& [n, t] : tensors) names.push_back(n);
    return detect_name_style(names);
}

NamedTensors rename_to(const NamedTensors& tensors, NameStyle to_style) {
    return NameMap::registered()->rename(tensors, to_style);
}

NamedTensors strip_module_prefix(const NamedTensors& tensors) {
    const std::string pre = "module.";
    if (tensors.empty()) return tensors;
    for (auto& [n, t] : tensors)
        if (n.compare(0, pre.size(), pre) != 0 || n.size() == pre.size()) return tensors;
    NamedTensors out;
    out.reserve(tensors.size());
    for (auto& [n, t] : tensors) out.emplace_back(n.substr(pre.size()), t);
    return out;
}

}  // namespace cnx::io
