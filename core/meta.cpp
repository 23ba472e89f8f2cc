#include "core/meta.h"

namespace cnx {
namespace {
thread_local bool t_meta = false;
thread_local MacCounter* t_counter = nullptr;
}  // namespace

bool meta_mode() { return t_meta; }

MetaGuard::MetaGuard(bool on) : previous_(t_meta) { t_meta = on; }
MetaGuard::~MetaGuard() { t_meta = previous_; }

MacCounter::MacCounter() : outer_(t_counter) { t_counter = this; }
MacCounter::~MacCounter() { t_counter = outer_; }

void MacCounter::reset() {
    total_ = 0;
    by_op_.clear();
}

void count_macs(const char* op, int64_t macs) {
    for (MacCounter* c = t_counter; c; c = c->outer_) {
        c->total_ += macs;
        c->by_op_[op] += macs;
    }
}

}  // namespace cnx
