#pragma once
// Gradient clipping and gradient accumulation.
#include <cstdint>
#include <limits>
#include <vector>

#include "core/tensor.h"

namespace cnx::optim {

// torch.nn.utils.clip_grad_norm_: the norm of all gradients together (parameters without a
// gradient are ignored); when max_norm / (total + 1e-6) < 1 every gradient is scaled by it.
// norm_type: any p > 0, or infinity for the max-norm. Returns the total norm (before clipping).
// A non-finite total turns the gradients non-finite too, as in PyTorch (the step is then bad
// and visible, not silently skipped).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

// Gradient accumulation over N micro-batches: scale each micro-batch loss by loss_scale() (1/N)
// so the summed gradients equal the mean over the large batch, and step every N-th one:
//   GradAccumulator acc(4);
//   for (batch : loader) {
//       Tensor loss = mul(criterion(model(x), y), acc.loss_scale());
//       loss.backward();                  // gradients add up in .grad
//       if (acc.ready()) { opt.step(); opt.zero_grad(); sched.step(); }
//   }
class GradAccumulator {
public:
    explicit GradAccumulator(int64_t steps);
    double loss_scale() const { return 1.0 / (double)steps_; }
    // Counts one micro-batch; true when it completes a group of N (time to step).
    bool ready();
    int64_t steps() const { return steps_; }
    int64_t pending() const { return count_; }  // micro-batches since the last step
    void reset() { count_ = 0; }

private:
    int64_t steps_;
    int64_t count_ = 0;
};

}  // namespace cnx::optim
