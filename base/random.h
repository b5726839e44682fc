// Random: injected randomness, so a seeded run replays exactly.
#ifndef TIDEMAP_BASE_RANDOM_H_
#define TIDEMAP_BASE_RANDOM_H_

#include <cstdint>
#include <vector>

namespace tidemap {

class Random {
 public:
  virtual ~Random() = default;
  // A uniformly distributed 64-bit value.
  virtual uint64_t Next64() = 0;

  // Uniform in [0, n). REQUIRES: n > 0.
  uint64_t Uniform(uint64_t n);
  // True with probability `p` (0..1).
  bool Bernoulli(double p);
  // Uniform in [0, 1).
  double NextDouble();
};

// xoshiro256** seeded through splitmix64: fast, small state, good quality,
// and identical output for the same seed on every platform. Not thread-safe.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed);
  uint64_t Next64() override;

 private:
  uint64_t s_[4];
};

// Samples ranks 0..n-1 with P(rank k) proportional to 1/(k+1)^theta.
// Precomputes the CDF (n doubles); sampling is a binary search.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double theta);
  uint64_t Sample(Random& rng) const;

 private:
  std::vector<double> cdf_;  // n entries
};

}  // namespace tidemap

#endif  // TIDEMAP_BASE_RANDOM_H_
