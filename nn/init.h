#pragma once
// In-place initialisers with PyTorch's semantics (torch.nn.init), drawing from a cnx::Generator
// (the default one when none is given) so a seed fixes the whole model. None of them record
// autograd history.
#include "core/rng.h"
#include "core/tensor.h"

namespace cnx::nn::init {

// Normal(mean, std) truncated to the ABSOLUTE bounds [a, b] (as torch.nn.init.trunc_normal_: with
// std 0.02 the default bounds ±2 cut nothing in practice). Rejection when most of the mass is
// inside the bounds, inverse-CDF sampling otherwise, so narrow or far-out intervals stay cheap.
void trunc_normal_(Tensor& t, double std = 1.0, double a = -2.0, double b = 2.0, Generator* gen = nullptr,
                   double mean = 0.0);
void normal_(Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
void uniform_(Tensor& t, double lo = 0.0, double hi = 1.0, Generator* gen = nullptr);
void constant_(Tensor& t, double value);
void zeros_(Tensor& t);
void ones_(Tensor& t);

// fan_in of a Linear [out, in] or Conv [out, in/groups, kh, kw] weight.
int64_t fan_in(const Tensor& weight);
// PyTorch's default Linear/Conv initialisation: kaiming_uniform_(a=sqrt(5)) on the weight, which
// is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
void default_weight_init_(Tensor& weight, Generator* gen = nullptr);
void default_bias_init_(Tensor& bias, int64_t fan_in, Generator* gen = nullptr);

// Inverse of erf on (-1, 1); exposed for tests.
double erfinv(double x);

}  // namespace cnx::nn::init
