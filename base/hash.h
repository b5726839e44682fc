// Hashing: fast non-cryptographic digests (XXH3) for integrity checks,
// bucketing and Merkle item digests.
#ifndef TIDEMAP_BASE_HASH_H_
#define TIDEMAP_BASE_HASH_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tidemap {

// A 128-bit digest. Combines by XOR, which is what makes Merkle nodes
// incrementally updatable: add and remove an item digest are the same op.
struct Digest128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  Digest128& operator^=(const Digest128& o) {
    lo ^= o.lo;
    hi ^= o.hi;
    return *this;
  }
  friend Digest128 operator^(Digest128 a, const Digest128& b) { return a ^= b; }
  friend bool operator==(const Digest128&, const Digest128&) = default;
  bool IsZero() const { return lo == 0 && hi == 0; }
  // 32 lowercase hex digits, high half first.
  std::string ToHex() const;
};

uint64_t Hash64(std::string_view data, uint64_t seed = 0);
Digest128 Hash128(std::string_view data, uint64_t seed = 0);

}  // namespace tidemap

#endif  // TIDEMAP_BASE_HASH_H_
