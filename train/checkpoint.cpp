#include "train/checkpoint.h"

#include <array>
#include <fstream>

#include "core/json.h"
#include "io/atomic_file.h"
#include "io/curves.h"

namespace cnx::train {
using json = nlohmann::json;

void save_training_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                              const optim::LambdaLR& sched, const optim::ModelEMA* ema, const RunState& st) {
    NamedTensors tensors;
    for (auto& [n, t] : model.state_dict()) tensors.push_back({"model." + n, t});
    optim::OptimizerState os = opt.state_dict();
    tensors.insert(tensors.end(), os.tensors.begin(), os.tensors.end());
    io::Metadata meta = os.scalars;
    sched.save(meta);
    if (ema) {
        optim::OptimizerState es = ema->state_dict();
        tensors.insert(tensors.end(), es.tensors.begin(), es.tensors.end());
        meta.insert(es.scalars.begin(), es.scalars.end());
    }
    write_run_state(st, meta);
    try {
        io::save_safetensors(path, tensors, meta);
    } catch (const Error& e) {
        fail("cannot save the checkpoint (the previous one is intact): ", e.what());
    }
}

RunState load_training_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                                  optim::LambdaLR& sched, optim::ModelEMA* ema) {
    io::SafetensorsFile ck = io::load_safetensors(path);
    RunState st = read_run_state(ck.metadata, path);  // first: names a file that is no checkpoint
    NamedTensors weights;
    for (auto& [n, t] : ck.tensors)
        if (n.rfind("model.", 0) == 0) weights.push_back({n.substr(6), t});
    model.load_state_dict(weights, true);
    optim::OptimizerState os{ck.tensors, ck.metadata};
    opt.load_state_dict(os);
    sched.load(ck.metadata);
    if (ema) ema->load_state_dict(os);
    return st;
}

void trim_metrics(const std::string& path, const RunState& st) {
    std::ifstream in(path);
    if (!in) return;
    std::string kept, line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        json j = parse_json_or_discarded(line);
        if (j.is_discarded() || !j.is_object()) continue;  // a line torn by a kill
        bool keep = j.contains("step") ? j["step"].is_number() && j["step"].get<int64_t>() < st.global_step
                                       : j.contains("epoch") && j["epoch"].is_number() &&
                                             j["epoch"].get<int64_t>() < (int64_t)st.history.size();
        if (keep) kept += line + "\n";
    }
    io::atomic_write_file(path, kept);
}

void write_curves(const std::string& path, const std::vector<EpochRecord>& h) {
    std::vector<double> tl, vl, ta, va, lr;
    for (auto& r : h) {
        tl.push_back(r.train_loss), vl.push_back(r.val_loss), ta.push_back(r.train_acc);
        va.push_back(r.val_acc), lr.push_back(r.lr);
    }
    const std::array<uint8_t, 3> blue{31, 119, 180}, orange{255, 127, 14}, green{44, 160, 44};
    io::write_curves_png(path, {{"loss", {{"train", tl, blue}, {"val", vl, orange}}},
                                {"accuracy", {{"train", ta, blue}, {"val", va, orange}}},
                                {"learning rate", {{"lr", lr, green}}}});
}

}  // namespace cnx::train
