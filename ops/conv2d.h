#pragma once
#include "core/tensor.h"

namespace cnx {
// x NHWC [N, H, W, Cin], weight in PyTorch's layout [Cout, Cin/groups, kh, kw], bias [Cout] or
// undefined -> NHWC [N, Ho, Wo, Cout]. kernel == stride with no padding and groups == 1 takes the
// patchify path (one GEMM, the ConvNeXt stem and downsamples); groups == Cin == Cout goes to
// depthwise_conv2d; everything else is im2col + GEMM per group.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int stride = 1, int padding = 0,
              int groups = 1);
namespace ref {
// Direct seven-loop convolution, the reference the fast paths are tested against (forward only).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding, int groups);
}
}  // namespace cnx
