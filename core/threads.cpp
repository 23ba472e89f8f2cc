#include "core/threads.h"

#include <omp.h>

#include <thread>

extern "C" void openblas_set_num_threads(int);

namespace cnx {
namespace {
int g_threads = 0;
}
int hardware_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n ? (int)n : 1;
}
void set_num_threads(int n) {
    if (n <= 0) n = hardware_threads();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}
int get_num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }
}  // namespace cnx
