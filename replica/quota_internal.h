// StorageQuota: the usage of the database directory against the storage
// quota, and the state it puts the replica in (see StorageUsage).
//
// Usage is a measurement (Measure: the directory's file sizes) plus the
// bytes committed since, added by the commit leader (AddWritten: one relaxed
// atomic add, and a compare when a quota is set). The state only rises on the
// write path; a measurement, a new quota or the end of a full disk may lower
// it. Each Add/Set returns whether the state changed, so the caller
// announces it once.
//
// Thread-safety: every method may be called from any thread. The hot path
// (AddWritten, full) uses atomics; a state change takes mu_, a leaf.
#ifndef TIDEMAP_REPLICA_QUOTA_INTERNAL_H_
#define TIDEMAP_REPLICA_QUOTA_INTERNAL_H_

#include <atomic>
#include <cstdint>

#include <tidemap/base/mutex.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

class StorageQuota {
 public:
  // The state is kPruning at or above this share of the quota (in percent).
  static constexpr uint64_t kPruningPercent = 80;

  explicit StorageQuota(uint64_t quota_bytes) : quota_(quota_bytes) {}

  // Counts `bytes` committed since the last measurement.
  bool AddWritten(uint64_t bytes) TIDEMAP_EXCLUDES(mu_) {
    const uint64_t written = written_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    const uint64_t quota = quota_.load(std::memory_order_relaxed);
    if (quota == 0) return false;
    const StorageState target =
        StateFor(measured_.load(std::memory_order_relaxed) + written, quota, false);
    if (target <= state_.load(std::memory_order_relaxed)) return false;
    return Evaluate(/*may_lower=*/false);
  }
  // Replaces the estimate with a measurement of `bytes`, taken after
  // `written_before` (written_bytes() read before the measurement began).
  bool SetMeasured(uint64_t bytes, uint64_t written_before) TIDEMAP_EXCLUDES(mu_);
  bool SetQuota(uint64_t quota_bytes) TIDEMAP_EXCLUDES(mu_);
  // The file system reported ENOSPC (true) or took writes again (false).
  bool SetDiskFull(bool full) TIDEMAP_EXCLUDES(mu_);

  bool full() const { return state_.load(std::memory_order_relaxed) == StorageState::kFull; }
  uint64_t written_bytes() const { return written_.load(std::memory_order_relaxed); }
  StorageUsage usage() const;

  static StorageState StateFor(uint64_t used, uint64_t quota, bool disk_full);

 private:
  // Sets state_ from the usage; lowers it only when `may_lower`. True when it changed.
  bool Evaluate(bool may_lower) TIDEMAP_EXCLUDES(mu_);

  std::atomic<uint64_t> quota_;
  std::atomic<uint64_t> measured_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<bool> disk_full_{false};
  std::atomic<StorageState> state_{StorageState::kOk};
  std::atomic<uint64_t> transitions_{0};
  Mutex mu_;  // serializes state changes
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_QUOTA_INTERNAL_H_
