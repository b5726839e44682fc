#include <tidemap/base/random.h>

#include <algorithm>
#include <cmath>

#include <tidemap/base/check.h>

namespace tidemap {

uint64_t Random::Uniform(uint64_t n) {
  TIDEMAP_CHECK(n > 0);
  // Rejection sampling keeps it exactly uniform and portable.
  const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
  uint64_t x = Next64();
  while (x >= limit) x = Next64();
  return x % n;
}

double Random::NextDouble() { return static_cast<double>(Next64() >> 11) * 0x1.0p-53; }

bool Random::Bernoulli(double p) { return NextDouble() < p; }

namespace {
uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

SeededRandom::SeededRandom(uint64_t seed) {
  for (uint64_t& s : s_) s = SplitMix64(seed);
}

uint64_t SeededRandom::Next64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

ZipfSampler::ZipfSampler(uint64_t n, double theta) : cdf_(n) {
  TIDEMAP_CHECK(n > 0);
  double sum = 0;
  for (uint64_t k = 0; k < n; ++k) {
    sum += 1.0 / std::pow(static_cast<double>(k + 1), theta);
    cdf_[k] = sum;
  }
  for (uint64_t k = 0; k < n; ++k) cdf_[k] /= sum;
}

uint64_t ZipfSampler::Sample(Random& rng) const {
  const double u = rng.NextDouble();
  const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
  const auto rank = static_cast<uint64_t>(it - cdf_.begin());
  return rank < cdf_.size() ? rank : cdf_.size() - 1;
}

}  // namespace tidemap
