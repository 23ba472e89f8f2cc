// libFuzzer harness: the IDX reader (gzip or plain) on arbitrary bytes. read_idx takes a path,
// so the input goes into an in-memory file (memfd) opened through /proc/self/fd: the real
// reader runs unchanged, with no disk traffic. Only cnx::Error may escape, and an accepted
// array must hold exactly prod(dims) bytes.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/idx.h"

namespace {

int input_fd() {
    static int fd = memfd_create("fuzz_idx", 0);
    if (fd < 0) std::abort();
    return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const int fd = input_fd();
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) std::abort();
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    try {
        cnx::data::IdxArray a = cnx::data::read_idx(path);
        uint64_t total = 1;
        for (int64_t d : a.dims) total *= (uint64_t)d;
        if (a.dims.empty() || a.dims.size() > 8 || a.data.size() != total) std::abort();
    } catch (const cnx::Error&) {
    }
    return 0;
}
