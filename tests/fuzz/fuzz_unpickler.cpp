// libFuzzer harness: the restricted unpickler on arbitrary bytes. Only cnx::Error may escape;
// anything else (another exception, a sanitizer report, a timeout) is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/unpickler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        cnx::io::pickle::Unpickler up(data, size, "fuzz");
        uint32_t root = up.load();
        // Walk what was built, as the .pth loader would, to touch every object's fields.
        size_t n = 0;
        for (uint32_t i = 0; i < up.num_objects(); ++i) n += up.obj(i).items.size() + up.obj(i).s.size();
        (void)up.dict_get(root, "model");
        (void)n;
    } catch (const cnx::Error&) {
    }
    return 0;
}
