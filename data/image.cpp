#include "data/image.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

// Only the formats we promise: fewer decoders, less code reachable from untrusted files.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

namespace cnx::data {
namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
uint32_t le16(const uint8_t* p) { return (uint32_t(p[1]) << 8) | p[0]; }
uint32_t le32(const uint8_t* p) { return (le16(p + 2) << 16) | le16(p); }

// The size a PNG, GIF, BMP or JPEG header declares, read without stb. stb's own header parsers
// refuse sizes beyond ~1 GiB with a generic "unknown type" message; reading the size here lets
// the pixel limit give a clear answer first. Returns false when the format is not recognised
// (stb's info then decides).
bool sniff_size(const uint8_t* b, size_t n, int64_t& w, int64_t& h) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 24 && std::memcmp(b, png_sig, 8) == 0 && std::memcmp(b + 12, "IHDR", 4) == 0) {
        w = be32(b + 16), h = be32(b + 20);
        return true;
    }
    if (n >= 10 && (std::memcmp(b, "GIF87a", 6) == 0 || std::memcmp(b, "GIF89a", 6) == 0)) {
        w = le16(b + 6), h = le16(b + 8);
        return true;
    }
    if (n >= 26 && b[0] == 'B' && b[1] == 'M') {
        w = (int32_t)le32(b + 18), h = (int32_t)le32(b + 22);
        if (h < 0) h = -(int64_t)h;  // top-down bitmap
        return w > 0;
    }
    if (n >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
        // Walk the marker segments up to the first start-of-frame.
        size_t i = 2;
        while (i + 4 <= n) {
            if (b[i] != 0xFF) return false;
            uint8_t m = b[i + 1];
            if (m == 0xFF) { ++i; continue; }  // fill byte
            if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
            uint32_t len = be16(b + i + 2);
            bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
            if (sof) {
                if (i + 9 > n) return false;
                h = be16(b + i + 5), w = be16(b + i + 7);
                return true;
            }
            if (len < 2) return false;
            i += 2 + len;
        }
    }
    return false;
}

// What stb's JPEG test accepts: 0xFF, any number of fill 0xFF, then start-of-image.
bool looks_like_jpeg(const uint8_t* b, size_t n) {
    size_t i = 0;
    if (n == 0 || b[0] != 0xFF) return false;
    while (i < n && b[i] == 0xFF) ++i;
    return i < n && b[i] == 0xD8;
}

// Two holes of stb_image 2.27 (Debian 12's) with Huffman tables, both fixed in 2.28: a DHT
// segment declaring more than 256 codes makes it write past its tables, and a scan that uses a
// table no DHT has defined yet makes it decode with uninitialised memory (wild reads). Walk the
// marker segments as stb does (a superset of the ones it visits) and name the first such
// problem; "" when there is none.
std::string jpeg_huffman_problem(const uint8_t* b, size_t n) {
    auto at = [&](size_t k) -> uint32_t { return k < n ? b[k] : 0; };  // stb reads 0 past the end
    auto is_rst = [](uint8_t m) { return m >= 0xD0 && m <= 0xD7; };
    bool defined[2][4] = {};  // [DC, AC][table id]
    bool progressive = false;
    size_t i = 0;
    while (i < n) {
        if (b[i] != 0xFF) {  // junk between segments: stb skips it byte by byte
            ++i;
            continue;
        }
        size_t j = i + 1;
        while (j < n && b[j] == 0xFF) ++j;
        if (j >= n) break;
        const uint8_t m = b[j];
        i = j + 1;
        if (m == 0xD9) break;  // end of image: stb stops here
        if (m == 0x00 || m == 0x01 || m == 0xD8 || is_rst(m)) continue;
        const size_t len = (at(i) << 8) | at(i + 1);
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) progressive = m == 0xC2;
        if (m == 0xC4) {
            int64_t left = (int64_t)len - 2;
            size_t k = i + 2;
            while (left > 0) {
                uint32_t q = at(k++);
                if ((q >> 4) > 1 || (q & 15) > 3) return "";  // stb rejects this table itself
                uint32_t codes = 0;
                for (int t = 0; t < 16; ++t) codes += at(k++);
                if (codes > 256) return "Huffman table with more than 256 codes";
                defined[q >> 4][q & 15] = true;
                k += codes;
                left -= 17 + (int64_t)codes;
            }
        }
        if (m == 0xDA) {
            // Which tables the scan decodes with, as stb picks them: baseline uses both of
            // each component's; a progressive DC first pass only the DC one, an AC pass only AC.
            const uint32_t ns = at(i + 2);
            if (ns < 1 || ns > 4) return "";  // stb rejects the scan itself
            const uint32_t spec_start = at(i + 3 + 2 * ns), succ_high = at(i + 5 + 2 * ns) >> 4;
            for (uint32_t c = 0; c < ns; ++c) {
                const uint32_t q = at(i + 4 + 2 * c), dc = q >> 4, ac = q & 15;
                if (dc > 3 || ac > 3) return "";  // stb rejects the scan itself
                const bool uses_dc = !progressive || (spec_start == 0 && succ_high == 0);
                const bool uses_ac = !progressive || spec_start != 0;
                if ((uses_dc && !defined[0][dc]) || (uses_ac && !defined[1][ac]))
                    return "scan uses Huffman table " + std::string(uses_ac && !defined[1][ac] ? "AC " : "DC ") +
                           std::to_string(uses_ac && !defined[1][ac] ? ac : dc) + " before any DHT defines it";
            }
        }
        i += len;
        if (m == 0xDA) {  // entropy-coded data runs to the next marker that is not a restart
            while (i + 1 < n && !(b[i] == 0xFF && b[i + 1] != 0x00 && b[i + 1] != 0xFF && !is_rst(b[i + 1]))) ++i;
        }
    }
    return "";
}

// stb_image 2.27 grows its IDAT buffer to a chunk's declared length before it checks that the
// bytes are there, so an 80-byte PNG declaring a 2 GiB chunk makes it allocate 2 GiB. A chunk
// cannot extend past the end of the file (stb fails on such a file anyway, after allocating), so
// walk the chunks up to IEND and name the first one that does. Returns "" when they all fit.
std::string png_chunk_past_end(const uint8_t* b, size_t n) {
    size_t i = 8;
    while (i + 8 <= n) {
        const uint64_t len = be32(b + i);
        std::string type(reinterpret_cast<const char*>(b + i + 4), 4);
        for (char& c : type)
            if (c < 0x21 || c > 0x7e) c = '?';
        if (len > n - i - 8)  // the CRC may be missing: stb does not check it
            return "chunk '" + type + "' of " + std::to_string(len) + " bytes at offset " + std::to_string(i) +
                   " runs past the end of the file (" + std::to_string(n) + " bytes)";
        if (type == "IEND") break;
        i += 12 + len;
    }
    return "";
}

void check_limit(int64_t w, int64_t h, const std::string& name, const DecodeOptions& opts) {
    // Both sides fit in 32 bits, so the product fits in 64 unsigned bits.
    const uint64_t pixels = (uint64_t)w * (uint64_t)h;
    if (opts.max_pixels > 0 && pixels > (uint64_t)opts.max_pixels)
        throw BadImageError("cannot decode " + name + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                            " = " + std::to_string(pixels) + " pixels, above the limit of " +
                            std::to_string(opts.max_pixels) + " (possible decompression bomb)");
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw BadImageError("cannot read " + path + ": no such file");
    if (fs::is_directory(status)) throw BadImageError("cannot read " + path + ": is a directory");
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw BadImageError("cannot open " + path + ": " + std::strerror(errno));
    std::vector<uint8_t> bytes;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) bytes.insert(bytes.end(), buf, buf + n);
    if (std::ferror(f.get())) throw BadImageError("cannot read " + path + ": " + std::strerror(errno));
    if (bytes.empty()) throw BadImageError("cannot decode " + path + ": file is empty");
    return bytes;
}

Image decode_image(const uint8_t* bytes, size_t size, const std::string& name, const DecodeOptions& opts) {
    if (opts.channels != 1 && opts.channels != 3)
        fail("decode_image: channels must be 1 or 3, got ", opts.channels);
    if (size == 0) throw BadImageError("cannot decode " + name + ": file is empty");
    if (size > (size_t)INT_MAX) throw BadImageError("cannot decode " + name + ": file larger than 2 GiB");
    int64_t sw = 0, sh = 0;
    if (sniff_size(bytes, size, sw, sh)) check_limit(sw, sh, name, opts);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size >= 8 && std::memcmp(bytes, png_sig, 8) == 0) {
        std::string why = png_chunk_past_end(bytes, size);
        if (!why.empty()) throw BadImageError("cannot decode " + name + ": Corrupt PNG (" + why + ")");
    }
    if (looks_like_jpeg(bytes, size)) {
        std::string why = jpeg_huffman_problem(bytes, size);
        if (!why.empty()) throw BadImageError("cannot decode " + name + ": Corrupt JPEG (" + why + ")");
    }
    int len = (int)size, w = 0, h = 0, comp = 0;
    // Header only: nothing the size of the image is allocated before the limit is checked.
    if (!stbi_info_from_memory(bytes, len, &w, &h, &comp))
        throw BadImageError("cannot decode " + name + ": " + stbi_failure_reason());
    if (w <= 0 || h <= 0) throw BadImageError("cannot decode " + name + ": empty image");
    check_limit(w, h, name, opts);
    int dw = 0, dh = 0, dc = 0;
    // stb converts 16-bit PNG to 8 bits, drops alpha, replicates grey, and computes luma for 1.
    std::unique_ptr<stbi_uc, void (*)(void*)> data(
        stbi_load_from_memory(bytes, len, &dw, &dh, &dc, opts.channels), &stbi_image_free);
    if (!data) throw BadImageError("cannot decode " + name + ": " + stbi_failure_reason());
    if (dw != w || dh != h)
        throw BadImageError("cannot decode " + name + ": header says " + std::to_string(w) + "x" + std::to_string(h) +
                            ", decoder produced " + std::to_string(dw) + "x" + std::to_string(dh));
    Image img;
    img.height = dh;
    img.width = dw;
    img.channels = opts.channels;
    img.pixels.assign(data.get(), data.get() + (size_t)dw * dh * opts.channels);
    return img;
}

Image load_image(const std::string& path, const DecodeOptions& opts) {
    auto bytes = read_file(path);
    return decode_image(bytes.data(), bytes.size(), path, opts);
}

Tensor image_to_tensor(const Image& img) {
    Tensor t = Tensor::empty({img.height, img.width, img.channels});
    float* out = t.data<float>();
    const size_t n = img.pixels.size();
    for (size_t i = 0; i < n; ++i) out[i] = img.pixels[i] / 255.0f;  // division, as torchvision ToTensor
    return t;
}

}  // namespace cnx::data
