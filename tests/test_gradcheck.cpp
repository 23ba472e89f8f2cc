// The whole gradcheck catalogue (what `convnext gradcheck` runs), and the command itself.
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_util.h"
#include "core/json.h"
#include "ops/gradcheck_cases.h"

TEST_CASE("every op in the gradcheck catalogue passes in float64 and agrees in float32") {
    for (auto& c : cnx::gradcheck_cases()) {
        auto r = cnx::run_gradcheck_case(c);
        INFO(c.op << " " << c.name << ": max rel err " << r.grad.max_rel_err << " (" << r.grad.worst
                  << "), f32 vs f64 " << r.f32_vs_f64);
        CHECK(r.pass);
        CHECK(r.grad.max_rel_err <= 1e-6);
    }
}

TEST_CASE("convnext gradcheck --json covers the required ops and exits 0") {
    auto r = cli_test::run("gradcheck --json", false);  // stdout only: the JSON
    CHECK(r.code == 0);
    auto j = cnx::parse_json(r.output);
    REQUIRE(j.is_array());
    std::set<std::string> ops;
    for (auto& e : j) {
        ops.insert(e["op"].get<std::string>());
        CHECK(e["pass"].get<bool>());
        for (auto k : {"case", "max_abs_err", "max_rel_err"}) CHECK(e.contains(k));
    }
    for (auto want : {"linear", "conv2d_patchify", "conv2d_im2col", "depthwise_conv2d", "layer_norm", "gelu", "gelu_tanh",
                      "drop_path", "add", "mul", "mean", "global_avg_pool", "softmax", "log_softmax", "cross_entropy",
                      "cross_entropy_smoothed"})
        CHECK(ops.count(want) == 1);
}

TEST_CASE("convnext gradcheck names an unknown op and exits 1") {
    auto r = cli_test::run("gradcheck --op no_such_op");
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("no_such_op") != std::string::npos);
}
