#include <tidemap/base/hash.h>

#include <xxhash.h>

#include <cstdio>

namespace tidemap {

std::string Digest128::ToHex() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(buf, 32);
}

uint64_t Hash64(std::string_view data, uint64_t seed) {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

Digest128 Hash128(std::string_view data, uint64_t seed) {
  const XXH128_hash_t h = XXH3_128bits_withSeed(data.data(), data.size(), seed);
  return Digest128{h.low64, h.high64};
}

}  // namespace tidemap
