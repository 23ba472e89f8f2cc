#pragma once
// Learning-rate schedules, stepped once per iteration (not per epoch).
//
// Two styles, both used by ConvNeXt training scripts:
//  * a factor f(step) applied through LambdaLR: every group's lr = its initial lr * f(step)
//    (WarmupCosine, StepDecay, constant_factor);
//  * a precomputed table of lr values (cosine_scheduler) set each iteration with
//    optimizer.set_lr(values[it]); every group then uses value * its lr_scale.
//
//   optim::LambdaLR sched(opt, optim::WarmupCosine(iters_per_epoch, epochs));
//   for (...) { opt.zero_grad(); loss.backward(); opt.step(); sched.step(); }
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace cnx::optim {

using LRLambda = std::function<double(int64_t step)>;

// create_lr_scheduler(optimizer, num_step, epochs, warmup, warmup_epochs, warmup_factor, end_factor):
// with W = warmup_epochs * num_step,
//   x <= W (warmup):  a = x / W, f = warmup_factor * (1 - a) + a
//   otherwise:        f = (1 + cos((x - W) * pi / ((epochs - warmup_epochs) * num_step))) / 2
//                         * (1 - end_factor) + end_factor
// warmup = false or warmup_epochs = 0: cosine from step 0 (f(0) = 1). warmup_epochs >= epochs:
// the warmup spans the whole run (the original has no check either; steps past its end give 1).
struct WarmupCosine {
    WarmupCosine(int64_t num_step, int64_t epochs, bool warmup = true, int64_t warmup_epochs = 1,
                 double warmup_factor = 1e-3, double end_factor = 1e-6);
    double operator()(int64_t x) const;

    int64_t num_step, epochs, warmup_epochs;
    bool warmup;
    double warmup_factor, end_factor;
};

// ConvNeXt's cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs,
// start_warmup_value, warmup_steps): epochs * niter_per_ep values, a linear warmup
// (np.linspace(start_warmup_value, base_value, warmup_iters)) then
// final + 0.5 * (base - final) * (1 + cos(pi * i / n_cosine)). warmup_steps > 0 overrides
// warmup_epochs * niter_per_ep (and, as in the original, needs warmup_epochs > 0).
std::vector<double> cosine_scheduler(double base_value, double final_value, int64_t epochs, int64_t niter_per_ep,
                                     int64_t warmup_epochs = 0, double start_warmup_value = 0,
                                     int64_t warmup_steps = -1);

// StepLR: f = gamma^(floor(x / step_size)).
struct StepDecay {
    StepDecay(int64_t step_size, double gamma = 0.1);
    double operator()(int64_t x) const;
    int64_t step_size;
    double gamma;
};

inline double constant_factor(int64_t) { return 1.0; }

// torch.optim.lr_scheduler.LambdaLR: construction sets every group's lr to initial_lr * f(0), so
// the first optimizer step uses f(0); each step() advances one iteration (call it after
// optimizer.step()).
class LambdaLR {
public:
    LambdaLR(Optimizer& optimizer, LRLambda factor);
    void step();
    int64_t last_step() const { return last_step_; }  // PyTorch's last_epoch
    // Jumps to iteration `step` (resuming): lrs become initial_lr * f(step).
    void set_step(int64_t step);
    std::vector<double> last_lr() const;  // each group's current lr

    // "<prefix>last_step" in a checkpoint's string map.
    void save(std::map<std::string, std::string>& scalars, const std::string& prefix = "sched.") const;
    void load(const std::map<std::string, std::string>& scalars, const std::string& prefix = "sched.");

private:
    void apply();
    Optimizer& opt_;
    LRLambda factor_;
    int64_t last_step_ = 0;
};

}  // namespace cnx::optim
