#pragma once
#include "core/tensor.h"

namespace cnx {
// Elementwise math, float32 and float64, each with a hand-written backward: the primitives a new
// layer is composed from before it earns its own kernel. Gradients follow PyTorch's conventions
// at the kinks: relu'(0) = 0, abs'(0) = 0, clamp passes the gradient where lo <= x <= hi.
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);                  // 1 / sqrt(x)
Tensor pow(const Tensor& x, double exponent);   // x^exponent; gradient 0 for exponent 0
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);                    // natural logarithm
Tensor abs(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
// min(max(x, lo), hi); pass -INFINITY or INFINITY for a one-sided clamp. NaN stays NaN.
Tensor clamp(const Tensor& x, double lo, double hi);
}  // namespace cnx
