// Unary elementwise math. Each op is a small struct: the forward y = f(x), and the input gradient
// from the output gradient and one saved tensor (the input, or the output where the derivative is
// cheaper from it: exp, sigmoid, tanh, sqrt, rsqrt). One kernel pair runs them all.
#include "ops/pointwise.h"

#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "ops/parallel.h"
#include "ops/saved.h"

namespace cnx {
namespace {

struct Params {
    double a = 0, b = 0;  // pow: exponent a; clamp: bounds [a, b]
};

// Ops whose backward reads the output set kSavesOutput; the others read the input.
struct SqrtOp {
    static constexpr const char* kName = "sqrt";
    static constexpr bool kSavesOutput = true;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params&) { return std::sqrt(x); }
    template <class T> static T grad(T g, T y, const Params&) { return g * (T(0.5) / y); }
};
struct RsqrtOp {
    static constexpr const char* kName = "rsqrt";
    static constexpr bool kSavesOutput = true;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params&) { return T(1) / std::sqrt(x); }
    template <class T> static T grad(T g, T y, const Params&) { return g * (T(-0.5) * y * y * y); }
};
struct PowOp {
    static constexpr const char* kName = "pow";
    static constexpr bool kSavesOutput = false;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params& p) { return std::pow(x, (T)p.a); }
    template <class T> static T grad(T g, T x, const Params& p) {
        return p.a == 0 ? T(0) : g * ((T)p.a * std::pow(x, (T)(p.a - 1)));
    }
};
struct ExpOp {
    static constexpr const char* kName = "exp";
    static constexpr bool kSavesOutput = true;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params&) { return std::exp(x); }
    template <class T> static T grad(T g, T y, const Params&) { return g * y; }
};
struct LogOp {
    static constexpr const char* kName = "log";
    static constexpr bool kSavesOutput = false;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params&) { return std::log(x); }
    template <class T> static T grad(T g, T x, const Params&) { return g / x; }
};
struct AbsOp {
    static constexpr const char* kName = "abs";
    static constexpr bool kSavesOutput = false;
    static constexpr int64_t kParallelFrom = kParallelMin;
    template <class T> static T f(T x, const Params&) { return std::fabs(x); }
    template <class T> static T grad(T g, T x, const Params&) { return x > 0 ? g : x < 0 ? -g : T(0); }
};
struct ReluOp {
    static constexpr const char* kName = "relu";
    static constexpr bool kSavesOutput = false;
    static constexpr int64_t kParallelFrom = kParallelMin;
    template <class T> static T f(T x, const Params&) { return x < T(0) ? T(0) : x; }  // NaN stays NaN
    template <class T> static T grad(T g, T x, const Params&) { return x > T(0) ? g : T(0); }
};
struct SigmoidOp {
    static constexpr const char* kName = "sigmoid";
    static constexpr bool kSavesOutput = true;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    // exp of a non-positive number only: no overflow for large |x|.
    template <class T> static T f(T x, const Params&) {
        if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
        const T e = std::exp(x);
        return e / (T(1) + e);
    }
    template <class T> static T grad(T g, T y, const Params&) { return g * (y * (T(1) - y)); }
};
struct TanhOp {
    static constexpr const char* kName = "tanh";
    static constexpr bool kSavesOutput = true;
    static constexpr int64_t kParallelFrom = kParallelMinCostly;
    template <class T> static T f(T x, const Params&) { return std::tanh(x); }
    template <class T> static T grad(T g, T y, const Params&) { return g * (T(1) - y * y); }
};
struct ClampOp {
    static constexpr const char* kName = "clamp";
    static constexpr bool kSavesOutput = false;
    static constexpr int64_t kParallelFrom = kParallelMin;
    template <class T> static T f(T x, const Params& p) {
        const T lo = (T)p.a, hi = (T)p.b;
        const T y = x < lo ? lo : x;  // NaN compares false and stays NaN
        return y > hi ? hi : y;
    }
    template <class T> static T grad(T g, T x, const Params& p) { return x >= (T)p.a && x <= (T)p.b ? g : T(0); }
};

// y[i] = f(x[i])
template <class Op, class T>
void unary_forward(T* y, const T* x, int64_t n, const Params& p) {
    parallel_range(n, n >= Op::kParallelFrom ? 4096 : n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) y[i] = Op::f(x[i], p);
    });
}

// dx[i] = the input gradient from g[i] and saved[i] (x[i] or y[i])
template <class Op, class T>
void unary_backward(T* dx, const T* g, const T* saved, int64_t n, const Params& p) {
    parallel_range(n, n >= Op::kParallelFrom ? 4096 : n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) dx[i] = Op::grad(g[i], saved[i], p);
    });
}

template <class Op>
Tensor unary(const Tensor& x, const Params& p = {}) {
    CNX_CHECK(x.defined(), Op::kName, ": undefined input");
    Tensor y = empty_like(x);
    CNX_DISPATCH(x.dtype(), Op::kName,
                 { unary_forward<Op, scalar_t>(y.data<scalar_t>(), x.data<scalar_t>(), x.numel(), p); });
    if (autograd::records(Op::kName, {x})) {
        const SavedTensor ss = save_for_backward(Op::kSavesOutput ? y : x);
        autograd::record(Op::kName, y, {x}, [ss, p](const Tensor& g) -> std::vector<Tensor> {
            const Tensor saved = ss.get();
            Tensor dx = empty_like(g);
            CNX_DISPATCH(g.dtype(), Op::kName, {
                unary_backward<Op, scalar_t>(dx.data<scalar_t>(), g.data<scalar_t>(), saved.data<scalar_t>(),
                                             g.numel(), p);
            });
            return {dx};
        });
    }
    return y;
}

}  // namespace

Tensor sqrt(const Tensor& x) { return unary<SqrtOp>(x); }
Tensor rsqrt(const Tensor& x) { return unary<RsqrtOp>(x); }
Tensor pow(const Tensor& x, double exponent) { return unary<PowOp>(x, {exponent, 0}); }
Tensor exp(const Tensor& x) { return unary<ExpOp>(x); }
Tensor log(const Tensor& x) { return unary<LogOp>(x); }
Tensor abs(const Tensor& x) { return unary<AbsOp>(x); }
Tensor relu(const Tensor& x) { return unary<ReluOp>(x); }
Tensor sigmoid(const Tensor& x) { return unary<SigmoidOp>(x); }
Tensor tanh(const Tensor& x) { return unary<TanhOp>(x); }

Tensor clamp(const Tensor& x, double lo, double hi) {
    CNX_CHECK(!std::isnan(lo) && !std::isnan(hi), "clamp: bounds ", lo, " and ", hi, " must not be NaN");
    return unary<ClampOp>(x, {lo, hi});
}

}  // namespace cnx
