// StorageWatch: the daemon's eye on its storage. Once per interval it asks
// the replica to take writes again after a storage error
// (Replica::RetryStorage, which reopens the store when the error is gone),
// and logs what changed since the last check (Replica::storage_health): a
// commit the storage failed, with its error (not every refused writer),
// writes coming back, by this watch or by a writer's own retry, and writes
// this database lost that a peer holds (replica/lost_writes.cc).
//
// Threading: its own thread, which waits on the disk (the reopen); Stop (or
// the destructor) wakes and joins it. The replica and the logger are
// borrowed and must outlive it.
#ifndef TIDEMAP_SERVER_STORAGE_WATCH_H_
#define TIDEMAP_SERVER_STORAGE_WATCH_H_

#include <chrono>
#include <cstdint>
#include <memory>

#include <tidemap/replica/replica.h>
#include <tidemap/server/periodic_thread.h>

namespace spdlog {
class logger;
}

namespace tidemap {

class StorageWatch {
 public:
  StorageWatch(Replica* replica, std::shared_ptr<spdlog::logger> log, uint64_t interval_ms);
  ~StorageWatch();  // Stop()
  StorageWatch(const StorageWatch&) = delete;
  StorageWatch& operator=(const StorageWatch&) = delete;

  void Stop();

 private:
  // One check: retries and logs a change of state.
  void Check();

  Replica* const replica_;
  const std::shared_ptr<spdlog::logger> log_;
  const uint64_t interval_ms_;
  // Only the watch thread touches these.
  uint64_t seen_write_errors_ = 0;
  uint64_t seen_recoveries_ = 0;
  uint64_t seen_lost_writes_ = 0;
  bool refused_ = false;
  std::chrono::steady_clock::time_point refused_since_;

  PeriodicThread thread_;  // last: started once the rest is set
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_STORAGE_WATCH_H_
