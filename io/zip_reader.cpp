#include "io/zip_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <cerrno>
#include <cstring>
#include <memory>

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

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kEocdSig = 0x06054b50;

uint32_t rd32(const uint8_t* p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }

struct ZipErrorGuard {
    zip_error_t e;
    ZipErrorGuard() { zip_error_init(&e); }
    ~ZipErrorGuard() { zip_error_fini(&e); }
};

// Opens `data` as an archive; nullptr with `err` set on failure. libzip takes the source over
// once the open succeeds.
zip_t* open_archive(const uint8_t* data, size_t size, int flags, zip_error_t* err) {
    zip_source_t* src = zip_source_buffer_create(data, size, /*freep=*/0, err);
    if (!src) return nullptr;
    zip_t* za = zip_open_from_source(src, ZIP_RDONLY | flags, err);
    if (!za) zip_source_free(src);
    return za;
}

}  // namespace

bool looks_like_zip(const uint8_t* data, size_t size) {
    return size >= 4 && (rd32(data) == kLocalSig || rd32(data) == kEocdSig);
}

// ---- ZipReader ----

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string what, ZipOptions options)
    : what_(std::move(what)), opt_(options) {
    // libzip opens an empty buffer as an empty archive; a file needs at least the end record.
    CNX_CHECK(size >= 22, "zip '", what_, "': ", size, " bytes is too small for a zip archive");
    ZipErrorGuard err;
    archive_.reset(open_archive(data, size, ZIP_CHECKCONS, &err.e));
    if (!archive_) {
        // libzip reports a missing end record and a damaged local header alike (ZIP_ER_NOZIP);
        // opening once more without the consistency check tells the two apart.
        ZipErrorGuard plain_err;
        zip_t* plain = open_archive(data, size, 0, &plain_err.e);
        if (plain) {
            zip_discard(plain);
            fail("zip '", what_, "': a local header is missing, damaged or disagrees with the central directory, or ",
                 "an entry's data runs into the directory (corrupt file)");
        }
        switch (zip_error_code_zip(&plain_err.e)) {
            case ZIP_ER_NOZIP: fail("zip '", what_, "': no end-of-central-directory record (truncated or not a zip file)");
            case ZIP_ER_MULTIDISK: fail("zip '", what_, "': multi-disk archives are not supported");
            case ZIP_ER_INCONS:
                fail("zip '", what_, "': its central directory is inconsistent (entries or offsets outside it)");
            default: fail("zip '", what_, "': cannot be read: ", zip_error_strerror(&plain_err.e));
        }
    }
    zip_int64_t count = zip_get_num_entries(archive_.get(), 0);
    CNX_CHECK(count >= 0 && (uint64_t)count <= opt_.max_entries, "zip '", what_, "': ", count,
              " entries exceeds the limit of ", opt_.max_entries);
    entries_.reserve((size_t)count);
    for (zip_int64_t i = 0; i < count; ++i) {
        zip_stat_t st;
        CNX_CHECK(zip_stat_index(archive_.get(), (zip_uint64_t)i, 0, &st) == 0, "zip '", what_, "': entry ", i,
                  " cannot be read: ", zip_strerror(archive_.get()));
        ZipEntry z;
        z.index = (uint64_t)i;
        z.name = st.name ? st.name : "";
        z.method = (uint16_t)st.comp_method;
        z.crc32 = st.crc;
        z.compressed_size = st.comp_size;
        z.size = st.size;
        CNX_CHECK(st.encryption_method == ZIP_EM_NONE, "zip '", what_, "': entry '", z.name, "' is encrypted");
        CNX_CHECK(z.method == ZIP_CM_STORE || z.method == ZIP_CM_DEFLATE, "zip '", what_, "': entry '", z.name,
                  "' uses compression method ", z.method, " (only stored and deflate are supported)");
        if (z.method == ZIP_CM_STORE)
            CNX_CHECK(z.compressed_size == z.size, "zip '", what_, "': stored entry '", z.name, "' has size ", z.size,
                      " but compressed size ", z.compressed_size);
        CNX_CHECK(z.compressed_size <= size, "zip '", what_, "': entry '", z.name, "' claims ", z.compressed_size,
                  " bytes, more than the whole file (", size, " bytes)");
        CNX_CHECK(index_.emplace(z.name, entries_.size()).second, "zip '", what_, "': duplicate entry '", z.name, "'");
        entries_.push_back(std::move(z));
    }
}

void ZipReader::Discard::operator()(zip_t* archive) const { zip_discard(archive); }

const ZipEntry* ZipReader::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
}

std::vector<uint8_t> ZipReader::read(const std::string& name) const {
    const ZipEntry* e = find(name);
    CNX_CHECK(e, "zip '", what_, "': no entry named '", name, "'");
    return read(*e);
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& e) const {
    CNX_CHECK(e.size <= opt_.max_inflated_bytes, "zip '", what_, "': entry '", e.name, "' inflates to ", e.size,
              " bytes, over the limit of ", opt_.max_inflated_bytes);
    std::vector<uint8_t> out((size_t)e.size);
    read_into(e, out.data());
    return out;
}

void ZipReader::read_into(const ZipEntry& e, void* dst) const {
    CNX_CHECK(e.size <= opt_.max_inflated_bytes, "zip '", what_, "': entry '", e.name, "' inflates to ", e.size,
              " bytes, over the limit of ", opt_.max_inflated_bytes);
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen_index(archive_.get(), e.index, 0), zip_fclose);
    CNX_CHECK(f, "zip '", what_, "': entry '", e.name, "' cannot be opened: ", zip_strerror(archive_.get()));
    auto corrupt = [&](const char* how) {
        zip_error_t* err = zip_file_get_error(f.get());
        if (zip_error_code_zip(err) == ZIP_ER_CRC)
            fail("zip '", what_, "': CRC mismatch in entry '", e.name, "' (corrupt file)");
        fail("zip '", what_, "': entry '", e.name, "' is corrupt (", how, ": ", zip_error_strerror(err), ")");
    };
    auto* p = static_cast<uint8_t*>(dst);
    uint64_t left = e.size;
    while (left > 0) {
        zip_int64_t n = zip_fread(f.get(), p, left);
        if (n < 0) corrupt("reading");
        CNX_CHECK(n > 0, "zip '", what_, "': entry '", e.name, "' is corrupt (its data ends after ", e.size - left,
                  " of ", e.size, " bytes)");
        p += n;
        left -= (uint64_t)n;
    }
    // libzip checks the CRC, and that nothing follows the declared size, only when asked for
    // bytes past the end (a read that also returned data would drop that error). By then every
    // byte is in dst, so a CRC mismatch can be let through when the caller asked for that.
    uint8_t extra;
    zip_int64_t n = zip_fread(f.get(), &extra, 1);
    if (n < 0 && !(zip_error_code_zip(zip_file_get_error(f.get())) == ZIP_ER_CRC && !opt_.verify_crc))
        corrupt("at its end");
    CNX_CHECK(n <= 0, "zip '", what_, "': entry '", e.name, "' is corrupt (it inflates to more than its declared ",
              e.size, " bytes)");
}

}  // namespace cnx::io
