#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::io {
// Encodes 8-bit RGB (channels 3) or grey (1) pixels, row-major HWC, as PNG (stb_image_write).
std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int channels);
// Writes the PNG through io::AtomicFile (unique temporary name, fsync, rename), so a reader
// never sees half a file and a crash never leaves a torn one.
void write_png(const std::string& path, const uint8_t* pixels, int width, int height, int channels);
}  // namespace cnx::io
