#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace cnx::io {
namespace {

std::string errno_str() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

// The rename is only durable once the directory entry is on disk.
void fsync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;  // some filesystems refuse to open directories; the data itself is synced
    ::fsync(fd);
    ::close(fd);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
    CNX_CHECK(!path.empty(), "write: empty file name");
    static std::atomic<unsigned> counter{0};
    temp_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    f_ = std::fopen(temp_.c_str(), "wb");
    CNX_CHECK(f_ != nullptr, "cannot write ", path, ": ", errno_str());
}

AtomicFile::~AtomicFile() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
    CNX_CHECK(f_ != nullptr && !committed_, "write ", path_, ": file already committed");
    if (bytes == 0) return;
    CNX_CHECK(std::fwrite(data, 1, bytes, f_) == bytes, "cannot write ", path_, ": ", errno_str());
}

void AtomicFile::commit() {
    CNX_CHECK(f_ != nullptr && !committed_, "write ", path_, ": file already committed");
    bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
    std::string why = ok ? "" : errno_str();
    ok = (std::fclose(f_) == 0) && ok;
    f_ = nullptr;
    CNX_CHECK(ok, "cannot write ", path_, ": ", why.empty() ? errno_str() : why);
    CNX_CHECK(std::rename(temp_.c_str(), path_.c_str()) == 0, "cannot write ", path_, ": rename from ", temp_,
              " failed: ", errno_str());
    committed_ = true;
    fsync_dir(parent_dir(path_));
}

void atomic_write_file(const std::string& path, const void* data, size_t bytes) {
    AtomicFile f(path);
    f.write(data, bytes);
    f.commit();
}

void atomic_write_file(const std::string& path, const std::string& content) {
    atomic_write_file(path, content.data(), content.size());
}

}  // namespace cnx::io
