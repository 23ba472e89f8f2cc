#include "core/storage.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "core/error.h"

namespace cnx {
namespace allocator {
namespace {

// Blocks are cached by exact rounded size: a training step asks for the same sizes every
// iteration, so exact matching reuses everything without fragmentation bookkeeping.
constexpr size_t kAlign = 64;
constexpr size_t kMaxCached = size_t(8) << 30;

struct Cache {
    std::mutex mu;
    std::multimap<size_t, void*> free_blocks;
    size_t cached = 0, live = 0, peak = 0;
};
Cache& cache() {
    static Cache* c = new Cache();  // never destroyed: storages may outlive static destruction
    return *c;
}
size_t round_up(size_t bytes) { return ((bytes ? bytes : 1) + kAlign - 1) / kAlign * kAlign; }

}  // namespace

void* allocate(size_t bytes) {
    size_t n = round_up(bytes);
    Cache& c = cache();
    {
        std::lock_guard<std::mutex> g(c.mu);
        auto it = c.free_blocks.find(n);
        if (it != c.free_blocks.end()) {
            void* p = it->second;
            c.free_blocks.erase(it);
            c.cached -= n;
            c.live += n;
            if (c.live > c.peak) c.peak = c.live;
            return p;
        }
    }
    void* p = std::aligned_alloc(kAlign, n);
    if (!p) {
        empty_cache();
        p = std::aligned_alloc(kAlign, n);
    }
    if (!p) fail("out of memory allocating ", bytes, " bytes");
    std::lock_guard<std::mutex> g(c.mu);
    c.live += n;
    if (c.live > c.peak) c.peak = c.live;
    return p;
}

void release(void* p, size_t bytes) {
    if (!p) return;
    size_t n = round_up(bytes);
    Cache& c = cache();
    std::lock_guard<std::mutex> g(c.mu);
    c.live -= n;
    if (c.cached + n > kMaxCached) {
        std::free(p);
        return;
    }
    c.free_blocks.emplace(n, p);
    c.cached += n;
}

void empty_cache() {
    Cache& c = cache();
    std::lock_guard<std::mutex> g(c.mu);
    for (auto& kv : c.free_blocks) std::free(kv.second);
    c.free_blocks.clear();
    c.cached = 0;
}

size_t cached_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().cached; }
size_t live_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().live; }
size_t peak_live_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().peak; }

}  // namespace allocator

Storage::Storage(size_t nbytes) : data(allocator::allocate(nbytes)), bytes(nbytes) {}
Storage::~Storage() { allocator::release(data, bytes); }

}  // namespace cnx
