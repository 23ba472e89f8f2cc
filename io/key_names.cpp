#include "io/key_names.h"

#include <unordered_set>

#include "core/error.h"

namespace cnx::io {

namespace {

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
        size_t dot = s.find('.', start);
        parts.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) return parts;
        start = dot + 1;
    }
}

std::string join(const std::vector<std::string>& parts, size_t from) {
    std::string s;
    for (size_t i = from; i < parts.size(); ++i) s += (i > from ? "." : "") + parts[i];
    return s;
}

bool is_index(const std::string& s) {
    if (s.empty() || s.size() > 9) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

bool is_weight_or_bias(const std::vector<std::string>& p, size_t i) {
    return p.size() == i + 1 && (p[i] == "weight" || p[i] == "bias");
}

// Block sub-module names, official <-> timm.
const std::pair<const char*, const char*> kBlockNames[] = {
    {"dwconv", "conv_dw"}, {"norm", "norm"}, {"pwconv1", "mlp.fc1"}, {"pwconv2", "mlp.fc2"}, {"gamma", "gamma"}};

}  // namespace

const char* name_style_name(NameStyle s) {
    switch (s) {
        case NameStyle::Official: return "official";
        case NameStyle::Timm: return "timm";
        case NameStyle::Mixed: return "mixed";
        default: return "unknown";
    }
}

NameStyle parse_name_style(const std::string& s) {
    if (s == "official") return NameStyle::Official;
    if (s == "timm") return NameStyle::Timm;
    fail("names: unknown naming '", s, "' (expected 'official' or 'timm')");
}

std::string timm_to_official(const std::string& name) {
    auto p = split(name);
    if (p.size() >= 3 && p[0] == "stem" && (p[1] == "0" || p[1] == "1"))
        return "downsample_layers.0." + join(p, 1);
    if (p.size() >= 5 && p[0] == "stages" && is_index(p[1]) && p[2] == "downsample" && (p[3] == "0" || p[3] == "1"))
        return "downsample_layers." + p[1] + "." + join(p, 3);
    if (p.size() >= 5 && p[0] == "stages" && is_index(p[1]) && p[2] == "blocks" && is_index(p[3])) {
        std::string rest = join(p, 4);
        for (auto& [official, timm] : kBlockNames) {
            std::string t = timm;
            if (rest == t || rest.compare(0, t.size() + 1, t + ".") == 0)
                return "stages." + p[1] + "." + p[3] + "." + official + rest.substr(t.size());
        }
        return name;
    }
    if (p.size() >= 3 && p[0] == "head" && p[1] == "norm" && is_weight_or_bias(p, 2)) return "norm." + p[2];
    if (p.size() >= 3 && p[0] == "head" && p[1] == "fc" && is_weight_or_bias(p, 2)) return "head." + p[2];
    return name;
}

std::string official_to_timm(const std::string& name) {
    auto p = split(name);
    if (p.size() >= 4 && p[0] == "downsample_layers" && is_index(p[1]) && (p[2] == "0" || p[2] == "1")) {
        if (p[1] == "0") return "stem." + join(p, 2);
        return "stages." + p[1] + ".downsample." + join(p, 2);
    }
    if (p.size() >= 4 && p[0] == "stages" && is_index(p[1]) && is_index(p[2])) {
        std::string rest = join(p, 3);
        for (auto& [official, timm] : kBlockNames) {
            std::string o = official;
            if (rest == o || rest.compare(0, o.size() + 1, o + ".") == 0)
                return "stages." + p[1] + ".blocks." + p[2] + "." + timm + rest.substr(o.size());
        }
        return name;
    }
    if (p.size() == 2 && p[0] == "norm" && is_weight_or_bias(p, 1)) return "head.norm." + p[1];
    if (p.size() == 2 && p[0] == "head" && is_weight_or_bias(p, 1)) return "head.fc." + p[1];
    return name;
}

NameStyle detect_name_style(const std::vector<std::string>& names) {
    size_t official = 0, timm = 0;
    for (auto& n : names) {
        // A name is characteristic of a spelling when mapping it away from that spelling changes it.
        if (timm_to_official(n) != n) ++timm;
        else if (official_to_timm(n) != n) ++official;
    }
    if (official && timm) return NameStyle::Mixed;
    if (timm) return NameStyle::Timm;
    if (official) return NameStyle::Official;
    return NameStyle::Unknown;
}

NameStyle detect_name_style(const NamedTensors& tensors) {
    std::vector<std::string> names;
    names.reserve(tensors.size());
    for (auto& [n, t] : tensors) names.push_back(n);
    return detect_name_style(names);
}

NamedTensors rename_to(const NamedTensors& tensors, NameStyle to_style) {
    CNX_CHECK(to_style == NameStyle::Official || to_style == NameStyle::Timm, "names: can only rename to official or timm");
    NamedTensors out;
    out.reserve(tensors.size());
    std::unordered_set<std::string> seen;
    for (auto& [n, t] : tensors) {
        std::string m = to_style == NameStyle::Official ? timm_to_official(n) : official_to_timm(n);
        CNX_CHECK(seen.insert(m).second, "names: '", n, "' becomes '", m, "', which another tensor already has");
        out.emplace_back(std::move(m), t);
    }
    return out;
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
