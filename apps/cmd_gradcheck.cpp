// convnext gradcheck [--op NAME] [--json]: every op's backward against central differences.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "core/json.h"
#include "ops/gradcheck_cases.h"

namespace {

struct Options {
    std::string op;
    bool json = false;
    double tol = 1e-6;
};

std::function<int()> setup_gradcheck(CLI::App& root) {
    auto* cmd = root.add_subcommand("gradcheck", "Check every op's backward against finite differences (float64)");
    auto o = std::make_shared<Options>();
    cmd->add_option("--op", o->op, "Only this op (e.g. depthwise_conv2d)");
    cmd->add_flag("--json", o->json, "Print one JSON array instead of a table");
    cmd->add_option("--tol", o->tol, "Caffe-style tolerance |a-n| <= tol*max(|a|,|n|,1)")->capture_default_str();
    return [o]() -> int {
        auto cases = cnx::gradcheck_cases();
        std::vector<cnx::GradcheckCase> selected;
        for (auto& c : cases)
            if (o->op.empty() || c.op == o->op) selected.push_back(c);
        if (selected.empty()) {
            std::string known;
            for (auto& c : cases)
                if (known.find(c.op + ",") == std::string::npos) known += c.op + ", ";
            cnx::fail("gradcheck: no op named '", o->op, "'; known ops: ", known.substr(0, known.size() - 2));
        }
        bool all_pass = true;
        nlohmann::json out = nlohmann::json::array();
        if (!o->json)
            std::printf("%-24s %-40s %12s %12s %12s  %s\n", "op", "case", "max_abs_err", "max_rel_err", "f32_vs_f64",
                        "pass");
        for (auto& c : selected) {
            auto r = cnx::run_gradcheck_case(c, o->tol);
            all_pass = all_pass && r.pass;
            if (o->json) {
                out.push_back({{"op", r.op},
                               {"case", r.name},
                               {"max_abs_err", r.grad.max_abs_err},
                               {"max_rel_err", r.grad.max_rel_err},
                               {"f32_vs_f64", r.f32_vs_f64},
                               {"pass", r.pass}});
            } else {
                std::printf("%-24s %-40s %12.3e %12.3e %12.3e  %s\n", r.op.c_str(), r.name.c_str(),
                            r.grad.max_abs_err, r.grad.max_rel_err, r.f32_vs_f64, r.pass ? "ok" : "FAIL");
                if (!r.pass && !r.grad.worst.empty()) std::printf("    worst: %s\n", r.grad.worst.c_str());
            }
        }
        if (o->json)
            std::cout << dump_json(out) << "\n";
        else
            std::printf("%zu cases, %s\n", selected.size(), all_pass ? "all passed" : "FAILURES");
        return all_pass ? 0 : 1;
    };
}

}  // namespace

CONVNEXT_COMMAND(gradcheck, setup_gradcheck)
