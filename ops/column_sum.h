#pragma once
// The one way the library adds many rows into one: bias, LayerNorm and layer-scale gradients,
// sum/mean over leading dims, global average pooling.
//
// x is seen as `groups` independent blocks of `rows` rows of `width` values. Rows are cut into
// chunks whose length depends only on the sizes, never on the thread count; each chunk adds its
// rows into its own row of double partial sums, and the partials are then added in chunk order.
// So the result is the same for any number of threads, and float sums over hundreds of thousands
// of rows keep their accuracy.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "core/dtype.h"
#include "ops/parallel.h"

namespace cnx {

// Rows per chunk: about 16K values, at least 64 rows.
inline int64_t column_sum_chunk(int64_t width) { return std::max<int64_t>(64, 16384 / std::max<int64_t>(width, 1)); }

// acc[j] += rows[r * stride + j] for r < nrows, j < n: the usual body of a visit. (Adding two or
// four rows per pass over acc measured slower on large inputs: more memory streams.)
template <class T>
inline void add_rows(double* acc, const T* rows, int64_t nrows, int64_t stride, int64_t n) {
    for (int64_t r = 0; r < nrows; ++r) {
        const T* a = rows + r * stride;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) acc[j] += (double)a[j];
    }
}

// The same over rows stored in bfloat16 (widened exactly).
inline void add_rows(double* acc, const BFloat16* rows, int64_t nrows, int64_t stride, int64_t n) {
    for (int64_t r = 0; r < nrows; ++r) {
        const BFloat16* a = rows + r * stride;
        for (int64_t j = 0; j < n; ++j) acc[j] += (double)bf16_to_float(a[j]);
    }
}

// out[g * width + j] = (T)(scale * sum over the rows of group g of what visit adds to acc[j]).
// visit(g, r0, r1, acc) is called once per chunk: rows [r0, r1) of group g, acc a zeroed
// double[width] it adds those rows into (it may also write per-row results, e.g. an input
// gradient, since every row is visited exactly once). Chunks run in parallel.
template <class T, class Visit>
void column_sums(int64_t groups, int64_t rows, int64_t width, T* out, double scale, const Visit& visit) {
    if (groups <= 0) return;
    // Many groups already spread over the threads: one chunk each.
    const int64_t chunk = groups >= 8 ? std::max<int64_t>(rows, 1) : column_sum_chunk(width);
    const int64_t nchunks = (rows + chunk - 1) / chunk;
    std::unique_ptr<double[]> partial(new double[std::max<int64_t>(groups * nchunks * width, 1)]);
    const int64_t units = groups * nchunks;
    parallel_range(units, groups * rows * width >= kParallelMin ? 1 : units, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t g = u / nchunks, k = u % nchunks;
            double* acc = partial.get() + u * width;
            std::fill(acc, acc + width, 0.0);
            visit(g, k * chunk, std::min(rows, (k + 1) * chunk), acc);
        }
    });
    parallel_range(groups, groups * width >= kParallelMin ? 1 : groups, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
            double* p = partial.get() + g * nchunks * width;
            T* o = out + g * width;
            if (nchunks == 0) {  // no rows: every sum is 0 (times scale: a mean of nothing is NaN)
                std::fill(o, o + width, (T)(0.0 * scale));
                continue;
            }
            for (int64_t k = 1; k < nchunks; ++k) {
                const double* pk = p + k * width;
#pragma omp simd
                for (int64_t j = 0; j < width; ++j) p[j] += pk[j];
            }
            for (int64_t j = 0; j < width; ++j) o[j] = (T)(p[j] * scale);
        }
    });
}

}  // namespace cnx
