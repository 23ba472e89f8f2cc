#pragma once
// Every op of the library. Each family lives in one .cpp with its kernels, its naive reference
// where there is an optimised kernel, and its hand-written backward.
#include "core/autograd.h"
#include "core/tensor.h"
#include "ops/activation.h"
#include "ops/conv2d.h"
#include "ops/depthwise_conv2d.h"
#include "ops/drop_path.h"
#include "ops/elementwise.h"
#include "ops/fused.h"
#include "ops/fused_grn.h"
#include "ops/grn.h"
#include "ops/layer_norm.h"
#include "ops/linear.h"
#include "ops/pointwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"
