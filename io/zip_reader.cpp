#include "io/zip_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace cnx::io {

// ---- MappedFile ----

MappedFile::MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    CNX_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        fail("cannot stat '", path, "': ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("'", path, "' is not a regular file");
    }
    size_ = (size_t)st.st_size;
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            data_ = static_cast<const uint8_t*>(p);
            mapped_ = true;
        } else {
            fallback_.resize(size_);
            size_t got = 0;
            while (got < size_) {
                ssize_t r = ::read(fd, fallback_.data() + got, size_ - got);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) {
                    ::close(fd);
                    fail("cannot read '", path, "'");
                }
                got += (size_t)r;
            }
            data_ = fallback_.data();
        }
    }
    ::close(fd);
}

MappedFile::~MappedFile() {
    if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// ---- little-endian field access, always bounds-checked by the caller's range check ----

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50,
                   kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22, kZip64LocatorSize = 20, kZip64EocdSize = 56, kCentralSize = 46,
                 kLocalSize = 30;

uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }
uint64_t rd64(const uint8_t* p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

// [off, off+len) lies inside [0, size), without overflow.
bool in_range(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

}  // namespace

bool looks_like_zip(const uint8_t* data, size_t size) {
    return size >= 4 && (rd32(data) == kLocalSig || rd32(data) == kEocdSig);
}

// ---- ZipReader ----

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string what, ZipOptions options)
    : data_(data), size_(size), what_(std::move(what)), opt_(options) {
    parse();
}

void ZipReader::parse() {
    CNX_CHECK(size_ >= kEocdSize, "zip '", what_, "': ", size_, " bytes is too small for a zip archive");
    // The end-of-central-directory record sits in the last 22 + 65535 bytes (after it, only the
    // archive comment). Scan backwards and take the first record whose comment ends the file.
    size_t lo = size_ > kEocdSize + 0xFFFF ? size_ - kEocdSize - 0xFFFF : 0;
    size_t eocd = SIZE_MAX;
    for (size_t p = size_ - kEocdSize + 1; p-- > lo;) {
        if (rd32(data_ + p) == kEocdSig && p + kEocdSize + rd16(data_ + p + 20) == size_) {
            eocd = p;
            break;
        }
    }
    CNX_CHECK(eocd != SIZE_MAX, "zip '", what_, "': no end-of-central-directory record (truncated or not a zip file)");
    const uint8_t* e = data_ + eocd;
    CNX_CHECK(rd16(e + 4) == 0 && rd16(e + 6) == 0, "zip '", what_, "': multi-disk archives are not supported");
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_offset = rd32(e + 16);
    size_t cd_end_limit = eocd;

    // ZIP64: a locator just before the EOCD points at the 64-bit record.
    if (eocd >= kZip64LocatorSize && rd32(data_ + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
        const uint8_t* loc = data_ + eocd - kZip64LocatorSize;
        uint64_t z64 = rd64(loc + 8);
        CNX_CHECK(in_range(z64, kZip64EocdSize, eocd - kZip64LocatorSize), "zip '", what_,
                  "': ZIP64 end record offset ", z64, " is outside the file");
        const uint8_t* r = data_ + z64;
        CNX_CHECK(rd32(r) == kZip64EocdSig, "zip '", what_, "': bad ZIP64 end record signature at offset ", z64);
        CNX_CHECK(rd32(r + 16) == 0 && rd32(r + 20) == 0, "zip '", what_, "': multi-disk archives are not supported");
        count = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_offset = rd64(r + 48);
        cd_end_limit = (size_t)z64;
    } else {
        CNX_CHECK(count != 0xFFFF && cd_size != 0xFFFFFFFFu && cd_offset != 0xFFFFFFFFu, "zip '", what_,
                  "': ZIP64 sizes announced but the ZIP64 locator is missing");
    }
    CNX_CHECK(in_range(cd_offset, cd_size, cd_end_limit), "zip '", what_, "': central directory (offset ", cd_offset,
              ", ", cd_size, " bytes) lies outside the file");
    CNX_CHECK(count <= opt_.max_entries, "zip '", what_, "': ", count, " entries exceeds the limit of ",
              opt_.max_entries);
    CNX_CHECK(count * kCentralSize <= cd_size, "zip '", what_, "': ", count, " entries do not fit in a ", cd_size,
              "-byte central directory");

    entries_.reserve((size_t)count);
    uint64_t pos = cd_offset, end = cd_offset + cd_size;
    for (uint64_t i = 0; i < count; ++i) {
        CNX_CHECK(in_range(pos, kCentralSize, end), "zip '", what_, "': central directory entry ", i, " is truncated");
        const uint8_t* c = data_ + pos;
        CNX_CHECK(rd32(c) == kCentralSig, "zip '", what_, "': bad central directory signature for entry ", i,
                  " at offset ", pos);
        ZipEntry z;
        z.flags = rd16(c + 8);
        z.method = rd16(c + 10);
        z.crc32 = rd32(c + 16);
        z.compressed_size = rd32(c + 20);
        z.size = rd32(c + 24);
        uint16_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
        uint16_t disk = rd16(c + 34);
        z.local_offset = rd32(c + 42);
        uint64_t var = (uint64_t)name_len + extra_len + comment_len;
        CNX_CHECK(in_range(pos + kCentralSize, var, end), "zip '", what_, "': central directory entry ", i,
                  " runs past the directory");
        z.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);

        // ZIP64 extended information: only the fields saturated in the fixed header are present.
        const uint8_t* x = c + kCentralSize + name_len;
        const uint8_t* xend = x + extra_len;
        while (xend - x >= 4) {
            uint16_t id = rd16(x), len = rd16(x + 2);
            CNX_CHECK(len <= xend - x - 4, "zip '", what_, "': extra field of '", z.name, "' overruns its header");
            if (id == 0x0001) {
                const uint8_t* f = x + 4;
                const uint8_t* fend = f + len;
                auto take = [&](uint64_t& v) {
                    CNX_CHECK(fend - f >= 8, "zip '", what_, "': ZIP64 field of '", z.name, "' is too short");
                    v = rd64(f);
                    f += 8;
                };
                if (z.size == 0xFFFFFFFFu) take(z.size);
                if (z.compressed_size == 0xFFFFFFFFu) take(z.compressed_size);
                if (z.local_offset == 0xFFFFFFFFu) take(z.local_offset);
                if (disk == 0xFFFF) {
                    CNX_CHECK(fend - f >= 4, "zip '", what_, "': ZIP64 field of '", z.name, "' is too short");
                    disk = (uint16_t)(rd32(f) != 0);
                }
            }
            x += 4 + len;
        }
        CNX_CHECK(disk == 0, "zip '", what_, "': entry '", z.name, "' is on another disk");
        CNX_CHECK(!(z.flags & 1), "zip '", what_, "': entry '", z.name, "' is encrypted");
        CNX_CHECK(z.method == 0 || z.method == 8, "zip '", what_, "': entry '", z.name, "' uses compression method ",
                  z.method, " (only stored and deflate are supported)");
        if (z.method == 0)
            CNX_CHECK(z.compressed_size == z.size, "zip '", what_, "': stored entry '", z.name, "' has size ", z.size,
                      " but compressed size ", z.compressed_size);
        resolve_local_header(z);
        CNX_CHECK(index_.emplace(z.name, entries_.size()).second, "zip '", what_, "': duplicate entry '", z.name, "'");
        entries_.push_back(std::move(z));
        pos += kCentralSize + var;
    }
}

void ZipReader::resolve_local_header(ZipEntry& z) {
    CNX_CHECK(in_range(z.local_offset, kLocalSize, size_), "zip '", what_, "': local header of '", z.name,
              "' at offset ", z.local_offset, " is outside the file");
    const uint8_t* l = data_ + z.local_offset;
    CNX_CHECK(rd32(l) == kLocalSig, "zip '", what_, "': bad local header signature for '", z.name, "' at offset ",
              z.local_offset);
    uint16_t name_len = rd16(l + 26), extra_len = rd16(l + 28);
    CNX_CHECK(in_range(z.local_offset + kLocalSize, name_len, size_) && name_len == z.name.size() &&
                  std::memcmp(l + kLocalSize, z.name.data(), name_len) == 0,
              "zip '", what_, "': local header at offset ", z.local_offset, " does not match entry '", z.name, "'");
    z.data_offset = z.local_offset + kLocalSize + name_len + extra_len;
    CNX_CHECK(in_range(z.data_offset, z.compressed_size, size_), "zip '", what_, "': data of '", z.name, "' (",
              z.compressed_size, " bytes at offset ", z.data_offset, ") runs past the end of the file (", size_,
              " bytes)");
}

const ZipEntry* ZipReader::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
}

ZipData ZipReader::read(const std::string& name) const {
    const ZipEntry* e = find(name);
    CNX_CHECK(e, "zip '", what_, "': no entry named '", name, "'");
    return read(*e);
}

ZipData ZipReader::read(const ZipEntry& e) const {
    ZipData out;
    if (e.method == 0) {
        out.data = data_ + e.data_offset;
        out.size = (size_t)e.size;
    } else {
        CNX_CHECK(e.size <= opt_.max_inflated_bytes, "zip '", what_, "': entry '", e.name, "' inflates to ", e.size,
                  " bytes, over the limit of ", opt_.max_inflated_bytes);
        // Grow the buffer as output arrives rather than trusting the declared size up front, so
        // a few bytes claiming gigabytes cannot make us allocate them.
        auto buf = std::make_shared<std::vector<uint8_t>>();
        z_stream zs{};
        CNX_CHECK(inflateInit2(&zs, -MAX_WBITS) == Z_OK, "zip: inflateInit failed");
        const uint8_t* in = data_ + e.data_offset;
        uint64_t in_left = e.compressed_size;
        int rc = Z_OK;
        while (rc != Z_STREAM_END) {
            if (zs.avail_in == 0 && in_left > 0) {
                uInt chunk = (uInt)std::min<uint64_t>(in_left, 1u << 30);
                zs.next_in = const_cast<Bytef*>(in);
                zs.avail_in = chunk;
                in += chunk;
                in_left -= chunk;
            }
            size_t have = buf->size();
            if (have >= e.size) buf->resize(have + 1);  // room to detect output beyond the declared size
            else buf->resize(std::min<uint64_t>(e.size, std::max<uint64_t>(2 * have, 1 << 16)));
            zs.next_out = buf->data() + have;
            zs.avail_out = (uInt)std::min<size_t>(buf->size() - have, 1u << 30);
            size_t before = zs.avail_out;
            rc = inflate(&zs, Z_NO_FLUSH);
            buf->resize(have + (before - zs.avail_out));
            if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) break;
            if (rc != Z_OK && rc != Z_STREAM_END) break;
            if (buf->size() > e.size) break;
        }
        inflateEnd(&zs);
        CNX_CHECK(rc == Z_STREAM_END && buf->size() == e.size, "zip '", what_, "': entry '", e.name,
                  "' is corrupt (deflate stream gives ", buf->size(), " bytes, expected ", e.size, ")");
        out.data = buf->data();
        out.size = buf->size();
        out.owned = std::move(buf);
    }
    if (opt_.verify_crc) {
        uLong crc = crc32(0L, Z_NULL, 0);
        const uint8_t* p = out.data;
        size_t left = out.size;
        while (left > 0) {
            uInt chunk = (uInt)std::min<size_t>(left, 1u << 30);
            crc = crc32(crc, p, chunk);
            p += chunk;
            left -= chunk;
        }
        CNX_CHECK((uint32_t)crc == e.crc32, "zip '", what_, "': CRC mismatch in entry '", e.name, "' (corrupt file)");
    }
    return out;
}

}  // namespace cnx::io
