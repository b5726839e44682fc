// Clock: the one source of physical time, injected everywhere it is needed.
//
// Production code uses SystemClock; tests and the simulator use ManualClock so
// that a run is fully determined by its inputs.
#ifndef TIDEMAP_BASE_CLOCK_H_
#define TIDEMAP_BASE_CLOCK_H_

#include <atomic>
#include <cstdint>

namespace tidemap {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch. May jump in either direction.
  // Implementations are thread-safe.
  virtual uint64_t NowMillis() = 0;
};

// Wall-clock time (CLOCK_REALTIME), shifted by an optional fixed offset, which
// exists so tests can run a node with a skewed clock without touching the host's.
class SystemClock final : public Clock {
 public:
  explicit SystemClock(int64_t offset_ms = 0) : offset_ms_(offset_ms) {}
  uint64_t NowMillis() override;

 private:
  int64_t offset_ms_;
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ms) : now_ms_(start_ms) {}
  uint64_t NowMillis() override { return now_ms_.load(std::memory_order_relaxed); }
  void Set(uint64_t ms) { now_ms_.store(ms, std::memory_order_relaxed); }
  void Advance(uint64_t delta_ms) { now_ms_.fetch_add(delta_ms, std::memory_order_relaxed); }
  // Moves the clock back by `delta_ms` (clocks do that; the HLC must not).
  void Rewind(uint64_t delta_ms) { now_ms_.fetch_sub(delta_ms, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> now_ms_;
};

}  // namespace tidemap

#endif  // TIDEMAP_BASE_CLOCK_H_
