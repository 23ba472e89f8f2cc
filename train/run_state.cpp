#include "train/run_state.h"

#include <cstdio>
#include <stdexcept>

#include "core/error.h"

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

void write_run_state(const RunState& st, io::Metadata& meta) {
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
}

RunState read_run_state(const io::Metadata& md, const std::string& path) {
    auto meta = [&](const char* k) -> const std::string& {
        auto it = md.find(k);
        CNX_CHECK(it != md.end(), "checkpoint '", path, "' lacks '", k, "' (not a training checkpoint?)");
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

}  // namespace cnx::train
