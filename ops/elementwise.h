#pragma once
#include "core/tensor.h"

namespace cnx {
// NumPy broadcasting: shapes are aligned on the right; each dim pair must be equal or contain a 1
// ("add: shapes [8,56,56,96] and [8,28,28,96] do not broadcast" otherwise). Backward sums each
// gradient back to its input's shape. A scalar on either side is a rank-0 operand of the
// tensor's dtype and gets no gradient.
//
// a + b: gradients g, g.
Tensor add(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor add(double a, const Tensor& b);
// a - b: g, -g.
Tensor sub(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, double b);
Tensor sub(double a, const Tensor& b);
// a * b: g * b, g * a.
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, double b);
Tensor mul(double a, const Tensor& b);
// a / b (true division, also with a scalar): g / b, -g * (a / b) / b.
Tensor div(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, double b);
Tensor div(double a, const Tensor& b);
// Elementwise max / min; NaN on either side gives NaN. The gradient goes to the side that wins,
// split evenly on ties, as PyTorch does.
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, double b);
Tensor maximum(double a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, double b);
Tensor minimum(double a, const Tensor& b);
Tensor neg(const Tensor& a);
// The shape a op b has (torch.broadcast_shapes); throws when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// x [..., C] * scale [C]: ConvNeXt's layer scale (gamma). A dedicated kernel because it runs on
// every block's full activation.
Tensor channel_scale(const Tensor& x, const Tensor& scale);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator-(double a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator/(double a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
}  // namespace cnx
