#pragma once
// One knob for both thread pools: OpenMP (our kernels) and OpenBLAS (GEMM). GEMMs are called
// outside OpenMP regions, so the two never run at once and never oversubscribe the cores.
namespace cnx {
void set_num_threads(int n);  // n <= 0: all cores
int get_num_threads();
int hardware_threads();
}  // namespace cnx
