#include "core/rng.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace cnx {
namespace {
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::manual_seed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) s = splitmix64(x);
    has_spare_ = false;
    spare_ = 0;
}

uint64_t Generator::next_u64() {
    uint64_t result = rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Generator::uniform() { return (next_u64() >> 11) * 0x1.0p-53; }
double Generator::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

double Generator::normal() {
    if (has_spare_) {
        has_spare_ = false;
        return spare_;
    }
    double u1;
    do u1 = uniform(); while (u1 <= 0.0);
    double u2 = uniform();
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
}

uint64_t Generator::randint(uint64_t n) {
    CNX_CHECK(n > 0, "randint: empty range");
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = next_u64(); while (v >= limit);
    return v % n;
}

std::vector<int64_t> Generator::permutation(int64_t n) {
    std::vector<int64_t> p(n);
    for (int64_t i = 0; i < n; ++i) p[i] = i;
    for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[randint(i + 1)]);
    return p;
}

std::string Generator::state() const {
    uint64_t spare_bits;
    std::memcpy(&spare_bits, &spare_, 8);
    std::ostringstream os;
    os << s_[0] << ' ' << s_[1] << ' ' << s_[2] << ' ' << s_[3] << ' ' << (has_spare_ ? 1 : 0) << ' ' << spare_bits;
    return os.str();
}

void Generator::set_state(const std::string& s) {
    std::istringstream is(s);
    uint64_t v[4], spare_bits;
    int has;
    is >> v[0] >> v[1] >> v[2] >> v[3] >> has >> spare_bits;
    CNX_CHECK(!is.fail(), "generator: malformed state '", s, "'");
    for (int i = 0; i < 4; ++i) s_[i] = v[i];
    has_spare_ = has != 0;
    std::memcpy(&spare_, &spare_bits, 8);
}

Generator& default_generator() {
    static Generator g(0);
    return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace cnx
