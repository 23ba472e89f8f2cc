#include "train/pretrained.h"

#include <map>

#include "io/weights.h"

namespace cnx::train {

void load_pretrained(nn::Module& model, const std::string& path, bool drop_mismatched_head, std::ostream& log) {
    io::WeightsOptions wo;
    wo.model = &model;  // the model's own name maps
    io::LoadedWeights w = io::read_weights(path, wo);
    NamedTensors own = model.state_dict();
    std::map<std::string, Shape> own_shapes;
    for (auto& [name, t] : own) own_shapes[name] = t.shape();
    NamedTensors keep;
    std::vector<std::string> dropped;
    for (auto& [name, t] : w.tensors) {
        auto it = own_shapes.find(name);
        bool is_head = name.rfind("head.", 0) == 0;
        if (drop_mismatched_head && is_head && it != own_shapes.end() && it->second != t.shape()) {
            dropped.push_back(name + " " + shape_str(t.shape()) + " (model has " + shape_str(it->second) + ")");
            continue;
        }
        keep.push_back({name, t});
    }
    nn::LoadReport rep = model.load_state_dict(keep, false);
    int64_t loaded = (int64_t)keep.size() - (int64_t)rep.unexpected.size() - (int64_t)rep.mismatched.size();
    CNX_CHECK(loaded > 0, "weights '", path, "': none of its ", w.tensors.size(),
              " tensors matches the model's parameter names (is it a ConvNeXt checkpoint?)");
    CNX_CHECK(rep.mismatched.empty(), "weights '", path, "' do not fit the model:\n", rep.str());
    log << "loaded " << loaded << "/" << own.size() << " tensors from " << path << " (" << w.format
        << (w.key.empty() ? "" : ", entry '" + w.key + "'") << ", " << io::name_style_name(w.source_names)
        << " names)\n";
    if (w.fcmae)
        log << "  an FCMAE pre-training checkpoint: its encoder remapped to the dense model, " << w.dropped.size()
            << " decoder tensors dropped; norm and head start from their initialisation\n";
    for (auto& d : dropped) log << "  dropped (class count differs): " << d << "\n";
    for (auto& m : rep.missing) log << "  missing (kept at init): " << m << "\n";
    for (auto& u : rep.unexpected) log << "  unexpected (ignored): " << u << "\n";
}

}  // namespace cnx::train
