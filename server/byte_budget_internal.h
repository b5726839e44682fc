// ByteBudget (not installed): a fixed number of bytes that many holders draw
// from, so memory in flight across them stays bounded (the HTTP server holds
// each request body it reads against one, server/http.cc). A ByteReservation
// is one holder's share: it grows on request, only while the budget has room,
// and returns everything it holds when destroyed (RAII), however its holder
// ends.
//
// Threading: ByteBudget is thread-safe. A ByteReservation is used by one
// thread at a time. Lifetime: the budget must outlive its reservations.
#ifndef TIDEMAP_SERVER_BYTE_BUDGET_INTERNAL_H_
#define TIDEMAP_SERVER_BYTE_BUDGET_INTERNAL_H_

#include <cstdint>

#include <tidemap/base/mutex.h>

namespace tidemap {

class ByteBudget {
 public:
  explicit ByteBudget(uint64_t bytes_max) : bytes_max_(bytes_max) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  uint64_t bytes_max() const { return bytes_max_; }
  // Held by every reservation now; never above bytes_max().
  uint64_t bytes_held() const TIDEMAP_EXCLUDES(mu_);
  // The most held at once since construction; never above bytes_max().
  uint64_t bytes_held_peak() const TIDEMAP_EXCLUDES(mu_);

 private:
  friend class ByteReservation;
  // Takes `bytes` more if they fit in what remains; false (nothing taken) if not.
  bool TryTake(uint64_t bytes) TIDEMAP_EXCLUDES(mu_);
  // Returns `bytes` taken before.
  void Give(uint64_t bytes) TIDEMAP_EXCLUDES(mu_);

  const uint64_t bytes_max_;
  mutable Mutex mu_;
  uint64_t held_ TIDEMAP_GUARDED_BY(mu_) = 0;
  uint64_t peak_ TIDEMAP_GUARDED_BY(mu_) = 0;
};

class ByteReservation {
 public:
  // Holds nothing yet. `budget` is borrowed and must outlive this.
  explicit ByteReservation(ByteBudget* budget) : budget_(budget) {}
  ~ByteReservation() { Release(); }
  ByteReservation(const ByteReservation&) = delete;
  ByteReservation& operator=(const ByteReservation&) = delete;

  // Grows the hold to `bytes` in all (a smaller or equal `bytes` changes
  // nothing and succeeds). False, holding what it held before, when the
  // budget has not the difference left.
  bool GrowTo(uint64_t bytes);
  // Returns everything held to the budget.
  void Release();
  uint64_t bytes() const { return bytes_; }

 private:
  ByteBudget* const budget_;
  uint64_t bytes_ = 0;
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_BYTE_BUDGET_INTERNAL_H_
