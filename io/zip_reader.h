#pragma once
// A read-only ZIP reader over a byte range, written for PyTorch's .pth container: it finds the
// central directory (ZIP64 included), checks every header and offset against the buffer, and
// hands out an entry's bytes either in place (stored entries, which is what torch.save writes) or
// inflated through zlib (deflate, for archives re-zipped by other tools).
//
// Nothing here trusts the file: every size and offset is range-checked before it is used, so a
// truncated or hostile archive ends in a cnx::Error naming the problem.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace cnx::io {

// A file's bytes, memory-mapped where possible (checkpoints run to gigabytes; mapping them keeps
// stored entries zero-copy), read into memory otherwise.
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
    uint16_t method = 0;  // 0 stored, 8 deflate
    uint16_t flags = 0;
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;            // uncompressed
    uint64_t local_offset = 0;    // of the local header
    uint64_t data_offset = 0;     // of the entry's bytes, resolved from the local header
};

// An entry's bytes: a view into the archive (stored) or into an owned buffer (inflated).
struct ZipData {
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::shared_ptr<std::vector<uint8_t>> owned;
};

struct ZipOptions {
    bool verify_crc = true;                    // fuzzers turn it off to reach deeper code
    uint64_t max_entries = 1u << 20;
    uint64_t max_inflated_bytes = 1ull << 36;  // per entry; deflate can expand ~1000x
};

class ZipReader {
public:
    // `what` names the archive in error messages (usually its path). The buffer must outlive
    // the reader and every ZipData it hands out for stored entries.
    ZipReader(const uint8_t* data, size_t size, std::string what, ZipOptions options = {});

    const std::vector<ZipEntry>& entries() const { return entries_; }
    const ZipEntry* find(const std::string& name) const;  // nullptr if absent
    ZipData read(const ZipEntry& e) const;
    ZipData read(const std::string& name) const;  // throws if absent
    const std::string& what() const { return what_; }

private:
    void parse();
    void resolve_local_header(ZipEntry& e);

    const uint8_t* data_;
    size_t size_;
    std::string what_;
    ZipOptions opt_;
    std::vector<ZipEntry> entries_;
    std::unordered_map<std::string, size_t> index_;
};

// True when the bytes start like a ZIP archive (local header or empty-archive EOCD).
bool looks_like_zip(const uint8_t* data, size_t size);

}  // namespace cnx::io
