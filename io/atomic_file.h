#pragma once
// Crash-safe file replacement for weights and checkpoints: the data goes to a temporary file in
// the target's folder, is flushed and fsync'ed, then renamed over the target and the folder is
// fsync'ed. A reader sees the old file or the new one, never a torn one, even after power loss.
//
//   io::AtomicFile f(path);          // creates "<path>.tmp.<pid>.<n>" next to path
//   f.write(header.data(), header.size());
//   f.write(t.raw_data(), t.nbytes());
//   f.commit();                      // without commit (an exception), the temp file is removed
#include <cstddef>
#include <cstdio>
#include <string>

namespace cnx::io {

class AtomicFile {
public:
    explicit AtomicFile(const std::string& path);
    ~AtomicFile();  // removes the temporary file unless committed
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t bytes);
    void commit();
    const std::string& path() const { return path_; }
    const std::string& temp_path() const { return temp_; }

private:
    std::string path_, temp_;
    FILE* f_ = nullptr;
    bool committed_ = false;
};

// One-shot helper: the whole content in memory.
void atomic_write_file(const std::string& path, const void* data, size_t bytes);
void atomic_write_file(const std::string& path, const std::string& content);

}  // namespace cnx::io
