// libFuzzer harness: class_indices.json as predict/eval read it. read_class_indices takes a
// path, so the input goes into an in-memory file (memfd) opened through /proc/self/fd. Only
// cnx::Error may escape; an accepted file must give one name per index 0..n-1 and survive a
// write/read round trip unchanged.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image_folder.h"

namespace {

int make_fd(const char* name) {
    int fd = memfd_create(name, 0);
    if (fd < 0) std::abort();
    return fd;
}

void put(int fd, const void* data, size_t size) {
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) std::abort();
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const int in_fd = make_fd("fuzz_classes_in"), again_fd = make_fd("fuzz_classes_again");
    put(in_fd, data, size);
    std::vector<std::string> names;
    try {
        names = cnx::data::read_class_indices(fd_path(in_fd));
    } catch (const cnx::Error&) {
        return 0;
    }
    if (names.empty()) std::abort();
    // What we accept we must be able to write back and read to the same list (the JSON parser
    // has already refused invalid UTF-8, so the writer cannot throw).
    const std::string text = cnx::data::class_indices_json(names);
    put(again_fd, text.data(), text.size());
    if (cnx::data::read_class_indices(fd_path(again_fd)) != names) std::abort();
    return 0;
}
