#include "ops/packed_weights.h"

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "core/storage.h"

namespace cnx {
namespace {

struct Range {
    const char* begin;
    const char* end;
    uint64_t scope;
};

struct Packed {
    void* p = nullptr;
    size_t bytes = 0;
    uint64_t scope = 0;
};

struct Registry {
    std::mutex mu;
    std::vector<Range> ranges;
    std::map<packed_weights::Key, Packed> entries;
    uint64_t next_scope = 1;
    int64_t bytes = 0, hits = 0, misses = 0;
    std::atomic<int> live_scopes{0};  // lets covers() skip the lock when no scope exists
};
Registry& registry() {
    static Registry* r = new Registry();  // never destroyed: a scope may outlive static destruction
    return *r;
}

}  // namespace

PackedWeightsScope::PackedWeightsScope(const std::vector<Tensor>& weights) {
    Registry& r = registry();
    std::lock_guard<std::mutex> g(r.mu);
    id_ = r.next_scope++;
    for (const Tensor& t : weights) {
        if (!t.defined() || t.is_meta() || t.numel() == 0) continue;
        const char* p = (const char*)t.raw_data();
        r.ranges.push_back({p, p + t.numel() * (int64_t)dtype_size(t.dtype()), id_});
    }
    r.live_scopes++;
}

PackedWeightsScope::~PackedWeightsScope() {
    Registry& r = registry();
    std::lock_guard<std::mutex> g(r.mu);
    for (size_t i = 0; i < r.ranges.size();)
        if (r.ranges[i].scope == id_)
            r.ranges.erase(r.ranges.begin() + (std::ptrdiff_t)i);
        else
            ++i;
    for (auto it = r.entries.begin(); it != r.entries.end();)
        if (it->second.scope == id_) {
            allocator::release(it->second.p, it->second.bytes);
            r.bytes -= (int64_t)it->second.bytes;
            it = r.entries.erase(it);
        } else {
            ++it;
        }
    r.live_scopes--;
}

PackedWeightsStats packed_weights_stats() {
    Registry& r = registry();
    std::lock_guard<std::mutex> g(r.mu);
    return {(int64_t)r.entries.size(), r.bytes, r.hits, r.misses};
}

namespace packed_weights {

bool Key::operator<(const Key& o) const {
    return std::tie(b, ldb, K, N, kc_blk, tb, b_bf16, kernel) <
           std::tie(o.b, o.ldb, o.K, o.N, o.kc_blk, o.tb, o.b_bf16, o.kernel);
}

namespace {
// The scope whose tensor holds [p, p + bytes), or 0. Caller holds the lock.
uint64_t scope_of(Registry& r, const void* p, int64_t bytes) {
    const char* b = (const char*)p;
    for (const Range& x : r.ranges)
        if (b >= x.begin && b + bytes <= x.end) return x.scope;
    return 0;
}
}  // namespace

bool covers(const void* p, int64_t bytes) {
    Registry& r = registry();
    if (r.live_scopes.load(std::memory_order_relaxed) == 0) return false;
    std::lock_guard<std::mutex> g(r.mu);
    return scope_of(r, p, bytes) != 0;
}

void* find_or_pack(const Key& key, size_t bytes, const std::function<void(void*)>& fill) {
    Registry& r = registry();
    {
        std::lock_guard<std::mutex> g(r.mu);
        auto it = r.entries.find(key);
        if (it != r.entries.end()) {
            r.hits++;
            return it->second.p;
        }
    }
    // Packed outside the lock: fill may run parallel loops. (The key fixes the layout, and so the
    // size: two threads packing the same key make the same bytes.)
    void* p = allocator::allocate(bytes);
    fill(p);
    std::lock_guard<std::mutex> g(r.mu);
    r.misses++;
    const uint64_t scope = scope_of(r, key.b, 1);
    auto it = r.entries.find(key);
    if (scope == 0 || it != r.entries.end()) {
        // The scope ended while packing (nothing to keep it for), or another thread packed the
        // same weight meanwhile: it may be reading that copy already, so that one stays.
        allocator::release(p, bytes);
        return scope == 0 ? nullptr : it->second.p;
    }
    r.entries.emplace(key, Packed{p, bytes, scope});
    r.bytes += (int64_t)bytes;
    return p;
}

}  // namespace packed_weights
}  // namespace cnx
