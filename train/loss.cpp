#include "train/loss.h"

#include "ops/softmax.h"

namespace cnx::train {

LossFn cross_entropy_loss(double label_smoothing) {
    return [label_smoothing](const Tensor& logits, const Targets& t) {
        return t.soft.defined() ? cross_entropy(logits, t.soft) : cross_entropy(logits, t.labels, label_smoothing);
    };
}

}  // namespace cnx::train
