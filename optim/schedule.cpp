#include "optim/schedule.h"

#include <cmath>

namespace cnx::optim {

namespace {
constexpr double kPi = 3.141592653589793;  // math.pi
}

WarmupCosine::WarmupCosine(int64_t num_step_, int64_t epochs_, bool warmup_, int64_t warmup_epochs_,
                           double warmup_factor_, double end_factor_)
    : num_step(num_step_), epochs(epochs_), warmup_epochs(warmup_ ? warmup_epochs_ : 0),
      warmup(warmup_ && warmup_epochs_ > 0), warmup_factor(warmup_factor_), end_factor(end_factor_) {
    CNX_CHECK(num_step > 0 && epochs > 0, "WarmupCosine: num_step (", num_step, ") and epochs (", epochs,
              ") must be positive");
    // warmup_epochs >= epochs is allowed, as in the original: the warmup then spans the whole run
    // (a one-epoch try-out ramps the lr over its only epoch) and the cosine is never reached.
    CNX_CHECK(warmup_epochs >= 0, "WarmupCosine: warmup_epochs ", warmup_epochs, " is negative");
}

double WarmupCosine::operator()(int64_t x) const {
    const int64_t w = warmup_epochs * num_step;
    if (warmup && x <= w) {
        const double alpha = (double)x / (double)w;
        return warmup_factor * (1 - alpha) + alpha;
    }
    const int64_t current = x - w;
    const int64_t cosine_steps = (epochs - warmup_epochs) * num_step;
    if (cosine_steps <= 0) return 1.0;  // past a warmup that spans the run: its top, not a division by 0
    return ((1 + std::cos((double)current * kPi / (double)cosine_steps)) / 2) * (1 - end_factor) + end_factor;
}

std::vector<double> cosine_scheduler(double base_value, double final_value, int64_t epochs, int64_t niter_per_ep,
                                     int64_t warmup_epochs, double start_warmup_value, int64_t warmup_steps) {
    CNX_CHECK(epochs > 0 && niter_per_ep > 0 && warmup_epochs >= 0, "cosine_scheduler: epochs ", epochs,
              ", niter_per_ep ", niter_per_ep, ", warmup_epochs ", warmup_epochs);
    const int64_t total = epochs * niter_per_ep;
    int64_t warmup_iters = warmup_epochs * niter_per_ep;
    if (warmup_steps > 0) warmup_iters = warmup_steps;
    CNX_CHECK(warmup_iters <= total, "cosine_scheduler: ", warmup_iters, " warmup iterations exceed the ", total,
              " in total");
    // The original only builds the warmup ramp when warmup_epochs > 0 and asserts the length.
    CNX_CHECK(warmup_epochs > 0 || warmup_iters == 0, "cosine_scheduler: warmup_steps = ", warmup_steps,
              " needs warmup_epochs > 0");
    std::vector<double> out;
    out.reserve(total);
    if (warmup_iters > 0) {
        // np.linspace: start + i * step, the last value set to stop exactly.
        const double delta = base_value - start_warmup_value;
        const int64_t div = warmup_iters - 1;
        const double step = div > 0 ? delta / (double)div : 0.0;
        for (int64_t i = 0; i < warmup_iters; ++i) {
            double y = (double)i;
            y = div == 0 ? y * delta : step == 0 ? y / (double)div * delta : y * step;
            out.push_back(y + start_warmup_value);
        }
        if (warmup_iters > 1) out.back() = base_value;
    }
    const int64_t n = total - warmup_iters;
    for (int64_t i = 0; i < n; ++i)
        out.push_back(final_value + 0.5 * (base_value - final_value) * (1 + std::cos(kPi * (double)i / (double)n)));
    return out;
}

StepDecay::StepDecay(int64_t step_size_, double gamma_) : step_size(step_size_), gamma(gamma_) {
    CNX_CHECK(step_size > 0, "StepDecay: step_size ", step_size, " must be positive");
}

double StepDecay::operator()(int64_t x) const { return std::pow(gamma, (double)(x / step_size)); }

LambdaLR::LambdaLR(Optimizer& optimizer, LRLambda factor) : opt_(optimizer), factor_(std::move(factor)) {
    CNX_CHECK(factor_ != nullptr, "LambdaLR: no lr lambda");
    apply();
}

void LambdaLR::step() {
    ++last_step_;
    apply();
}

void LambdaLR::set_step(int64_t step) {
    CNX_CHECK(step >= 0, "LambdaLR: negative step ", step);
    last_step_ = step;
    apply();
}

void LambdaLR::apply() {
    const double f = factor_(last_step_);
    for (auto& g : opt_.param_groups()) g.lr = g.initial_lr.value_or(g.lr.value_or(0.0)) * f;
}

std::vector<double> LambdaLR::last_lr() const {
    std::vector<double> out;
    for (const auto& g : opt_.param_groups()) out.push_back(g.lr.value_or(0.0));
    return out;
}

void LambdaLR::save(std::map<std::string, std::string>& scalars, const std::string& prefix) const {
    scalars[prefix + "last_step"] = std::to_string(last_step_);
}

void LambdaLR::load(const std::map<std::string, std::string>& scalars, const std::string& prefix) {
    auto it = scalars.find(prefix + "last_step");
    CNX_CHECK(it != scalars.end(), "LambdaLR: missing key '", prefix, "last_step'");
    char* end = nullptr;
    long long v = std::strtoll(it->second.c_str(), &end, 10);
    CNX_CHECK(end != it->second.c_str() && *end == '\0' && v >= 0, "LambdaLR: '", it->first, "' = '", it->second,
              "' is not a step");
    set_step(v);
}

}  // namespace cnx::optim
