#include "train/checkpoint.h"

#include <array>
#include <fstream>

#include "io/atomic_file.h"
#include "io/curves.h"

namespace cnx::train {
using json = nlohmann::json;

json EpochRecord::to_json(int64_t epoch) const {
    auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
    return {{"epoch", epoch},           {"train_loss", num(train_loss)}, {"train_acc", num(train_acc)},
            {"val_loss", num(val_loss)}, {"val_acc", num(val_acc)},       {"lr", num(lr)},
            {"seconds", seconds}};
}

EpochRecord EpochRecord::from_json(const json& j) {
    auto get = [&](const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN; };
    EpochRecord r;
    r.train_loss = get("train_loss"), r.train_acc = get("train_acc"), r.val_loss = get("val_loss");
    r.val_acc = get("val_acc"), r.lr = get("lr");
    r.seconds = j.contains("seconds") && j["seconds"].is_number() ? j["seconds"].get<double>() : 0.0;
    return r;
}

namespace {

// Doubles round-trip exactly through 17 significant digits.
std::string exact(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

}  // namespace

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
    json hist = json::array();
    for (size_t i = 0; i < st.history.size(); ++i) hist.push_back(st.history[i].to_json((int64_t)i));
    meta["model"] = st.model;
    meta["epoch"] = std::to_string(st.epoch);
    meta["batch_in_epoch"] = std::to_string(st.batch_in_epoch);
    meta["step_in_epoch"] = std::to_string(st.step_in_epoch);
    meta["global_step"] = std::to_string(st.global_step);
    meta["loss_sum"] = exact(st.loss_sum);
    meta["seen"] = std::to_string(st.seen);
    meta["correct"] = std::to_string(st.correct);
    meta["epoch_seconds"] = exact(st.epoch_seconds);
    meta["best_acc"] = exact(st.best_acc);
    meta["rng"] = st.rng;
    meta["mix_rng"] = st.mix_rng;
    meta["history"] = hist.dump();
    try {
        io::save_safetensors(path, tensors, meta);
    } catch (const Error& e) {
        fail("cannot save the checkpoint (the previous one is intact): ", e.what());
    }
}

RunState load_training_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                                  optim::LambdaLR& sched, optim::ModelEMA* ema) {
    io::SafetensorsFile ck = io::load_safetensors(path);
    auto meta = [&](const char* k) -> const std::string& {
        auto it = ck.metadata.find(k);
        CNX_CHECK(it != ck.metadata.end(), "checkpoint '", path, "' lacks '", k, "' (not a training checkpoint?)");
        return it->second;
    };
    auto integer = [&](const char* k) {
        try {
            return (int64_t)std::stoll(meta(k));
        } catch (const std::logic_error&) {
            fail("checkpoint '", path, "': '", k, "' is not an integer: '", meta(k), "'");
        }
    };
    auto real = [&](const char* k) {
        try {
            return std::stod(meta(k));
        } catch (const std::logic_error&) {
            fail("checkpoint '", path, "': '", k, "' is not a number: '", meta(k), "'");
        }
    };
    RunState st;
    st.model = meta("model");
    NamedTensors weights;
    for (auto& [n, t] : ck.tensors)
        if (n.rfind("model.", 0) == 0) weights.push_back({n.substr(6), t});
    model.load_state_dict(weights, true);
    optim::OptimizerState os{ck.tensors, ck.metadata};
    opt.load_state_dict(os);
    sched.load(ck.metadata);
    if (ema) ema->load_state_dict(os);
    st.epoch = integer("epoch");
    st.batch_in_epoch = integer("batch_in_epoch");
    st.step_in_epoch = integer("step_in_epoch");
    st.global_step = integer("global_step");
    st.loss_sum = real("loss_sum");
    st.seen = integer("seen");
    st.correct = integer("correct");
    st.epoch_seconds = real("epoch_seconds");
    st.best_acc = real("best_acc");
    st.rng = meta("rng");
    st.mix_rng = meta("mix_rng");
    json hist;
    try {
        hist = json::parse(meta("history"));
    } catch (const json::exception& e) {
        fail("checkpoint '", path, "': history is not valid JSON: ", e.what());
    }
    CNX_CHECK(hist.is_array(), "checkpoint '", path, "': history is not a JSON array");
    for (auto& r : hist) {
        CNX_CHECK(r.is_object(), "checkpoint '", path, "': history entry is not an object");
        st.history.push_back(EpochRecord::from_json(r));
    }
    CNX_CHECK(st.epoch >= 0 && st.batch_in_epoch >= 0 && st.global_step >= 0 && st.seen >= 0,
              "checkpoint '", path, "': negative position");
    return st;
}

void trim_metrics(const std::string& path, const RunState& st) {
    std::ifstream in(path);
    if (!in) return;
    std::string kept, line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, false);
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
