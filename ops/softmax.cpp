// softmax / log_softmax along any dim, and cross-entropy with class indices (label smoothing as
// in PyTorch) or soft targets. Every exp is taken after subtracting the max, and sums of exp are
// accumulated in double. Cross-entropy's backward is the fused (softmax - target) / N.
#include "ops/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/autograd.h"
#include "ops/parallel.h"

namespace cnx {
namespace {

// x viewed as [A, R, B], normalised over R. For B == 1 the rows are contiguous; otherwise each
// outer index a is processed as R vectors of length B.
template <class T>
void softmax_forward(T* y, const T* x, int64_t A, int64_t R, int64_t B, bool log) {
    if (B == 1) {
        parallel_range(A, A * R >= kParallelMinCostly ? 1 : A, [&](int64_t a0, int64_t a1) {
            for (int64_t a = a0; a < a1; ++a) {
                const T* xa = x + a * R;
                T* ya = y + a * R;
                double m = -std::numeric_limits<double>::infinity(), s = 0;
                for (int64_t r = 0; r < R; ++r) m = std::max(m, (double)xa[r]);
                for (int64_t r = 0; r < R; ++r) s += std::exp((double)xa[r] - m);
                if (log) {
                    const double lse = m + std::log(s);
                    for (int64_t r = 0; r < R; ++r) ya[r] = (T)((double)xa[r] - lse);
                } else {
                    const double inv = 1.0 / s;
                    for (int64_t r = 0; r < R; ++r) ya[r] = (T)(std::exp((double)xa[r] - m) * inv);
                }
            }
        });
        return;
    }
    parallel_range(A, A * R * B >= kParallelMinCostly ? 1 : A, [&](int64_t a0, int64_t a1) {
        for (int64_t a = a0; a < a1; ++a) {
            std::vector<double> m(B, -std::numeric_limits<double>::infinity()), s(B, 0.0);
            const T* xa = x + a * R * B;
            T* ya = y + a * R * B;
            for (int64_t r = 0; r < R; ++r)
                for (int64_t b = 0; b < B; ++b) m[b] = std::max(m[b], (double)xa[r * B + b]);
            for (int64_t r = 0; r < R; ++r)
                for (int64_t b = 0; b < B; ++b) s[b] += std::exp((double)xa[r * B + b] - m[b]);
            for (int64_t b = 0; b < B; ++b) s[b] = log ? m[b] + std::log(s[b]) : 1.0 / s[b];
            for (int64_t r = 0; r < R; ++r)
                for (int64_t b = 0; b < B; ++b) {
                    double v = (double)xa[r * B + b];
                    ya[r * B + b] = (T)(log ? v - s[b] : std::exp(v - m[b]) * s[b]);
                }
        }
    });
}

// softmax:     dx = y * (g - sum_r g y)
// log_softmax: dx = g - exp(y) * sum_r g
template <class T>
void softmax_backward(T* dx, const T* g, const T* y, int64_t A, int64_t R, int64_t B, bool log) {
    parallel_range(A, A * R * B >= kParallelMinCostly ? 1 : A, [&](int64_t a0, int64_t a1) {
        for (int64_t a = a0; a < a1; ++a) {
            std::vector<double> dot(B, 0.0);
            const int64_t base = a * R * B;
            for (int64_t r = 0; r < R; ++r)
                for (int64_t b = 0; b < B; ++b) {
                    int64_t i = base + r * B + b;
                    dot[b] += log ? (double)g[i] : (double)g[i] * (double)y[i];
                }
            for (int64_t r = 0; r < R; ++r)
                for (int64_t b = 0; b < B; ++b) {
                    int64_t i = base + r * B + b;
                    dx[i] = log ? (T)((double)g[i] - std::exp((double)y[i]) * dot[b])
                                : (T)((double)y[i] * ((double)g[i] - dot[b]));
                }
        }
    });
}

Tensor softmax_impl(const char* op, const Tensor& x, int64_t dim, bool log) {
    CNX_CHECK(x.defined(), op, ": undefined input");
    const int64_t r = x.dim();
    CNX_CHECK(r >= 1, op, ": input ", x.str(), " has no dimension to normalise");
    int64_t d = dim < 0 ? dim + r : dim;
    CNX_CHECK(d >= 0 && d < r, op, ": dim ", dim, " out of range for ", x.str());
    int64_t A = 1, B = 1, R = x.size(d);
    for (int64_t i = 0; i < d; ++i) A *= x.size(i);
    for (int64_t i = d + 1; i < r; ++i) B *= x.size(i);
    Tensor y = empty_like(x);
    CNX_DISPATCH(x.dtype(), op,
                 { softmax_forward<scalar_t>(y.data<scalar_t>(), x.data<scalar_t>(), A, R, B, log); });
    if (autograd::records(op, {x})) {
        Tensor yd = y.detach();
        autograd::record(op, y, {x}, [yd, A, R, B, log, op](const Tensor& g) -> std::vector<Tensor> {
            Tensor dx = empty_like(g);
            CNX_DISPATCH(g.dtype(), op, {
                softmax_backward<scalar_t>(dx.data<scalar_t>(), g.data<scalar_t>(), yd.data<scalar_t>(), A, R, B,
                                           log);
            });
            return {dx};
        });
    }
    return y;
}

// log(sum_c exp(x[c])) of one contiguous row, in double, shifted by the row's max for stability.
template <class T>
double row_log_sum_exp(const T* x, int64_t C) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) m = std::max(m, (double)x[c]);
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += std::exp((double)x[c] - m);
    return m + std::log(s);
}

// Per row n: lse = logsumexp(x_n); logp_c = x_nc - lse. Writes p = softmax (for the backward)
// and returns sum_n sum_c q_nc (-logp_nc), where q is the target distribution: with class
// indices q = (1 - s) onehot(t) + s / C; with soft targets q = t.
template <class T>
double cross_entropy_forward(T* p, const T* x, const int64_t* targets, const T* soft, double smoothing, int64_t N,
                             int64_t C) {
    // Per-row losses summed in order afterwards: the total does not depend on the thread count.
    std::vector<double> row_loss(N);
    parallel_range(N, N * C >= kParallelMinCostly ? 1 : N, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
            const T* xn = x + n * C;
            const double lse = row_log_sum_exp(xn, C);
            double loss = 0;
            if (soft) {
                for (int64_t c = 0; c < C; ++c) loss -= (double)soft[n * C + c] * ((double)xn[c] - lse);
            } else {
                double sum_neg_logp = 0;
                for (int64_t c = 0; c < C; ++c) sum_neg_logp += lse - (double)xn[c];
                loss = (1 - smoothing) * (lse - (double)xn[targets[n]]) + smoothing * sum_neg_logp / (double)C;
            }
            for (int64_t c = 0; c < C; ++c) p[n * C + c] = (T)std::exp((double)xn[c] - lse);
            row_loss[n] = loss;
        }
    });
    double total = 0;
    for (double l : row_loss) total += l;
    return total;
}

// dx = scale * (p * sum_c q - q), scale = dloss / N. sum_c q is 1 for class indices; for soft
// targets it is kept exact, so targets that do not sum to one still get the true gradient.
template <class T>
void cross_entropy_backward(T* dx, const T* p, const int64_t* targets, const T* soft, double smoothing, int64_t N,
                            int64_t C, double scale) {
    parallel_range(N, N * C >= kParallelMinCostly ? 1 : N, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
            const T* pn = p + n * C;
            T* dn = dx + n * C;
            if (soft) {
                const T* tn = soft + n * C;
                double tsum = 0;
                for (int64_t c = 0; c < C; ++c) tsum += (double)tn[c];
                for (int64_t c = 0; c < C; ++c) dn[c] = (T)(scale * ((double)pn[c] * tsum - (double)tn[c]));
            } else {
                const double off = smoothing / (double)C;
                for (int64_t c = 0; c < C; ++c) dn[c] = (T)(scale * ((double)pn[c] - off));
                dn[targets[n]] -= (T)(scale * (1 - smoothing));
            }
        }
    });
}

// d loss / d soft_target[n, c] = -logp[n, c] / N, from the saved probabilities' logs recomputed
// stably from the logits.
template <class T>
void soft_target_grad(T* dt, const T* x, int64_t N, int64_t C, double scale) {
    for (int64_t n = 0; n < N; ++n) {
        const T* xn = x + n * C;
        const double lse = row_log_sum_exp(xn, C);
        for (int64_t c = 0; c < C; ++c) dt[n * C + c] = (T)(-scale * ((double)xn[c] - lse));
    }
}

void check_logits(const Tensor& logits) {
    CNX_CHECK(logits.defined(), "cross_entropy: undefined logits");
    CNX_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, C], got ", logits.str());
    CNX_CHECK(logits.size(0) > 0 && logits.size(1) > 0, "cross_entropy: empty logits ", logits.str());
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

Tensor cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, double label_smoothing) {
    check_logits(logits);
    const int64_t N = logits.size(0), C = logits.size(1);
    CNX_CHECK((int64_t)targets.size() == N, "cross_entropy: ", targets.size(), " targets for logits ",
              logits.str());
    for (int64_t n = 0; n < N; ++n)
        CNX_CHECK(targets[n] >= 0 && targets[n] < C, "cross_entropy: target ", targets[n], " at index ", n,
                  " is out of range for ", C, " classes");
    CNX_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing ",
              label_smoothing, " is not in [0, 1]");
    Tensor p = empty_like(logits);
    Tensor loss = Tensor::empty({}, logits.dtype());
    CNX_DISPATCH(logits.dtype(), "cross_entropy", {
        double total = cross_entropy_forward<scalar_t>(p.data<scalar_t>(), logits.data<scalar_t>(), targets.data(),
                                                       nullptr, label_smoothing, N, C);
        loss.data<scalar_t>()[0] = (scalar_t)(total / (double)N);
    });
    if (autograd::records("cross_entropy", {logits})) {
        autograd::record("cross_entropy", loss, {logits},
                         [p, targets, label_smoothing, N, C](const Tensor& g) -> std::vector<Tensor> {
                             Tensor dx = empty_like(p);
                             const double scale = g.item() / (double)N;
                             CNX_DISPATCH(p.dtype(), "cross_entropy backward", {
                                 cross_entropy_backward<scalar_t>(dx.data<scalar_t>(), p.data<scalar_t>(),
                                                                  targets.data(), nullptr, label_smoothing, N, C,
                                                                  scale);
                             });
                             return {dx};
                         });
    }
    return loss;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& soft_targets) {
    check_logits(logits);
    CNX_CHECK(soft_targets.defined() && soft_targets.shape() == logits.shape(), "cross_entropy: soft targets ",
              soft_targets.defined() ? soft_targets.str() : "undefined", " do not match logits ", logits.str());
    CNX_CHECK(soft_targets.dtype() == logits.dtype(), "cross_entropy: soft targets ", soft_targets.str(),
              " and logits ", logits.str(), " have different dtypes");
    const int64_t N = logits.size(0), C = logits.size(1);
    Tensor p = empty_like(logits);
    Tensor loss = Tensor::empty({}, logits.dtype());
    CNX_DISPATCH(logits.dtype(), "cross_entropy", {
        double total = cross_entropy_forward<scalar_t>(p.data<scalar_t>(), logits.data<scalar_t>(), nullptr,
                                                       soft_targets.data<scalar_t>(), 0.0, N, C);
        loss.data<scalar_t>()[0] = (scalar_t)(total / (double)N);
    });
    if (autograd::records("cross_entropy", {logits, soft_targets})) {
        Tensor t = soft_targets.detach();
        Tensor xd = soft_targets.requires_grad() ? logits.detach() : Tensor();
        const bool need_x = logits.requires_grad();
        autograd::record("cross_entropy", loss, {logits, soft_targets},
                         [p, t, xd, need_x, N, C](const Tensor& g) -> std::vector<Tensor> {
                             const double scale = g.item() / (double)N;
                             Tensor dx = need_x ? empty_like(p) : Tensor(), dt = xd.defined() ? empty_like(t) : Tensor();
                             CNX_DISPATCH(p.dtype(), "cross_entropy backward", {
                                 if (dx.defined())
                                     cross_entropy_backward<scalar_t>(dx.data<scalar_t>(), p.data<scalar_t>(), nullptr,
                                                                      t.data<scalar_t>(), 0.0, N, C, scale);
                                 if (dt.defined())
                                     soft_target_grad<scalar_t>(dt.data<scalar_t>(), xd.data<scalar_t>(), N, C, scale);
                             });
                             return {dx, dt};
                         });
    }
    return loss;
}

}  // namespace cnx
