// Hybrid logical clock (HLC) timestamps and the clock that issues them.
//
// A Timestamp is 64 bits: 48 bits of physical milliseconds since the Unix
// epoch, then a 16-bit logical counter. Together with the 64-bit id of the node
// that wrote it, it totally orders every version of every key (Version).
#ifndef TIDEMAP_HLC_HLC_H_
#define TIDEMAP_HLC_HLC_H_

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include <tidemap/base/clock.h>
#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>

namespace tidemap {

struct Timestamp {
  static constexpr int kLogicalBits = 16;
  static constexpr uint64_t kLogicalMax = 0xffff;
  static constexpr uint64_t kPhysicalMax = (uint64_t{1} << 48) - 1;
  // The printable form has a 4-digit year; physical time past 9999-12-31 is refused.
  static constexpr uint64_t kPrintablePhysicalMax = 253402300799999;

  uint64_t raw = 0;

  static constexpr Timestamp FromParts(uint64_t physical_ms, uint64_t logical) {
    return Timestamp{(physical_ms << kLogicalBits) | (logical & kLogicalMax)};
  }
  constexpr uint64_t physical_ms() const { return raw >> kLogicalBits; }
  constexpr uint64_t logical() const { return raw & kLogicalMax; }
  constexpr bool IsZero() const { return raw == 0; }

  // Fixed-width text that sorts in timestamp order, e.g. "2026-11-22T02:15:20.123Z-00007".
  // (Physical time past kPrintablePhysicalMax, which Hlc::Update refuses, prints
  // with a five-digit year: still the right date, but longer and not parseable.)
  std::string ToString() const;
  // Inverse of ToString(); InvalidArgument on anything else.
  static Result<Timestamp> Parse(std::string_view text);

  friend constexpr auto operator<=>(const Timestamp&, const Timestamp&) = default;
};

// A version of a record: ordered by (hlc, origin node id). The greater version wins.
struct Version {
  Timestamp hlc;
  uint64_t origin = 0;

  friend constexpr auto operator<=>(const Version&, const Version&) = default;
  // "<hlc text>/<origin as 16 hex digits>"
  std::string ToString() const;
};

// A node id as 16 lowercase hex digits.
std::string NodeIdToString(uint64_t node_id);

struct HlcOptions {
  // A remote timestamp more than this far ahead of local physical time is refused.
  uint64_t max_clock_offset_ms = 60'000;
};

// The clock. Thread-safe (one internal mutex). `clock` must outlive the Hlc.
//
// Persistence is the owner's job: the replica reserves an upper bound in its
// storage and, after a restart, passes it as `floor`, so timestamps keep
// growing even when the physical clock was set back.
class Hlc {
 public:
  Hlc(Clock* clock, HlcOptions options, Timestamp floor = Timestamp{});

  // A timestamp for a local event: greater than every timestamp this clock has
  // issued or merged before. When the logical counter would overflow, the
  // physical part advances by one millisecond.
  Timestamp Now() TIDEMAP_EXCLUDES(mu_);

  // Merges a timestamp received from `peer` (used in the error message), so
  // that later Now() results are greater than it. Refused, with the clock left
  // untouched, when `remote` is ahead of local physical time by more than
  // max_clock_offset_ms; the message names the peer, the offset and the limit.
  // Also refused when `remote` is past kPrintablePhysicalMax, whatever the limit.
  Status Update(Timestamp remote, std::string_view peer) TIDEMAP_EXCLUDES(mu_);

  // The check Update() makes, without changing anything.
  Status CheckOffset(Timestamp remote, std::string_view peer) const;

  // The greatest timestamp issued or merged so far (the floor at first).
  Timestamp Last() const TIDEMAP_EXCLUDES(mu_);

  // Raises the clock to at least `t` (no offset check: for values read back from our own storage).
  void RaiseFloor(Timestamp t) TIDEMAP_EXCLUDES(mu_);

  const HlcOptions& options() const { return options_; }

 private:
  Clock* const clock_;
  const HlcOptions options_;
  mutable Mutex mu_;
  Timestamp last_ TIDEMAP_GUARDED_BY(mu_);
};

}  // namespace tidemap

#endif  // TIDEMAP_HLC_HLC_H_
