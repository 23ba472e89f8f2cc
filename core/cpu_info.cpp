#include "core/cpu_info.h"

#include <time.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CNX_CPU_X86 1
#else
#define CNX_CPU_X86 0
#endif

namespace cnx {
namespace {

#if CNX_CPU_X86
struct Regs {
    unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
    Regs r;
    __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
    return r;
}

// Deterministic cache parameters (Intel leaf 4 and AMD leaf 0x8000001D share the format).
void caches_from_cpuid(unsigned leaf, CpuInfo& ci) {
    for (unsigned sub = 0; sub < 16; ++sub) {
        const Regs r = cpuid(leaf, sub);
        const unsigned type = r.a & 0x1f, level = (r.a >> 5) & 0x7;
        if (type == 0) break;
        if (type == 2) continue;  // instruction cache
        const int64_t bytes = int64_t((r.b >> 22) + 1) * (((r.b >> 12) & 0x3ff) + 1) * ((r.b & 0xfff) + 1) * (r.c + 1);
        if (level == 1) ci.l1d_bytes = bytes;
        if (level == 2) ci.l2_bytes = bytes;
        if (level == 3) ci.l3_bytes = bytes;
    }
}

void read_x86(CpuInfo& ci) {
    const Regs v = cpuid(0);
    char vendor[13] = {};
    std::memcpy(vendor, &v.b, 4), std::memcpy(vendor + 4, &v.d, 4), std::memcpy(vendor + 8, &v.c, 4);
    ci.vendor = vendor;
    const Regs f = cpuid(1);
    const unsigned base_family = (f.a >> 8) & 0xf, base_model = (f.a >> 4) & 0xf;
    ci.family = (int)(base_family == 0xf ? base_family + ((f.a >> 20) & 0xff) : base_family);
    ci.model = (int)(base_family == 0x6 || base_family == 0xf ? base_model + (((f.a >> 16) & 0xf) << 4) : base_model);
    ci.stepping = (int)(f.a & 0xf);
    const unsigned max_ext = cpuid(0x80000000).a;
    if (max_ext >= 0x80000004) {
        char brand[49] = {};
        for (unsigned i = 0; i < 3; ++i) {
            const Regs r = cpuid(0x80000002 + i);
            std::memcpy(brand + 16 * i, &r, 16);
        }
        ci.model_name = brand;
    }
    if (v.a >= 4 && ci.vendor == "GenuineIntel") caches_from_cpuid(4, ci);
    if (max_ext >= 0x8000001D && ci.vendor == "AuthenticAMD") caches_from_cpuid(0x8000001D, ci);

    __builtin_cpu_init();
    ci.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    ci.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    ci.avx512_bf16 = ci.avx512 && __builtin_cpu_supports("avx512bf16");
    // CPUID leaf 7 EDX bit 23, read directly: clang 14's __builtin_cpu_supports has no name for it.
    ci.avx512_fp16 = ci.avx512 && v.a >= 7 && (cpuid(7, 0).d >> 23 & 1u);
}
#endif

// "32K", "1024K", "32M" as sysfs writes them.
int64_t parse_size(const std::string& s) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k')) return v * 1024;
    if (end && (*end == 'M' || *end == 'm')) return v * 1024 * 1024;
    return v;
}

std::string read_line(const std::string& path) {
    std::ifstream f(path);
    std::string s;
    std::getline(f, s);
    return s;
}

void caches_from_sysfs(CpuInfo& ci) {
    for (int i = 0; i < 8; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
        if (level.empty()) break;
        if (type == "Instruction") continue;
        const int64_t bytes = parse_size(read_line(dir + "size"));
        if (level == "1" && !ci.l1d_bytes) ci.l1d_bytes = bytes;
        if (level == "2" && !ci.l2_bytes) ci.l2_bytes = bytes;
        if (level == "3" && !ci.l3_bytes) ci.l3_bytes = bytes;
    }
}

std::string trim(std::string s) {
    while (!s.empty() && std::isspace((unsigned char)s.back())) s.pop_back();
    size_t i = 0;
    while (i < s.size() && std::isspace((unsigned char)s[i])) ++i;
    return s.substr(i);
}

CpuInfo detect() {
    CpuInfo ci;
#if CNX_CPU_X86
    read_x86(ci);
#endif
    if (!ci.l1d_bytes || !ci.l2_bytes) caches_from_sysfs(ci);
    // Where nothing answers (an unusual hypervisor), the sizes of a common server core.
    if (!ci.l1d_bytes) ci.l1d_bytes = 32 * 1024;
    if (!ci.l2_bytes) ci.l2_bytes = 1024 * 1024;
    if (ci.model_name.empty()) {
        std::ifstream f("/proc/cpuinfo");
        for (std::string line; std::getline(f, line);)
            if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
                ci.model_name = line.substr(line.find(':') + 1);
                break;
            }
    }
    ci.model_name = trim(ci.model_name);
    if (ci.model_name.empty()) ci.model_name = "unknown CPU";
    const unsigned n = std::thread::hardware_concurrency();
    ci.hardware_threads = n ? (int)n : 1;
    return ci;
}

}  // namespace

std::string CpuInfo::key() const {
    std::string k;
    for (char c : model_name) k += std::isalnum((unsigned char)c) ? c : '_';
    std::ostringstream os;
    os << k << "-f" << family << "m" << model << "s" << stepping << "-t" << hardware_threads;
    return os.str();
}

std::string CpuInfo::summary() const {
    std::ostringstream os;
    os << model_name << " (family " << family << " model " << model << "), " << hardware_threads
       << " threads, L1d " << l1d_bytes / 1024 << " KB, L2 " << l2_bytes / 1024 << " KB, L3 " << l3_bytes / 1024
       << " KB, AVX-512 " << (avx512 ? "yes" : "no") << ", AVX512_BF16 " << (avx512_bf16 ? "yes" : "no")
       << ", AVX512_FP16 " << (avx512_fp16 ? "yes" : "no");
    return os.str();
}

const CpuInfo& cpu_info() {
    static const CpuInfo ci = detect();
    return ci;
}

std::string cache_dir() {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    if (xdg && *xdg) return std::string(xdg) + "/convnext";
    const char* home = std::getenv("HOME");
    if (home && *home) return std::string(home) + "/.cache/convnext";
    return "";
}

double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

}  // namespace cnx
