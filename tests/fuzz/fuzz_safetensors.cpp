// libFuzzer harness: the safetensors reader on arbitrary bytes. Only cnx::Error may escape.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = cnx::io::load_safetensors_from_buffer(data, size, cnx::DType::F32, /*keep_f64=*/true, "fuzz");
        double sum = 0;
        for (auto& [name, t] : f.tensors) {
            auto v = t.to_vector();
            for (double x : v) sum += x;
        }
        (void)sum;
    } catch (const cnx::Error&) {
    }
    return 0;
}
