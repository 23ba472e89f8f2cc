#pragma once
#include "core/tensor.h"

namespace cnx {
// x NHWC [N, H, W, C], weight [C, 1, k, k] (PyTorch's depthwise layout), bias [C] or undefined,
// any odd k -> NHWC [N, Ho, Wo, C]. ConvNeXt uses k = 7, padding = 3, stride 1.
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int stride = 1,
                        int padding = 0);
namespace ref {
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding);
}
}  // namespace cnx
