// libFuzzer harness: a whole .pth (zip container, pickle, tensor rebuild) from arbitrary bytes.
// The CRC check is off so that mutations reach the pickle and the tensor code behind it.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cnx::io::PthOptions opt;
    opt.verify_crc = false;
    opt.max_output_bytes = 64u << 20;  // stay far below libFuzzer's malloc limit
    for (const char* key : {"", "model_ema"}) {
        opt.key = key;
        try {
            auto c = cnx::io::read_pth_buffer(data, size, opt, "fuzz.pth");
            double sum = 0;  // read every value: a view past its storage would show up here
            for (auto& [name, t] : c.tensors)
                for (int64_t i = 0; i < t.numel(); ++i) sum += t.data<float>()[i];
            (void)sum;
        } catch (const cnx::Error&) {
        }
    }
    return 0;
}
