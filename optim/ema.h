#pragma once
// Exponential moving average of a model's weights (timm's ModelEmaV2): a shadow copy of the named
// parameters and buffers, updated after each optimiser step as
//   ema = decay * ema + (1 - decay) * value
// The shadow is what one evaluates or saves as "model_ema".
//   optim::ModelEMA ema(model.state_dict(), 0.9999);
//   ... opt.step(); ema.update(model.state_dict());
#include <map>
#include <string>

#include "optim/optimizer.h"

namespace cnx::optim {

class ModelEMA {
public:
    // Copies the tensors (the shadow shares no memory with the model).
    explicit ModelEMA(const NamedTensors& named, double decay = 0.9999);

    // Every shadow tensor must be present in `named` (matched by name, same shape); entries of
    // `named` the shadow lacks are an error too, so a renamed model is caught.
    void update(const NamedTensors& named);
    void set(const NamedTensors& named);  // copy the values (ema = value)

    const NamedTensors& shadow() const { return shadow_; }
    double decay() const { return decay_; }
    void set_decay(double decay);
    int64_t num_updates() const { return updates_; }

    // Tensors "<prefix><name>" (the shadow tensors themselves, not copies) and scalars
    // "<prefix>decay", "<prefix>num_updates".
    OptimizerState state_dict(const std::string& prefix = "ema.") const;
    void load_state_dict(const OptimizerState& state, const std::string& prefix = "ema.");

private:
    template <class F> void for_each_pair(const NamedTensors& named, const char* what, F fn);
    NamedTensors shadow_;
    std::map<std::string, size_t> index_;
    double decay_;
    int64_t updates_ = 0;
};

}  // namespace cnx::optim
