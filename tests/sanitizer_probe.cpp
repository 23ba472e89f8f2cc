// Built only in the sanitizer build (CONVNEXT_SANITIZE), as the CTest "sanitizer_probe": proves that
// the library is instrumented although the tests' own code is not (CMakeLists.txt). It hands a
// library routine a buffer one element short; the test passes only if AddressSanitizer reports the
// library's read past its end. Were the library built without -fsanitize, the read would go
// unnoticed, this program would print "no report" and exit 0, and the test would fail.
#include <cstdio>
#include <vector>

#include "ops/gemm.h"

int main() {
    const int64_t rows = 3, cols = 17;
    std::vector<float> a(rows * cols - 1, 1.0f);
    std::vector<float> sums(cols);
    cnx::sum_rows<float>(a.data(), rows, cols, sums.data());
    std::printf("no report: the library read past the buffer unchecked (%g)\n", sums[cols - 1]);
    return 0;
}
