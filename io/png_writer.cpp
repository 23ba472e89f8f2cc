#include "io/png_writer.h"

#include "core/error.h"
#include "io/atomic_file.h"

// Private copy of the encoder: the tests compile their own stb_image_write into their programs.
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace cnx::io {

std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int channels) {
    CNX_CHECK(width > 0 && height > 0 && (channels == 1 || channels == 3), "encode_png: bad image ", width, "x",
              height, "x", channels);
    std::vector<uint8_t> out;
    auto append = [](void* context, void* data, int size) {
        auto* png = static_cast<std::vector<uint8_t>*>(context);
        auto* bytes = static_cast<const uint8_t*>(data);
        png->insert(png->end(), bytes, bytes + size);
    };
    CNX_CHECK(stbi_write_png_to_func(append, &out, width, height, channels, pixels, width * channels),
              "encode_png: encoding a ", width, "x", height, "x", channels, " image failed");
    return out;
}

void write_png(const std::string& path, const uint8_t* pixels, int width, int height, int channels) {
    std::vector<uint8_t> png = encode_png(pixels, width, height, channels);
    atomic_write_file(path, png.data(), png.size());
}

}  // namespace cnx::io
