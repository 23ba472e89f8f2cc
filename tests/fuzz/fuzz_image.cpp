// libFuzzer harness: image decoding (stb_image behind our header checks) on arbitrary bytes.
// A small pixel limit keeps each run cheap and exercises the limit path; the odd/even size
// alternates RGB and luma output. Only BadImageError may escape, and what comes back must be
// exactly height * width * channels pixels within the limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cnx::data::DecodeOptions opts;
    opts.channels = (size & 1) ? 1 : 3;
    opts.max_pixels = 1 << 20;
    try {
        cnx::data::Image img = cnx::data::decode_image(data, size, "fuzz.img", opts);
        if (img.height <= 0 || img.width <= 0 || img.height * img.width > opts.max_pixels ||
            img.channels != opts.channels || (int64_t)img.pixels.size() != img.height * img.width * img.channels)
            std::abort();
        cnx::Tensor t = cnx::data::image_to_tensor(img);
        if (t.numel() != (int64_t)img.pixels.size()) std::abort();
    } catch (const cnx::data::BadImageError&) {
    }
    return 0;
}
