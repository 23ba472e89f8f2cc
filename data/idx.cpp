#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "core/dtype.h"

namespace cnx::data {
namespace {

struct GzFile {
    gzFile f = nullptr;
    ~GzFile() {
        if (f) gzclose(f);
    }
};

std::string gz_error(gzFile f) {
    int code = 0;
    const char* msg = gzerror(f, &code);
    return code == Z_OK || !msg ? std::string() : std::string(msg);
}

// Reads up to n bytes; returns the count (short only at end of stream), throws on a stream error.
size_t gz_read(gzFile f, const std::string& path, uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = (unsigned)std::min<size_t>(n - done, 1u << 24);
        int got = gzread(f, dst + done, chunk);
        if (got < 0) fail("idx: ", path, ": corrupt compressed data (", gz_error(f), ")");
        if (got == 0) break;
        done += (size_t)got;
    }
    return done;
}

}  // namespace

IdxArray read_idx(const std::string& path) {
    std::error_code ec;
    CNX_CHECK(std::filesystem::is_regular_file(path, ec), "idx: ", path, ": no such file");
    GzFile gz;
    gz.f = gzopen(path.c_str(), "rb");  // plain (uncompressed) files are read as they are
    CNX_CHECK(gz.f != nullptr, "idx: cannot open ", path);

    uint8_t magic[4];
    CNX_CHECK(gz_read(gz.f, path, magic, 4) == 4, "idx: ", path, ": truncated header (", gz_error(gz.f), ")");
    CNX_CHECK(magic[0] == 0 && magic[1] == 0, "idx: ", path, ": bad magic (first bytes ", (int)magic[0], " ",
              (int)magic[1], "; not an IDX file)");
    CNX_CHECK(magic[2] == 0x08, "idx: ", path, ": element type 0x", std::hex, (int)magic[2], std::dec,
              " not supported (only unsigned byte, 0x08)");
    const int ndims = magic[3];
    CNX_CHECK(ndims >= 1 && ndims <= 8, "idx: ", path, ": bad number of dimensions ", ndims);

    IdxArray out;
    uint64_t total = 1;
    for (int d = 0; d < ndims; ++d) {
        uint8_t b[4];
        CNX_CHECK(gz_read(gz.f, path, b, 4) == 4, "idx: ", path, ": truncated header (dimension ", d, ")");
        uint64_t n = (uint64_t(b[0]) << 24) | (uint64_t(b[1]) << 16) | (uint64_t(b[2]) << 8) | uint64_t(b[3]);
        out.dims.push_back((int64_t)n);
        total *= n;
        CNX_CHECK(total <= (uint64_t(1) << 36), "idx: ", path, ": dimensions ", shape_str(out.dims),
                  " declare more than 64 GiB");
    }

    // Grow with the data actually read, so a header declaring a huge array cannot make us
    // allocate it up front; chunks start small and double, so a short corrupt file stays cheap.
    while (out.data.size() < total) {
        const size_t chunk = std::clamp<size_t>(out.data.size(), size_t(1) << 16, size_t(1) << 24);
        size_t want = std::min<size_t>(chunk, total - out.data.size());
        size_t at = out.data.size();
        out.data.resize(at + want);
        size_t got = gz_read(gz.f, path, out.data.data() + at, want);
        if (got < want) {
            std::string why = gz_error(gz.f);
            fail("idx: ", path, ": truncated: dimensions ", shape_str(out.dims), " need ", total, " data bytes, found ",
                 at + got, why.empty() ? "" : " (", why, why.empty() ? "" : ")");
        }
    }
    uint8_t extra;
    size_t more = gz_read(gz.f, path, &extra, 1);  // also makes zlib verify the trailing CRC
    CNX_CHECK(more == 0, "idx: ", path, ": trailing bytes after the ", total, " data bytes of dimensions ",
              shape_str(out.dims));
    return out;
}

FashionMnistSplit load_fashion_mnist(const std::string& dir, bool train) {
    const std::string prefix = dir + "/" + (train ? "train" : "t10k");
    const std::string img_path = prefix + "-images-idx3-ubyte.gz", lbl_path = prefix + "-labels-idx1-ubyte.gz";
    IdxArray images = read_idx(img_path);
    IdxArray labels = read_idx(lbl_path);
    CNX_CHECK(images.dims.size() == 3, "fashion-mnist: ", img_path, ": expected [N, H, W] images, got dimensions ",
              shape_str(images.dims));
    CNX_CHECK(labels.dims.size() == 1, "fashion-mnist: ", lbl_path, ": expected [N] labels, got dimensions ",
              shape_str(labels.dims));
    CNX_CHECK(images.dims[0] == labels.dims[0], "fashion-mnist: ", images.dims[0], " images in ", img_path, " but ",
              labels.dims[0], " labels in ", lbl_path);
    CNX_CHECK(images.dims[0] > 0 && images.dims[1] > 0 && images.dims[2] > 0, "fashion-mnist: ", img_path,
              ": empty dataset ", shape_str(images.dims));
    FashionMnistSplit s;
    s.count = images.dims[0];
    s.height = images.dims[1];
    s.width = images.dims[2];
    s.images = std::move(images.data);
    s.labels.reserve(s.count);
    for (int64_t i = 0; i < s.count; ++i) {
        int64_t l = labels.data[i];
        CNX_CHECK(l < (int64_t)kFashionMnistClasses.size(), "fashion-mnist: ", lbl_path, ": label ", l, " at index ",
                  i, " is not a class (0..9)");
        s.labels.push_back(l);
    }
    return s;
}

}  // namespace cnx::data
