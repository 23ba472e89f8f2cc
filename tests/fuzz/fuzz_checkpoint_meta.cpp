// libFuzzer harness: a training checkpoint as --resume reads it. The safetensors reader (header
// JSON and __metadata__), then every value the trainer restores from the metadata, parsed the
// way the trainer parses it: optimiser, schedule and EMA state through their load_state_dict,
// the run state through train::read_run_state (the parser --resume uses), the generator states
// with Generator::set_state. The "model" is a few raw tensors with ConvNeXt-like
// names. Only cnx::Error may escape; the restored state must then be usable (one optimiser step,
// one schedule step, draws from the restored generators).
//
// Seeds: built with -DCNX_FUZZ_WRITE_SEEDS this file is a program that writes real checkpoints
// of the fuzzed model into a folder (see tools/make_fuzz_corpus.sh).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "optim/optim.h"
#include "train/run_state.h"

namespace {
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
        train::RunState r = train::read_run_state(ck.metadata, "fuzz-checkpoint");
        Generator rng, mix_rng;  // as the trainer restores them
        rng.set_state(r.rng);
        mix_rng.set_state(r.mix_rng);
        (void)rng.next_u64();
        (void)mix_rng.normal();
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
    train::RunState st;
    st.model = "convnext_atto";
    for (int step = 0; step <= 3; ++step) {
        if (step > 0) {
            for (auto& [name, p] : s.model) p.set_grad(randn(p.shape(), DType::F32, &g));
            s.opt.step();
            s.sched.step();
            s.ema.update(s.model);
            (void)mix.uniform();
            train::EpochRecord r;
            r.train_loss = 1.0 / step, r.train_acc = 0.5, r.val_acc = 0.25 * step, r.lr = 1e-3, r.seconds = 1.5;
            st.history.push_back(r);
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
        st.epoch = step, st.batch_in_epoch = st.step_in_epoch = step % 2, st.global_step = step;
        st.loss_sum = 0.69314718055994529, st.seen = 8 * step, st.correct = 3 * step;
        st.epoch_seconds = 12.5, st.best_acc = step ? 0.25 : -1;
        st.rng = g.state(), st.mix_rng = mix.state();
        train::write_run_state(st, meta);
        std::string bytes = io::save_safetensors_to_buffer(tensors, meta);
        std::ofstream((std::filesystem::path(argv[1]) / ("step" + std::to_string(step))).string(), std::ios::binary)
            << bytes;
    }
    return 0;
}

#endif
