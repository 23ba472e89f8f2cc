#pragma once
// A seeded generator whose stream depends only on the seed: xoshiro256** seeded through
// splitmix64, with our own uniform and normal transforms (std:: distributions differ between
// standard libraries, which would make runs irreproducible across machines).
#include <cstdint>
#include <string>
#include <vector>

namespace cnx {

class Generator {
public:
    explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
    void manual_seed(uint64_t seed);
    uint64_t next_u64();
    double uniform();                       // [0, 1)
    double uniform(double lo, double hi);   // [lo, hi)
    double normal();                        // N(0, 1), Box-Muller
    uint64_t randint(uint64_t n);           // [0, n), unbiased
    std::vector<int64_t> permutation(int64_t n);  // Fisher-Yates
    bool bernoulli(double p) { return uniform() < p; }

    // Serialised state for checkpoints: "s0 s1 s2 s3 has_spare spare_bits".
    std::string state() const;
    void set_state(const std::string& s);

private:
    uint64_t s_[4];
    bool has_spare_ = false;
    double spare_ = 0;
};

// The process-wide generator used when an op or initialiser is given none.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace cnx
