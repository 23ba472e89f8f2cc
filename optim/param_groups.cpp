#include "optim/param_groups.h"

#include <cctype>
#include <cmath>
#include <map>

namespace cnx::optim {

namespace {
// Reads the decimal number starting at `pos` (which must be followed by '.' or the end).
int read_index(const std::string& name, size_t pos) {
    size_t end = pos;
    while (end < name.size() && std::isdigit((unsigned char)name[end])) ++end;
    CNX_CHECK(end > pos && end - pos <= 6 && (end == name.size() || name[end] == '.'),
              "convnext_layer_id: cannot read a stage/block number at position ", pos, " of '", name, "'");
    return std::stoi(name.substr(pos, end - pos));
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

int convnext_layer_id(const std::string& name, int num_layers) {
    if (starts_with(name, "downsample_layers")) {
        CNX_CHECK(name.size() > 18 && name[17] == '.', "convnext_layer_id: bad parameter name '", name, "'");
        const int stage = read_index(name, 18);
        if (stage == 0) return 0;
        if (stage == 1 || stage == 2) return stage + 1;
        if (stage == 3) return num_layers;
        fail("convnext_layer_id: stage ", stage, " out of range in '", name, "'");
    }
    if (starts_with(name, "stages")) {
        CNX_CHECK(name.size() > 7 && name[6] == '.', "convnext_layer_id: bad parameter name '", name, "'");
        const int stage = read_index(name, 7);
        const size_t block_pos = name.find('.', 7);
        CNX_CHECK(block_pos != std::string::npos, "convnext_layer_id: no block number in '", name, "'");
        const int block = read_index(name, block_pos + 1);
        if (stage == 0 || stage == 1) return stage + 1;
        if (stage == 2) return 3 + block / 3;
        if (stage == 3) return num_layers;
        fail("convnext_layer_id: stage ", stage, " out of range in '", name, "'");
    }
    return num_layers + 1;
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
        const bool no_decay = p.dim() == 1 || ends_with(name, ".bias") || o.skip_list.count(name);
        std::string gname = no_decay ? "no_decay" : "decay";
        double scale = 1.0;
        if (layered) {
            const int layer = convnext_layer_id(name, o.num_layers);
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
