#include "io/png_writer.h"

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace cnx::io {
namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    out.push_back(v >> 24);
    out.push_back(v >> 16);
    out.push_back(v >> 8);
    out.push_back(v);
}

void put_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
    put_u32(out, (uint32_t)data.size());
    size_t start = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), data.begin(), data.end());
    uLong crc = crc32(0L, out.data() + start, (uInt)(out.size() - start));
    put_u32(out, (uint32_t)crc);
}

}  // namespace

std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int channels) {
    CNX_CHECK(width > 0 && height > 0 && (channels == 1 || channels == 3), "encode_png: bad image ", width, "x",
              height, "x", channels);
    // Each row is prefixed with filter type 0 (none); zlib does the compression.
    std::vector<uint8_t> raw;
    size_t row = (size_t)width * channels;
    raw.reserve((row + 1) * height);
    for (int y = 0; y < height; ++y) {
        raw.push_back(0);
        raw.insert(raw.end(), pixels + y * row, pixels + (y + 1) * row);
    }
    uLongf zlen = compressBound(raw.size());
    std::vector<uint8_t> z(zlen);
    CNX_CHECK(compress2(z.data(), &zlen, raw.data(), raw.size(), 6) == Z_OK, "encode_png: zlib compression failed");
    z.resize(zlen);

    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    std::vector<uint8_t> ihdr;
    put_u32(ihdr, width);
    put_u32(ihdr, height);
    ihdr.push_back(8);                         // bit depth
    ihdr.push_back(channels == 3 ? 2 : 0);     // colour type: RGB or grey
    ihdr.push_back(0);
    ihdr.push_back(0);
    ihdr.push_back(0);
    put_chunk(out, "IHDR", ihdr);
    put_chunk(out, "IDAT", z);
    put_chunk(out, "IEND", {});
    return out;
}

void write_png(const std::string& path, const uint8_t* pixels, int width, int height, int channels) {
    std::vector<uint8_t> png = encode_png(pixels, width, height, channels);
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    CNX_CHECK(f, "write_png: cannot open '", tmp, "' for writing");
    size_t n = std::fwrite(png.data(), 1, png.size(), f);
    bool ok = n == png.size() && std::fflush(f) == 0;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        fail("write_png: cannot write '", path, "': ", why);
    }
}

}  // namespace cnx::io
