// libFuzzer harness: a training checkpoint as --resume reads it. The safetensors reader (header
// JSON and __metadata__), then every value the trainer restores from the metadata, parsed the
// way the trainer parses it: optimiser, schedule and EMA state through their load_state_dict,
// integers with std::stoll, reals with std::stod, the history with nlohmann::json::parse, the
// generator states with Generator::set_state. The "model" is a few raw tensors with ConvNeXt-like
// names. Only cnx::Error may escape; the restored state must then be usable (one optimiser step,
// one schedule step, draws from the restored generators).
//
// Seeds: built with -DCNX_FUZZ_WRITE_SEEDS this file is a program that writes real checkpoints
// of the fuzzed model into a folder (see tools/make_fuzz_corpus.sh).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "optim/optim.h"

namespace {
using json = nlohmann::json;
using namespace cnx;

NamedTensors make_model() {
    NamedTensors m{{"downsample_layers.0.0.weight", zeros({4, 3, 2, 2})},
                   {"downsample_layers.0.0.bias", zeros({4})},
                   {"stages.0.0.gamma", ones({4})},
                   {"head.weight", zeros({3, 4})},
                   {"head.bias", zeros({3})}};
    for (auto& [name, t] : m) t.requires_grad_(true).set_name(name);
    return m;
}

struct Resumed {
    NamedTensors model;
    optim::AdamW opt;
    optim::LambdaLR sched;
    optim::ModelEMA ema;
    explicit Resumed(const NamedTensors& m)
        : model(m),
          opt(optim::get_params_groups(m, 0.05, 0.8), optim::AdamWOptions(4e-3).weight_decay(0.05)),
          sched(opt, optim::WarmupCosine(5, 3, true, 1)),
          ema(m, 0.999) {}
};

// What the trainer keeps from the metadata besides the optimiser, schedule and EMA.
struct RunMeta {
    std::string model;
    int64_t epoch = 0, batch_in_epoch = 0, step_in_epoch = 0, global_step = 0, seen = 0, correct = 0;
    double loss_sum = 0, epoch_seconds = 0, best_acc = -1;
    std::vector<double> history_val_acc;
    Generator rng, mix_rng;
};

// The trainer's own parsing of the checkpoint, the part not delegated to optim/.
RunMeta parse_checkpoint_meta(const io::Metadata& md) {
    auto meta = [&](const char* k) -> const std::string& {
        auto it = md.find(k);
        CNX_CHECK(it != md.end(), "checkpoint lacks '", k, "'");
        return it->second;
    };
    auto integer = [&](const char* k) -> int64_t {
        try {
            return std::stoll(meta(k));
        } catch (const std::logic_error&) {  // invalid_argument, out_of_range
            fail("checkpoint: '", k, "' is not an integer");
        }
    };
    auto real = [&](const char* k) -> double {
        try {
            return std::stod(meta(k));
        } catch (const std::logic_error&) {
            fail("checkpoint: '", k, "' is not a number");
        }
    };
    RunMeta r;
    r.model = meta("model");
    r.epoch = integer("epoch");
    r.batch_in_epoch = integer("batch_in_epoch");
    r.step_in_epoch = integer("step_in_epoch");
    r.global_step = integer("global_step");
    r.seen = integer("seen");
    r.correct = integer("correct");
    r.loss_sum = real("loss_sum");
    r.epoch_seconds = real("epoch_seconds");
    r.best_acc = real("best_acc");
    r.rng.set_state(meta("rng"));
    r.mix_rng.set_state(meta("mix_rng"));
    json hist;
    try {
        hist = json::parse(meta("history"));
    } catch (const json::exception& e) {
        fail("checkpoint: history is not valid JSON: ", e.what());
    }
    CNX_CHECK(hist.is_array(), "checkpoint: history is not a JSON array");
    for (auto& e : hist) {
        CNX_CHECK(e.is_object(), "checkpoint: history entry is not an object");
        r.history_val_acc.push_back(e.contains("val_acc") && e["val_acc"].is_number() ? e["val_acc"].get<double>()
                                                                                       : NAN);
    }
    CNX_CHECK(r.epoch >= 0 && r.batch_in_epoch >= 0 && r.global_step >= 0 && r.seen >= 0,
              "checkpoint: negative position");
    return r;
}

void resume(Resumed& s, const io::SafetensorsFile& ck) {
    for (auto& [name, p] : s.model) {  // the model weights, as load_state_dict(strict) checks them
        Tensor w = ck.get("model." + name);
        CNX_CHECK(w.shape() == p.shape(), "checkpoint: model.", name, " is ", w.str(), ", expected ", p.str());
        copy_(p, w);
    }
    optim::OptimizerState os{ck.tensors, ck.metadata};
    s.opt.load_state_dict(os);
    s.sched.load(ck.metadata);
    s.ema.load_state_dict(os);
}

}  // namespace

#ifndef CNX_FUZZ_WRITE_SEEDS

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Resumed s(make_model());
    try {
        io::SafetensorsFile ck = io::load_safetensors_from_buffer(data, size, DType::F32, false, "fuzz-checkpoint");
        resume(s, ck);
        RunMeta r = parse_checkpoint_meta(ck.metadata);
        (void)r.rng.next_u64();
        (void)r.mix_rng.normal();
    } catch (const Error&) {
        return 0;
    }
    // Accepted: the restored state must drive a step without surprises.
    for (auto& [name, p] : s.model) p.set_grad(ones(p.shape()));
    s.opt.step();
    s.sched.step();
    (void)s.sched.last_lr();
    s.ema.update(s.model);
    return 0;
}

#else  // seed writer: checkpoints at a few points of a fake run

#include <filesystem>
#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " OUT_DIR\n";
        return 2;
    }
    std::filesystem::create_directories(argv[1]);
    Resumed s(make_model());
    Generator g(1), mix(2);
    json hist = json::array();
    for (int step = 0; step <= 3; ++step) {
        if (step > 0) {
            for (auto& [name, p] : s.model) p.set_grad(randn(p.shape(), DType::F32, &g));
            s.opt.step();
            s.sched.step();
            s.ema.update(s.model);
            (void)mix.uniform();
            hist.push_back({{"epoch", step - 1}, {"train_loss", 1.0 / step}, {"train_acc", 0.5}, {"val_loss", nullptr},
                            {"val_acc", 0.25 * step}, {"lr", 1e-3}, {"seconds", 1.5}});
        }
        NamedTensors tensors;
        for (auto& [n, t] : s.model) tensors.push_back({"model." + n, t});
        optim::OptimizerState os = s.opt.state_dict();
        tensors.insert(tensors.end(), os.tensors.begin(), os.tensors.end());
        io::Metadata meta = os.scalars;
        s.sched.save(meta);
        optim::OptimizerState es = s.ema.state_dict();
        tensors.insert(tensors.end(), es.tensors.begin(), es.tensors.end());
        meta.insert(es.scalars.begin(), es.scalars.end());
        meta["model"] = "convnext_atto";
        meta["epoch"] = std::to_string(step);
        meta["batch_in_epoch"] = std::to_string(step % 2);
        meta["step_in_epoch"] = std::to_string(step % 2);
        meta["global_step"] = std::to_string(step);
        meta["loss_sum"] = "0.69314718055994529";
        meta["seen"] = std::to_string(8 * step);
        meta["correct"] = std::to_string(3 * step);
        meta["epoch_seconds"] = "12.5";
        meta["best_acc"] = step ? "0.25" : "-1";
        meta["rng"] = g.state();
        meta["mix_rng"] = mix.state();
        meta["history"] = hist.dump();
        std::string bytes = io::save_safetensors_to_buffer(tensors, meta);
        std::ofstream((std::filesystem::path(argv[1]) / ("step" + std::to_string(step))).string(), std::ios::binary)
            << bytes;
    }
    return 0;
}

#endif
