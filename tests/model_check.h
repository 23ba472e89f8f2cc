#pragma once
// Pieces shared by the model tests (V1 in test_model.cpp, V2 in test_convnext_v2.cpp).
#include <memory>

#include "nn/layers.h"
#include "ops/elementwise.h"

namespace model_check {

// A Linear whose forward doubles its output: a user's subclass the fused paths must not bypass.
struct DoublingLinear : cnx::nn::Linear {
    using cnx::nn::Linear::Linear;
    cnx::Tensor forward(const cnx::Tensor& x) override { return cnx::mul(cnx::nn::Linear::forward(x), 2.0); }
};

// Puts a DoublingLinear with the block's pwconv2 weights in its place (the slot keeps its aliases).
template <class Block>
void double_pwconv2(Block& b) {
    auto doubled = std::make_shared<DoublingLinear>(b.pwconv2->in_features, b.pwconv2->out_features);
    cnx::copy_(doubled->weight, b.pwconv2->weight);
    cnx::copy_(doubled->bias, b.pwconv2->bias);
    b.pwconv2 = b.register_module("pwconv2", doubled);
}

}  // namespace model_check
