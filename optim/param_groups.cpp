#include "optim/param_groups.h"

#include <cctype>
#include <cmath>
#include <map>

namespace cnx::optim {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> split_dots(const std::string& s) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t dot; (dot = s.find('.', start)) != std::string::npos; start = dot + 1)
        parts.push_back(s.substr(start, dot - start));
    parts.push_back(s.substr(start));
    return parts;
}

// A stage or block number: 1 to 6 decimal digits.
int read_index(const std::string& part, const std::string& name) {
    bool digits = !part.empty() && part.size() <= 6;
    for (char c : part) digits = digits && std::isdigit((unsigned char)c);
    CNX_CHECK(digits, "convnext_layer_id: cannot read a stage/block number '", part, "' in '", name, "'");
    return std::stoi(part);
}

}  // namespace

int convnext_downsample_layer_id(int stage, int num_layers) {
    if (stage == 0) return 0;
    if (stage == 1 || stage == 2) return stage + 1;
    if (stage == 3) return num_layers;
    fail("convnext_layer_id: downsample stage ", stage, " out of range (0..3)");
}

int convnext_block_layer_id(int stage, int block, int num_layers) {
    CNX_CHECK(block >= 0, "convnext_layer_id: negative block number ", block);
    if (stage == 0 || stage == 1) return stage + 1;
    if (stage == 2) return 3 + block / 3;
    if (stage == 3) return num_layers;
    fail("convnext_layer_id: stage ", stage, " out of range (0..3)");
}

int convnext_layer_id(const std::string& name, int num_layers) {
    const auto p = split_dots(name);
    if (p[0] == "downsample_layers") {
        CNX_CHECK(p.size() >= 2, "convnext_layer_id: no stage number in '", name, "'");
        return convnext_downsample_layer_id(read_index(p[1], name), num_layers);
    }
    if (p[0] == "stages") {
        CNX_CHECK(p.size() >= 3, "convnext_layer_id: no block number in '", name, "'");
        return convnext_block_layer_id(read_index(p[1], name), read_index(p[2], name), num_layers);
    }
    return convnext_head_layer_id(num_layers);
}

std::vector<ParamGroup> get_params_groups(const NamedTensors& named_params, const ParamGroupOptions& o) {
    CNX_CHECK(o.weight_decay >= 0, "get_params_groups: invalid weight_decay ", o.weight_decay);
    CNX_CHECK(o.layer_decay > 0, "get_params_groups: invalid layer_decay ", o.layer_decay);
    const bool layered = o.layer_decay != 1.0;
    std::vector<ParamGroup> groups;
    std::map<std::string, size_t> index;
    auto group_for = [&](const std::string& gname, double wd, double scale) -> ParamGroup& {
        auto it = index.find(gname);
        if (it != index.end()) return groups[it->second];
        ParamGroup g;
        g.name = gname;
        g.weight_decay = wd;
        g.lr_scale = scale;
        index[gname] = groups.size();
        groups.push_back(std::move(g));
        return groups.back();
    };
    if (!layered) {
        group_for("decay", o.weight_decay, 1.0);
        group_for("no_decay", 0.0, 1.0);
    }
    for (const auto& kv : named_params) {
        const std::string& name = kv.first;
        const Tensor& p = kv.second;
        CNX_CHECK(p.defined(), "get_params_groups: parameter '", name, "' is undefined");
        if (!p.requires_grad()) continue;  // frozen
        const bool no_decay = p.dim() == 1 || ends_with(name, ".bias") || o.skip_list.count(name) ||
                              p.impl()->param.no_weight_decay;
        std::string gname = no_decay ? "no_decay" : "decay";
        double scale = 1.0;
        if (layered) {
            const int own = p.impl()->param.layer_id;
            const int layer = own >= 0 ? own : convnext_layer_id(name, o.num_layers);
            gname = "layer_" + std::to_string(layer) + "_" + gname;
            scale = std::pow(o.layer_decay, (double)(o.num_layers + 1 - layer));
        }
        ParamGroup& g = group_for(gname, no_decay ? 0.0 : o.weight_decay, scale);
        g.params.push_back(p);
        g.names.push_back(name);
    }
    return groups;
}

std::vector<ParamGroup> get_params_groups(const NamedTensors& named_params, double weight_decay, double layer_decay) {
    ParamGroupOptions o;
    o.weight_decay = weight_decay;
    o.layer_decay = layer_decay;
    return get_params_groups(named_params, o);
}

}  // namespace cnx::optim
