#include "train/run_state.h"

#include <cstdio>
#include <stdexcept>
#include <utility>

#include "core/error.h"
#include "core/json.h"

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

// The numeric fields, in one list for writing and reading.
const std::pair<const char*, int64_t RunState::*> kIntegerFields[] = {
    {"epoch", &RunState::epoch},
    {"batch_in_epoch", &RunState::batch_in_epoch},
    {"step_in_epoch", &RunState::step_in_epoch},
    {"global_step", &RunState::global_step},
    {"seen", &RunState::seen},
    {"correct", &RunState::correct},
};
const std::pair<const char*, double RunState::*> kRealFields[] = {
    {"loss_sum", &RunState::loss_sum},
    {"epoch_seconds", &RunState::epoch_seconds},
    {"best_acc", &RunState::best_acc},
};

}  // namespace

void write_run_state(const RunState& st, io::Metadata& meta) {
    json hist = json::array();
    for (size_t i = 0; i < st.history.size(); ++i) hist.push_back(st.history[i].to_json((int64_t)i));
    meta["model"] = st.model;
    for (const auto& [key, field] : kIntegerFields) meta[key] = std::to_string(st.*field);
    for (const auto& [key, field] : kRealFields) meta[key] = exact(st.*field);
    meta["rng"] = st.rng;
    meta["mix_rng"] = st.mix_rng;
    meta["history"] = dump_json(hist);
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
    for (const auto& [key, field] : kIntegerFields) st.*field = integer(key);
    for (const auto& [key, field] : kRealFields) st.*field = real(key);
    st.rng = meta("rng");
    st.mix_rng = meta("mix_rng");
    json hist;
    try {
        hist = parse_json(meta("history"));
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
