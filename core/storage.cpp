#include "core/storage.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/error.h"

namespace cnx {
namespace allocator {
namespace {

// Blocks are cached by rounded size: a training step asks for the same sizes every iteration, so
// matching sizes reuses nearly everything without fragmentation bookkeeping. A request takes the
// smallest cached block that holds it if that is at most 1/kLargerFit larger, so a cached block
// of another layer's size serves instead of a new allocation (ConvNeXt-T training at batch 8:
// peak RSS 1066 -> 1017 MB in float32, 778 -> 767 MB in bf16; exact sizes only and up to 2x
// larger both did worse). Sizes that never come back (decoded images of every size, say) must
// not pile up, though: the cache holds at most twice the peak of live bytes (at least
// kMinCached, at most kMaxCached) and, when over, frees the blocks released longest ago. A
// training step's blocks are re-cached every step, so they stay young and are never the ones
// evicted.
constexpr size_t kAlign = 64;
constexpr size_t kLargerFit = 4;  // a cached block up to 25% larger than asked for serves
constexpr size_t kMinCached = size_t(256) << 20;
constexpr size_t kMaxCached = size_t(8) << 30;

struct Cached {
    size_t bytes;
    void* p;
    std::multimap<size_t, uint64_t>::iterator in_size;
};
struct Cache {
    std::mutex mu;
    std::multimap<size_t, uint64_t> by_size;  // rounded size -> release stamp
    std::map<uint64_t, Cached> by_age;        // release stamp -> block, oldest first
    std::unordered_map<void*, size_t> larger;  // live blocks handed out for a smaller request
    uint64_t stamp = 0;
    size_t cached = 0, live = 0, peak = 0, peak_reserved = 0;
    void note_peaks() {
        peak = std::max(peak, live);
        peak_reserved = std::max(peak_reserved, live + cached);
    }
    size_t limit() const { return std::min(kMaxCached, std::max(kMinCached, 2 * peak)); }
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
        auto it = c.by_size.lower_bound(n);  // the smallest cached block that holds n
        if (it != c.by_size.end() && it->first <= n + n / kLargerFit) {
            const size_t got = it->first;
            auto age = c.by_age.find(it->second);
            void* p = age->second.p;
            c.by_age.erase(age);
            c.by_size.erase(it);
            c.cached -= got;
            c.live += got;
            if (got != n) c.larger.emplace(p, got);
            c.note_peaks();
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
    c.note_peaks();
    return p;
}

void release(void* p, size_t bytes) {
    if (!p) return;
    size_t n = round_up(bytes);
    Cache& c = cache();
    std::lock_guard<std::mutex> g(c.mu);
    if (!c.larger.empty()) {
        auto big = c.larger.find(p);
        if (big != c.larger.end()) n = big->second, c.larger.erase(big);
    }
    c.live -= n;
    const size_t limit = c.limit();
    if (n > limit) {
        std::free(p);
        return;
    }
    const uint64_t stamp = ++c.stamp;
    c.by_age.emplace(stamp, Cached{n, p, c.by_size.emplace(n, stamp)});
    c.cached += n;
    while (c.cached > limit) {  // never the block just cached: it alone fits
        auto oldest = c.by_age.begin();
        std::free(oldest->second.p);
        c.cached -= oldest->second.bytes;
        c.by_size.erase(oldest->second.in_size);
        c.by_age.erase(oldest);
    }
}

void empty_cache() {
    Cache& c = cache();
    std::lock_guard<std::mutex> g(c.mu);
    for (auto& kv : c.by_age) std::free(kv.second.p);
    c.by_age.clear();
    c.by_size.clear();
    c.cached = 0;
}

size_t cache_limit() { std::lock_guard<std::mutex> g(cache().mu); return cache().limit(); }
size_t cached_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().cached; }
size_t live_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().live; }
size_t peak_live_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().peak; }
size_t peak_reserved_bytes() { std::lock_guard<std::mutex> g(cache().mu); return cache().peak_reserved; }

}  // namespace allocator

Storage::Storage(size_t nbytes) : data(allocator::allocate(nbytes)), bytes(nbytes) {}
Storage::~Storage() { allocator::release(data, bytes); }

}  // namespace cnx
