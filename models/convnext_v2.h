#pragma once
// ConvNeXt V2 (Woo et al. 2023): V1's architecture with Global Response Normalization (nn/grn.h)
// in the block's MLP and no layer scale. Stem, downsampling layers, final norm, head,
// initialisation, drop-path schedule, layer-decay ids and the other libraries' names of those are
// V1's (models/convnext.h); this family brings only its block. Registered names:
// convnextv2_atto, _femto, _pico, _nano, _tiny, _base, _large, _huge.
//
//   auto model = cnx::models::create_model("convnextv2_tiny");
#include <memory>

#include "models/convnext.h"
#include "nn/grn.h"

namespace cnx::models {

// dwconv 7x7 -> LayerNorm -> Linear C->4C -> GELU -> GRN(4C) -> Linear 4C->C -> drop path, + input.
// Official names (dwconv, norm, pwconv1, grn.gamma, grn.beta, pwconv2); timm's are conv_dw, norm,
// mlp.fc1, mlp.grn.weight/bias (stored [4C]), mlp.fc2.
class BlockV2 : public nn::Module {
public:
    BlockV2(int64_t dim, double drop_path, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;  // NHWC [N, H, W, dim]

    // Whether forward runs pwconv1 -> GELU -> GRN -> pwconv2 as the fused convnextv2_mlp op
    // (ops/fused_grn.h): only when pwconv1, act, grn and pwconv2 are exactly nn::Linear,
    // exact-erf nn::GELU, nn::GRN and nn::Linear (a subclass runs its own forward) and none has
    // a forward hook. The residual joins the fused op too when drop path is inactive (Identity,
    // or DropPath in eval mode or at rate 0); otherwise drop path runs on the fused op's output.
    bool mlp_fusable() const;

    std::shared_ptr<nn::Conv2d> dwconv;
    std::shared_ptr<nn::LayerNorm> norm;
    std::shared_ptr<nn::Linear> pwconv1;
    std::shared_ptr<nn::GELU> act;
    std::shared_ptr<nn::GRN> grn;
    std::shared_ptr<nn::Linear> pwconv2;
    std::shared_ptr<nn::Module> drop_path;  // DropPath, or Identity when the rate is 0
};

// The V2 block factory (ConvNeXtOptions::block).
std::shared_ptr<nn::Module> make_block_v2(const BlockArgs& args);

}  // namespace cnx::models
