// convnext info: parameter count, multiply-accumulates and stage shapes of a variant, from its
// module tree built in meta mode (shapes, no weights: even xlarge answers instantly) and a
// shape-only forward of one image that counts the multiply-accumulates.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/command.h"
#include "core/json.h"
#include "models/convnext.h"

namespace {

struct InfoOptions {
    std::string model;
    int64_t num_classes = 1000;
    int64_t in_chans = 3;
    int64_t image_size = 224;
    bool json = false;
};

std::string grouped(int64_t v) {
    std::string s = std::to_string(v), out;
    int n = 0;
    for (auto it = s.rbegin(); it != s.rend(); ++it) {
        if (n && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
        out.insert(out.begin(), *it);
        ++n;
    }
    return out;
}

std::string shape_text(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

int run_info(const InfoOptions& o) {
    using namespace cnx::models;
    ConvNeXtOptions base;
    base.num_classes = o.num_classes;
    base.in_chans = o.in_chans;
    ConvNeXtOptions opts = model_options(o.model, base);
    auto model = build_meta(opts);
    ModelCost cost = model_cost(*model, o.image_size, o.image_size);
    int64_t params = model->num_parameters();
    CNX_CHECK(params == cost.params, "info: internal parameter counts disagree (", params, " vs ", cost.params, ")");

    if (o.json) {
        nlohmann::ordered_json j;
        j["model"] = o.model;
        j["num_classes"] = o.num_classes;
        j["in_chans"] = o.in_chans;
        j["image_size"] = o.image_size;
        j["depths"] = opts.depths;
        j["dims"] = opts.dims;
        j["params"] = params;
        j["macs"] = cost.macs;
        j["gmacs"] = cost.macs / 1e9;
        j["input_shape"] = std::vector<int64_t>{1, o.image_size, o.image_size, o.in_chans};
        nlohmann::ordered_json stages = nlohmann::ordered_json::array();
        for (size_t i = 0; i < cost.stages.size(); ++i) {
            auto& s = cost.stages[i];
            nlohmann::ordered_json st;
            st["stage"] = i;
            st["depth"] = s.depth;
            st["dim"] = s.dim;
            st["output_shape"] = std::vector<int64_t>{1, s.height, s.width, s.dim};
            st["params"] = s.params;
            st["macs"] = s.macs;
            stages.push_back(st);
        }
        j["stages"] = stages;
        j["head"] = {{"output_shape", std::vector<int64_t>{1, o.num_classes}},
                     {"params", cost.head_params},
                     {"macs", cost.head_macs}};
        std::cout << dump_json(j, 2) << "\n";
        return 0;
    }

    char gm[64];
    std::snprintf(gm, sizeof gm, "%.3f", cost.macs / 1e9);
    std::cout << o.model << ": " << grouped(params) << " parameters, " << gm << " GMACs (conv + linear) at "
              << o.image_size << "x" << o.image_size << "\n"
              << "depths " << shape_text(opts.depths) << ", dims " << shape_text(opts.dims) << ", "
              << o.num_classes << " classes, input NHWC "
              << shape_text({1, o.image_size, o.image_size, o.in_chans}) << "\n\n";
    std::printf("%-6s %6s %6s  %-22s %14s %10s\n", "stage", "blocks", "dim", "output (NHWC)", "params", "GMACs");
    for (size_t i = 0; i < cost.stages.size(); ++i) {
        auto& s = cost.stages[i];
        std::printf("%-6zu %6lld %6lld  %-22s %14s %10.3f\n", i, (long long)s.depth, (long long)s.dim,
                    shape_text({1, s.height, s.width, s.dim}).c_str(), grouped(s.params).c_str(), s.macs / 1e9);
    }
    std::printf("%-6s %6s %6s  %-22s %14s %10.3f\n", "head", "", "", shape_text({1, o.num_classes}).c_str(),
                grouped(cost.head_params).c_str(), cost.head_macs / 1e9);
    return 0;
}

std::function<int()> setup_info(CLI::App& root) {
    auto* cmd = root.add_subcommand("info", "Parameter count, MACs and stage shapes of a ConvNeXt variant");
    auto o = std::make_shared<InfoOptions>();
    std::string names;
    for (auto& n : cnx::models::model_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("--model", o->model, "Variant: " + names)->required();
    cmd->add_option("--num-classes", o->num_classes, "Classes of the head (default 1000)")->check(CLI::PositiveNumber);
    cmd->add_option("--in-chans", o->in_chans, "Input channels (default 3)")->check(CLI::PositiveNumber);
    cmd->add_option("--image-size", o->image_size, "Square input side in pixels, at least 32 (default 224)")
        ->check(CLI::Range(32, 1 << 20));
    cmd->add_flag("--json", o->json, "Print JSON instead of a table");
    return [o] { return run_info(*o); };
}

}  // namespace

CONVNEXT_COMMAND(info, setup_info)
