#include "ops/gradcheck_cases.h"

#include "core/rng.h"
#include "ops/fused.h"
#include "ops/fused_grn.h"
#include "ops/ops.h"
#include "ops/saved.h"

namespace cnx {
namespace {

struct CaseBuilder {
    Generator gen;
    std::vector<GradcheckCase> cases;
    explicit CaseBuilder(uint64_t seed) : gen(seed) {}
    Tensor r(const Shape& s) { return randn(s, DType::F64, &gen); }
    // Values away from zero where the op has a kink-free but fast-changing region is not needed;
    // positive inputs for div's denominator.
    Tensor pos(const Shape& s) {
        Tensor t = rand(s, DType::F64, &gen);
        add_inplace(t, full(s, 0.5, DType::F64));
        return t;
    }
    void add(const std::string& op, const std::string& name, TensorFn fn, std::vector<Tensor> in,
             std::vector<int> check = {}) {
        cases.push_back({op, name, std::move(fn), std::move(in), std::move(check)});
    }
};

std::vector<int64_t> labels(int64_t n, int64_t classes) {
    std::vector<int64_t> t(n);
    for (int64_t i = 0; i < n; ++i) t[i] = (i * 3 + 1) % classes;
    return t;
}

}  // namespace

std::vector<GradcheckCase> gradcheck_cases(uint64_t seed) {
    CaseBuilder b(seed);
    using V = const std::vector<Tensor>&;

    b.add("matmul", "a[2,3,5] b[5,4]", [](V x) { return matmul(x[0], x[1]); }, {b.r({2, 3, 5}), b.r({5, 4})});
    b.add("linear", "x[3,5,7] w[4,7] bias", [](V x) { return linear(x[0], x[1], x[2]); },
          {b.r({3, 5, 7}), b.r({4, 7}), b.r({4})});
    b.add("linear", "x[2,3,6] w[9,6] no bias", [](V x) { return linear(x[0], x[1]); }, {b.r({2, 3, 6}), b.r({9, 6})});

    b.add("conv2d_patchify", "x[2,8,8,3] w[5,3,4,4] s4", [](V x) { return conv2d(x[0], x[1], x[2], 4, 0, 1); },
          {b.r({2, 8, 8, 3}), b.r({5, 3, 4, 4}), b.r({5})});
    b.add("conv2d_patchify", "x[2,7,9,3] w[4,3,2,2] s2 (ragged edge)",
          [](V x) { return conv2d(x[0], x[1], Tensor(), 2, 0, 1); }, {b.r({2, 7, 9, 3}), b.r({4, 3, 2, 2})});
    b.add("conv2d_im2col", "x[2,7,9,3] w[5,3,3,3] s2 p1", [](V x) { return conv2d(x[0], x[1], x[2], 2, 1, 1); },
          {b.r({2, 7, 9, 3}), b.r({5, 3, 3, 3}), b.r({5})});
    b.add("conv2d_im2col", "x[2,6,5,4] w[6,2,3,3] p1 groups2",
          [](V x) { return conv2d(x[0], x[1], x[2], 1, 1, 2); }, {b.r({2, 6, 5, 4}), b.r({6, 2, 3, 3}), b.r({6})});

    b.add("depthwise_conv2d", "x[2,9,11,5] w[5,1,7,7] p3",
          [](V x) { return depthwise_conv2d(x[0], x[1], x[2], 1, 3); },
          {b.r({2, 9, 11, 5}), b.r({5, 1, 7, 7}), b.r({5})});
    b.add("depthwise_conv2d", "x[2,9,7,3] w[3,1,3,3] s2 p1",
          [](V x) { return depthwise_conv2d(x[0], x[1], Tensor(), 2, 1); }, {b.r({2, 9, 7, 3}), b.r({3, 1, 3, 3})});

    b.add("convnext_mlp", "u[2,3,5,6] H10 biases gamma residual",
          [](V x) { return convnext_mlp(x[0], x[1], x[2], x[3], x[4], x[5], x[6]); },
          {b.r({2, 3, 5, 6}), b.r({10, 6}), b.r({10}), b.r({6, 10}), b.r({6}), b.r({6}), b.r({2, 3, 5, 6})});
    b.add("convnext_mlp", "u[3,7] H5 no biases, gamma or residual",
          [](V x) { return convnext_mlp(x[0], x[1], Tensor(), x[2], Tensor(), Tensor(), Tensor()); },
          {b.r({3, 7}), b.r({5, 7}), b.r({7, 5})});

    // A V1 block whose depthwise-conv and layer-norm outputs are not kept but regenerated in the
    // backward (ops/saved.h): the chain of regenerators, not just each op.
    b.add("recompute", "dwconv k7 -> layer_norm -> convnext_mlp x[2,5,6,4] H8, outputs regenerated",
          [](V x) {
              RecomputeGuard cheap(Recompute::Cheap);
              Tensor u = layer_norm(depthwise_conv2d(x[0], x[1], x[2], 1, 3), x[3], x[4], 1e-6);
              return convnext_mlp(u, x[5], x[6], x[7], x[8], x[9], x[0]);
          },
          {b.r({2, 5, 6, 4}), b.r({4, 1, 7, 7}), b.r({4}), b.r({4}), b.r({4}), b.r({8, 4}), b.r({8}), b.r({4, 8}),
           b.r({4}), b.r({4})});

    b.add("convnextv2_mlp", "u[2,3,5,6] K10 biases, GRN [1,1,1,10], residual",
          [](V x) { return convnextv2_mlp(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]); },
          {b.r({2, 3, 5, 6}), b.r({10, 6}), b.r({10}), b.r({1, 1, 1, 10}), b.r({1, 1, 1, 10}), b.r({6, 10}),
           b.r({6}), b.r({2, 3, 5, 6})});
    b.add("convnextv2_mlp", "u[3,1,4,5] K7 no biases or residual, GRN [7]",
          [](V x) { return convnextv2_mlp(x[0], x[1], Tensor(), x[2], x[3], x[4], Tensor(), Tensor()); },
          {b.r({3, 1, 4, 5}), b.r({7, 5}), b.r({7}), b.r({7}), b.r({5, 7})});

    b.add("grn", "x[2,5,7,6] gamma, beta [1,1,1,6]", [](V x) { return grn(x[0], x[1], x[2]); },
          {b.r({2, 5, 7, 6}), b.r({1, 1, 1, 6}), b.r({1, 1, 1, 6})});
    b.add("grn", "x[3,3,1,9] gamma, beta [9]", [](V x) { return grn(x[0], x[1], x[2]); },
          {b.r({3, 3, 1, 9}), b.r({9}), b.r({9})});

    b.add("layer_norm", "x[2,3,5,7] affine", [](V x) { return layer_norm(x[0], x[1], x[2], 1e-6); },
          {b.r({2, 3, 5, 7}), b.r({7}), b.r({7})});
    b.add("layer_norm", "x[3,17] no affine", [](V x) { return layer_norm(x[0], Tensor(), Tensor(), 1e-5); },
          {b.r({3, 17})});

    b.add("gelu", "x[2,3,5,7] erf", [](V x) { return gelu(x[0], false); }, {b.r({2, 3, 5, 7})});
    b.add("gelu_tanh", "x[2,3,5,7] tanh", [](V x) { return gelu(x[0], true); }, {b.r({2, 3, 5, 7})});
    b.add("drop_path", "x[6,3,3,5] p0.3 train", [](V x) { return drop_path(x[0], 0.3, true); }, {b.r({6, 3, 3, 5})});

    b.add("add", "a[2,3,5] + b[5]", [](V x) { return add(x[0], x[1]); }, {b.r({2, 3, 5}), b.r({5})});
    b.add("add", "a[2,1,5] + b[3,1]", [](V x) { return add(x[0], x[1]); }, {b.r({2, 1, 5}), b.r({3, 1})});
    b.add("sub", "a[3,5] - b[2,1,5]", [](V x) { return sub(x[0], x[1]); }, {b.r({3, 5}), b.r({2, 1, 5})});
    b.add("mul", "a[2,3,5] * b[2,3,5]", [](V x) { return mul(x[0], x[1]); }, {b.r({2, 3, 5}), b.r({2, 3, 5})});
    b.add("mul", "a[4,1,3] * b[1,5,1]", [](V x) { return mul(x[0], x[1]); }, {b.r({4, 1, 3}), b.r({1, 5, 1})});
    b.add("div", "a[2,3,5] / b[5]", [](V x) { return div(x[0], x[1]); }, {b.r({2, 3, 5}), b.pos({5})});
    b.add("channel_scale", "x[2,3,5,7] * gamma[7]", [](V x) { return channel_scale(x[0], x[1]); },
          {b.r({2, 3, 5, 7}), b.r({7})});

    b.add("sum", "x[2,3,5] all", [](V x) { return sum(x[0]); }, {b.r({2, 3, 5})});
    b.add("mean", "x[2,3,5,7] dims{1,2}", [](V x) { return mean(x[0], {1, 2}); }, {b.r({2, 3, 5, 7})});
    b.add("mean", "x[2,3,5] dim -1 keepdim", [](V x) { return mean(x[0], {-1}, true); }, {b.r({2, 3, 5})});
    b.add("global_avg_pool", "x[2,3,5,7]", [](V x) { return global_avg_pool(x[0]); }, {b.r({2, 3, 5, 7})});
    b.add("permute", "x[2,3,5,7] (0,3,1,2)", [](V x) { return permute(x[0], {0, 3, 1, 2}); }, {b.r({2, 3, 5, 7})});
    b.add("transpose", "x[3,5] (0,1)", [](V x) { return transpose(x[0], 0, 1); }, {b.r({3, 5})});

    // Primitives a new layer is composed from (ops/pointwise, elementwise, reduce, shape).
    b.add("sqrt", "x[2,3,5] positive", [](V x) { return sqrt(x[0]); }, {b.pos({2, 3, 5})});
    b.add("rsqrt", "x[2,3,5] positive", [](V x) { return rsqrt(x[0]); }, {b.pos({2, 3, 5})});
    b.add("pow", "x[2,3,5] ^ 3 (any sign)", [](V x) { return pow(x[0], 3.0); }, {b.r({2, 3, 5})});
    b.add("pow", "x[3,4] ^ -1.5 positive", [](V x) { return pow(x[0], -1.5); }, {b.pos({3, 4})});
    b.add("exp", "x[2,3,5]", [](V x) { return exp(x[0]); }, {b.r({2, 3, 5})});
    b.add("log", "x[2,3,5] positive", [](V x) { return log(x[0]); }, {b.pos({2, 3, 5})});
    b.add("abs", "x[2,3,5]", [](V x) { return abs(x[0]); }, {b.r({2, 3, 5})});
    b.add("relu", "x[2,3,5]", [](V x) { return relu(x[0]); }, {b.r({2, 3, 5})});
    b.add("sigmoid", "x[2,3,5] * 4", [](V x) { return sigmoid(x[0] * 4.0); }, {b.r({2, 3, 5})});
    b.add("tanh", "x[2,3,5]", [](V x) { return tanh(x[0]); }, {b.r({2, 3, 5})});
    b.add("clamp", "x[3,7] to [-0.5, 0.7]", [](V x) { return clamp(x[0], -0.5, 0.7); }, {b.r({3, 7})});
    b.add("maximum", "a[2,3,5] b[5]", [](V x) { return maximum(x[0], x[1]); }, {b.r({2, 3, 5}), b.r({5})});
    b.add("minimum", "a[4,1,3] b[1,5,1]", [](V x) { return minimum(x[0], x[1]); }, {b.r({4, 1, 3}), b.r({1, 5, 1})});
    b.add("scalar_ops", "1 - x, 1 / x, x / 2, 2 + x, max(x, 0.3)",
          [](V x) { return (1.0 - x[0]) * (1.0 / x[0]) + x[0] / 2.0 + (2.0 + x[0]) * maximum(x[0], 0.3); },
          {b.pos({3, 4})});
    b.add("amax", "x[2,3,5] dim 1", [](V x) { return amax(x[0], {1}); }, {b.r({2, 3, 5})});
    b.add("amax", "x[2,3,4,5] dims{0,2} keepdim", [](V x) { return amax(x[0], {0, 2}, true); }, {b.r({2, 3, 4, 5})});
    b.add("amin", "x[3,5] all", [](V x) { return amin(x[0]); }, {b.r({3, 5})});
    b.add("var", "x[2,3,5,7] dims{1,2} keepdim", [](V x) { return var(x[0], {1, 2}, true); }, {b.r({2, 3, 5, 7})});
    b.add("var", "x[4,6] all, correction 0", [](V x) { return var(x[0], {}, false, 0); }, {b.r({4, 6})});
    b.add("sum_to_size", "x[2,3,5] -> [3,1]", [](V x) { return sum_to_size(x[0], {3, 1}); }, {b.r({2, 3, 5})});
    b.add("reshape", "x[2,3,5] -> [5,-1]", [](V x) { return reshape(x[0], {5, -1}); }, {b.r({2, 3, 5})});
    b.add("unsqueeze", "x[3,5] dim -1", [](V x) { return unsqueeze(x[0], -1) * x[1]; }, {b.r({3, 5}), b.r({4})});
    b.add("expand", "x[3,1,5] -> [2,3,4,5]", [](V x) { return expand(x[0], {2, 3, 4, 5}); }, {b.r({3, 1, 5})});
    b.add("narrow", "x[4,7,3] dim 1 [2,6)", [](V x) { return narrow(x[0], 1, 2, 4); }, {b.r({4, 7, 3})});
    b.add("cat", "[2,3,5] [2,1,5] [2,4,5] dim 1", [](V x) { return cat({x[0], x[1], x[2]}, 1); },
          {b.r({2, 3, 5}), b.r({2, 1, 5}), b.r({2, 4, 5})});
    b.add("split", "x[7,3] by 3, pieces reordered", [](V x) {
              auto p = split(x[0], 3);
              return cat({p[2], p[0] * 2.0, p[1]});
          }, {b.r({7, 3})});
    b.add("split", "x[2,9] sizes {4,0,5} dim -1", [](V x) {
              auto p = split_with_sizes(x[0], {4, 0, 5}, -1);
              return cat({p[2], p[1], p[0] * p[0]}, 1);
          }, {b.r({2, 9})});

    b.add("softmax", "x[3,7] dim -1", [](V x) { return softmax(x[0], -1); }, {b.r({3, 7})});
    b.add("softmax", "x[3,4,5] dim 1", [](V x) { return softmax(x[0], 1); }, {b.r({3, 4, 5})});
    b.add("log_softmax", "x[3,7] dim -1", [](V x) { return log_softmax(x[0], -1); }, {b.r({3, 7})});
    b.add("log_softmax", "x[4,3] dim 0", [](V x) { return log_softmax(x[0], 0); }, {b.r({4, 3})});
    b.add("cross_entropy", "logits[5,7] labels",
          [](V x) { return cross_entropy(x[0], labels(5, 7)); }, {b.r({5, 7})});
    b.add("cross_entropy_smoothed", "logits[5,7] labels smoothing 0.1",
          [](V x) { return cross_entropy(x[0], labels(5, 7), 0.1); }, {b.r({5, 7})});
    b.add("cross_entropy_soft", "logits[4,6] soft targets",
          [](V x) { return cross_entropy(x[0], softmax(x[1], -1).detach()); }, {b.r({4, 6}), b.r({4, 6})}, {0});
    return b.cases;
}

GradcheckReport run_gradcheck_case(const GradcheckCase& c, double tol, double f32_tol) {
    GradcheckReport rep;
    rep.op = c.op;
    rep.name = c.name;
    GradcheckOptions opts;
    opts.tol = tol;
    opts.check_inputs = c.check_inputs;
    rep.grad = gradcheck(c.fn, c.inputs, opts);
    rep.f32_vs_f64 = forward_f32_vs_f64(c.fn, c.inputs);
    rep.pass = rep.grad.pass && rep.f32_vs_f64 <= f32_tol;
    return rep;
}

}  // namespace cnx
