#pragma once
// Image decoding (stb_image): JPEG, PNG (8/16-bit, 16-bit reduced to 8), BMP, GIF (first frame),
// TGA. Pixels come back as uint8 HWC with 3 channels (grey replicated, alpha dropped) or 1
// channel (luma) on request. The declared size is checked against a pixel limit before stb
// allocates anything, so a small file declaring a huge image is refused instead of eating memory.
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace cnx::data {

// PIL refuses images above twice Image.MAX_IMAGE_PIXELS (DecompressionBombError); same figure.
constexpr int64_t kDefaultMaxPixels = 178956970;

struct Image {
    int64_t height = 0, width = 0, channels = 0;
    std::vector<uint8_t> pixels;  // [height, width, channels], row-major
    uint8_t at(int64_t y, int64_t x, int64_t c) const { return pixels[(y * width + x) * channels + c]; }
};

struct DecodeOptions {
    int channels = 3;                      // 3: RGB (grey replicated, alpha dropped); 1: luma
    int64_t max_pixels = kDefaultMaxPixels;  // width * height above this is refused; <= 0: no limit
};

// A decoding failure of one input file (missing, unreadable, corrupt, too large). The data
// loader can skip samples that throw this; every other error stops training.
struct BadImageError : Error {
    using Error::Error;
};

// The whole file, or BadImageError naming it (missing, unreadable, empty).
std::vector<uint8_t> read_file(const std::string& path);

// `name` only labels error messages (usually the file path).
Image decode_image(const uint8_t* bytes, size_t size, const std::string& name, const DecodeOptions& opts = {});
Image load_image(const std::string& path, const DecodeOptions& opts = {});

// Float [H, W, C] in [0, 1] (x / 255), ready for the float transforms.
Tensor image_to_tensor(const Image& img);

}  // namespace cnx::data
