// The chunked pool behind parallel_for (see ops/parallel.h for why it is not an OpenMP loop).
//
// One task at a time. The task's chunk counter and its generation share one 64-bit atomic
// (generation << 32 | next chunk), so a helper claims a chunk with a compare-and-swap that also
// proves the task it read is still the current one: a helper that wakes late, after the caller
// has finished and started another task, can never run a chunk of the wrong task.
#include "ops/parallel.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/threads.h"

namespace cnx {
namespace {

thread_local int t_index = 0;
thread_local bool t_inside = false;  // running a chunk (or a helper): nested calls run serially

inline void cpu_relax() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
}

using Fn = std::function<void(int64_t)>;
constexpr uint64_t kClosed = 0xFFFFFFFFu;  // a chunk index above any task's size (n < 2^31)

class Pool {
public:
    static Pool& instance() {
        static Pool* p = new Pool();  // never destroyed: helpers may still be parked at exit
        return *p;
    }

    void run(int64_t n, const Fn& fn, int threads) {
        if (threads <= 1 || n == 1 || t_inside || omp_in_parallel() || !busy_.try_lock()) {
            for (int64_t i = 0; i < n; ++i) fn(i);
            return;
        }
        ensure_helpers(threads - 1);
        fn_.store(&fn, std::memory_order_relaxed);
        n_.store(n, std::memory_order_relaxed);
        allowed_.store(threads - 1, std::memory_order_relaxed);
        done_.store(0, std::memory_order_relaxed);
        const uint32_t gen = ++gen_;
        {
            std::lock_guard<std::mutex> lk(mu_);  // pairs with the helpers' wait predicate
            next_.store((uint64_t)gen << 32, std::memory_order_release);
        }
        cv_.notify_all();
        t_inside = true;
        work(gen);
        t_inside = false;
        // Every chunk is claimed; wait for the helpers still running theirs.
        for (int spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
            if (spins < 4096)
                cpu_relax();
            else
                std::this_thread::yield();
        }
        // Close the task before the next one stores its function and size: a helper that read
        // this generation's counter, then the next task's fn_/n_, must not be able to claim
        // chunk n of this generation and run the next task's function out of turn.
        next_.store(((uint64_t)gen << 32) | kClosed, std::memory_order_release);
        std::atomic_thread_fence(std::memory_order_seq_cst);  // the close precedes the next stores
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lk(mu_);
            std::swap(error, error_);
        }
        busy_.unlock();
        if (error) std::rethrow_exception(error);
    }

private:
    // Claims and runs chunks of task `gen` until none is left.
    void work(uint32_t gen) {
        for (;;) {
            uint64_t v = next_.load(std::memory_order_acquire);
            if ((uint32_t)(v >> 32) != gen) return;
            // Acquire: a helper that sees the next task's fn_/n_ (stored after the close) must also
            // see the close, so its claim below fails instead of taking a chunk out of turn.
            const Fn* fn = fn_.load(std::memory_order_acquire);
            const int64_t n = n_.load(std::memory_order_acquire);
            const int64_t i = (int64_t)(uint32_t)v;
            if (i >= n) return;
            if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
            try {
                (*fn)(i);
            } catch (...) {  // the first error is rethrown by the caller once every chunk is done
                std::lock_guard<std::mutex> lk(mu_);
                if (!error_) error_ = std::current_exception();
            }
            done_.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    void ensure_helpers(int count) {
        while ((int)threads_.size() < count) {
            const int index = (int)threads_.size() + 1;
            threads_.emplace_back([this, index] { helper(index); });
            threads_.back().detach();
        }
    }

    void helper(int index) {
        t_index = index;
        t_inside = true;
        uint32_t seen = (uint32_t)(next_.load(std::memory_order_acquire) >> 32);
        for (;;) {
            // Spin ~50 us for the next task (back-to-back kernels), then sleep.
            uint64_t v = next_.load(std::memory_order_acquire);
            const auto t0 = std::chrono::steady_clock::now();
            for (int spins = 0; (uint32_t)(v >> 32) == seen; ++spins) {
                if ((spins & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(50)) {
                    std::unique_lock<std::mutex> lk(mu_);
                    cv_.wait(lk, [&] {
                        v = next_.load(std::memory_order_acquire);
                        return (uint32_t)(v >> 32) != seen;
                    });
                    break;
                }
                cpu_relax();
                v = next_.load(std::memory_order_acquire);
            }
            seen = (uint32_t)(v >> 32);
            if (index <= allowed_.load(std::memory_order_relaxed)) work(seen);
        }
    }

    std::mutex busy_;  // one caller at a time; others run serially
    std::mutex mu_;
    std::condition_variable cv_;
    std::atomic<uint64_t> next_{0};
    std::atomic<int64_t> done_{0};
    std::atomic<const Fn*> fn_{nullptr};
    std::atomic<int64_t> n_{0};
    std::atomic<int> allowed_{0};
    uint32_t gen_ = 0;
    std::exception_ptr error_;  // guarded by mu_
    std::vector<std::thread> threads_;
};

}  // namespace

int parallel_threads() { return std::max(1, get_num_threads()); }

int parallel_thread_index() { return t_index; }

void parallel_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    const int threads = parallel_threads();
    grain = std::max<int64_t>(grain, 1);
    if (threads == 1 || n <= grain) return fn(0, n);
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n / grain, 8 * threads));
    parallel_for(chunks, [&](int64_t c) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

void parallel_for(int64_t n, const Fn& fn) {
    if (n <= 0) return;
    CNX_CHECK(n < (int64_t(1) << 31), "parallel_for: ", n, " chunks is too many");
    Pool::instance().run(n, fn, parallel_threads());
}

}  // namespace cnx
