#pragma once
// Reference-counted, 64-byte aligned memory shared by a tensor and its views.
// Allocation goes through a caching allocator: a training step frees and re-allocates the same
// multi-MB activation buffers every iteration, and handing them back to the OS each time costs
// page faults that show up as a large fraction of step time.
#include <cstddef>
#include <memory>

namespace cnx {

struct Storage {
    void* data = nullptr;
    size_t bytes = 0;
    explicit Storage(size_t nbytes);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
};

namespace allocator {
void* allocate(size_t bytes);              // 64-byte aligned, never null (throws)
void release(void* p, size_t bytes);       // returns the block to the cache
void empty_cache();                        // frees every cached block
size_t cached_bytes();
size_t cache_limit();                      // cached_bytes() never exceeds it (2x peak live, >= 256 MiB)
size_t live_bytes();
size_t peak_live_bytes();
size_t peak_reserved_bytes();              // of live + cached: what the allocator held at most
}  // namespace allocator

}  // namespace cnx
