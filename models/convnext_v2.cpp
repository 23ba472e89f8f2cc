#include "models/convnext_v2.h"

#include <typeinfo>

#include "ops/elementwise.h"
#include "ops/fused_grn.h"

namespace cnx::models {

BlockV2::BlockV2(int64_t dim, double dp, Generator* gen) : Module("BlockV2") {
    dwconv = register_module("dwconv", std::make_shared<nn::Conv2d>(dim, dim, 7, 1, 3, (int)dim, true, gen),
                             {{"timm", "conv_dw"}});
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(dim, 1e-6));
    pwconv1 = register_module("pwconv1", std::make_shared<nn::Linear>(dim, 4 * dim, true, gen), {{"timm", "mlp.fc1"}});
    act = register_module("act", std::make_shared<nn::GELU>(), {{"timm", "mlp.act"}});
    grn = register_module("grn", std::make_shared<nn::GRN>(4 * dim), {{"timm", "mlp.grn"}});
    pwconv2 = register_module("pwconv2", std::make_shared<nn::Linear>(4 * dim, dim, true, gen), {{"timm", "mlp.fc2"}});
    std::shared_ptr<nn::Module> dp_module;
    if (dp > 0)
        dp_module = std::make_shared<nn::DropPath>(dp);
    else
        dp_module = std::make_shared<nn::Identity>();
    drop_path = register_module("drop_path", dp_module);
}

namespace {
bool exactly(const nn::Module& m, const std::type_info& t) { return typeid(m) == t && !m.has_forward_hooks(); }

bool drop_path_inactive(const nn::Module& m) {
    if (exactly(m, typeid(nn::Identity))) return true;
    if (!exactly(m, typeid(nn::DropPath))) return false;
    auto& dp = static_cast<const nn::DropPath&>(m);
    return !dp.is_training() || dp.p == 0;
}
}  // namespace

bool BlockV2::mlp_fusable() const {
    return exactly(*pwconv1, typeid(nn::Linear)) && exactly(*act, typeid(nn::GELU)) && !act->tanh_approximation &&
           exactly(*grn, typeid(nn::GRN)) && exactly(*pwconv2, typeid(nn::Linear));
}

Tensor BlockV2::forward(const Tensor& x) {
    Tensor y = (*norm)((*dwconv)(x));
    if (mlp_fusable()) {
        // The same function, to float rounding, in less time and memory (ops/fused_grn.cpp).
        if (drop_path_inactive(*drop_path))
            return convnextv2_mlp(y, pwconv1->weight, pwconv1->bias, grn->gamma, grn->beta, pwconv2->weight,
                                  pwconv2->bias, x, grn->eps);
        y = convnextv2_mlp(y, pwconv1->weight, pwconv1->bias, grn->gamma, grn->beta, pwconv2->weight, pwconv2->bias,
                           Tensor(), grn->eps);
    } else {
        y = (*pwconv2)((*grn)((*act)((*pwconv1)(y))));
    }
    return add(x, (*drop_path)(y));
}

std::shared_ptr<nn::Module> make_block_v2(const BlockArgs& a) {
    return std::make_shared<BlockV2>(a.dim, a.drop_path, a.gen);
}

}  // namespace cnx::models

CNX_MODEL_FAMILY(convnext_v2) {
    struct Variant {
        const char* name;
        std::vector<int64_t> depths, dims;
    };
    const Variant variants[] = {
        {"convnextv2_atto", {2, 2, 6, 2}, {40, 80, 160, 320}},
        {"convnextv2_femto", {2, 2, 6, 2}, {48, 96, 192, 384}},
        {"convnextv2_pico", {2, 2, 6, 2}, {64, 128, 256, 512}},
        {"convnextv2_nano", {2, 2, 8, 2}, {80, 160, 320, 640}},
        {"convnextv2_tiny", {3, 3, 9, 3}, {96, 192, 384, 768}},
        {"convnextv2_base", {3, 3, 27, 3}, {128, 256, 512, 1024}},
        {"convnextv2_large", {3, 3, 27, 3}, {192, 384, 768, 1536}},
        {"convnextv2_huge", {3, 3, 27, 3}, {352, 704, 1408, 2816}},
    };
    for (auto& v : variants) registry.add(v.name, {v.depths, v.dims, cnx::models::make_block_v2});
}
