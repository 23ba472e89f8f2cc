#pragma once
// Read-only access to the ZIP container of PyTorch's .pth files, through libzip (a maintained,
// continuously fuzzed library) over a byte range already in memory: no copy of the archive is
// made, and each entry is read straight into the caller's buffer.
//
// libzip opens with ZIP_CHECKCONS, so every local header is checked against the central
// directory and every entry's data against the file's bounds before anything is read; entries
// are stored or deflate, never encrypted, names unique. Its errors are turned into cnx::Error
// messages naming the archive and the entry.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

struct zip;

namespace cnx::io {

// A file's bytes, memory-mapped where possible (checkpoints run to gigabytes; mapping them
// avoids a second copy), read into memory otherwise.
class MappedFile {
public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    std::vector<uint8_t> fallback_;
};

struct ZipEntry {
    std::string name;
    uint64_t index = 0;   // libzip's
    uint16_t method = 0;  // 0 stored, 8 deflate
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;    // uncompressed
};

struct ZipOptions {
    // Off: a CRC-32 mismatch is let through, so fuzzers and byte-flip tests reach the pickle
    // and tensor code behind the container.
    bool verify_crc = true;
    uint64_t max_entries = 1u << 20;
    uint64_t max_inflated_bytes = 1ull << 36;  // per entry; deflate can expand ~1000x
};

class ZipReader {
public:
    // `what` names the archive in error messages (usually its path). The buffer must outlive
    // the reader.
    ZipReader(const uint8_t* data, size_t size, std::string what, ZipOptions options = {});
    ZipReader(const ZipReader&) = delete;
    ZipReader& operator=(const ZipReader&) = delete;

    const std::vector<ZipEntry>& entries() const { return entries_; }
    const ZipEntry* find(const std::string& name) const;  // nullptr if absent
    std::vector<uint8_t> read(const ZipEntry& e) const;
    std::vector<uint8_t> read(const std::string& name) const;  // throws if absent
    // Exactly e.size bytes into dst (e.g. a tensor's buffer), with the same checks as read().
    void read_into(const ZipEntry& e, void* dst) const;
    const std::string& what() const { return what_; }

private:
    struct Discard {
        void operator()(struct zip* archive) const;
    };
    std::string what_;
    ZipOptions opt_;
    std::unique_ptr<struct zip, Discard> archive_;  // closed even when the constructor throws
    std::vector<ZipEntry> entries_;
    std::unordered_map<std::string, size_t> index_;
};

// True when the bytes start like a ZIP archive (local header or empty-archive EOCD).
bool looks_like_zip(const uint8_t* data, size_t size);

}  // namespace cnx::io
