#pragma once
// What the CPU is: its name, the vector extensions the kernels choose between, and its cache
// sizes, read once from cpuid (Intel leaf 4, AMD leaf 0x8000001D) with Linux's sysfs as fallback.
// Kernels size their blocking from these figures at run time, so one binary suits every x86-64
// machine it runs on (and a build for another architecture reports what it can).
#include <cstdint>
#include <string>

namespace cnx {

struct CpuInfo {
    std::string vendor;      // "AuthenticAMD", "GenuineIntel", or "" where unknown
    std::string model_name;  // brand string, as /proc/cpuinfo's "model name"
    int family = 0, model = 0, stepping = 0;
    int64_t l1d_bytes = 0;   // per core
    int64_t l2_bytes = 0;    // per core
    int64_t l3_bytes = 0;    // the whole last-level cache one core sees (0 when there is none)
    int hardware_threads = 1;
    bool avx2_fma = false;   // AVX2 + FMA3
    bool avx512 = false;     // AVX-512 F/VL/BW/DQ, with the OS saving zmm state
    bool avx512_bf16 = false;
    bool avx512_fp16 = false;  // half-precision arithmetic (vfmadd*ph): Intel Xeons since Sapphire Rapids
    // A file-name-safe key naming this CPU model and thread count (per-CPU caches of measurements).
    std::string key() const;
    // One line for reports: "AMD EPYC (family 25 model 17), 2 threads, L1d 32 KB, L2 1024 KB, ..."
    std::string summary() const;
};

const CpuInfo& cpu_info();

// Where per-machine measurements are kept: $XDG_CACHE_HOME/convnext, else $HOME/.cache/convnext.
// Empty when neither variable is set; the directory is created on first use by the writer.
std::string cache_dir();

// CPU time of the calling thread in seconds (CLOCK_THREAD_CPUTIME_ID): kernel timings that a
// descheduling by other jobs on the machine does not move.
double thread_cpu_seconds();

}  // namespace cnx
