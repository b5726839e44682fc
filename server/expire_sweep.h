// ExpireSweep: the daemon's clock for per-record TTL. Once per interval it
// calls Replica::ExpireRecords, which tells subscribers (the HTTP watch
// streams) of the records whose expiry passed, one `expire` event each.
// Reads hide an expired record on their own and the maintenance round's GC
// purges it; the sweep only announces.
//
// Threading: its own thread (ExpireRecords reads the expiry index and writes
// one meta row); Stop (or the destructor) wakes and joins it. The replica and
// the logger are borrowed and must outlive it.
#ifndef TIDEMAP_SERVER_EXPIRE_SWEEP_H_
#define TIDEMAP_SERVER_EXPIRE_SWEEP_H_

#include <cstdint>
#include <memory>
#include <string>

#include <tidemap/replica/replica.h>
#include <tidemap/server/periodic_thread.h>

namespace spdlog {
class logger;
}

namespace tidemap {

class ExpireSweep {
 public:
  ExpireSweep(Replica* replica, std::shared_ptr<spdlog::logger> log, uint64_t interval_ms);
  ~ExpireSweep();  // Stop()
  ExpireSweep(const ExpireSweep&) = delete;
  ExpireSweep& operator=(const ExpireSweep&) = delete;

  void Stop();

 private:
  // One round: ExpireRecords, and a log line for a new error.
  void Sweep();

  Replica* const replica_;
  const std::shared_ptr<spdlog::logger> log_;
  std::string last_error_;  // only the sweep thread touches it: logs each new error once

  PeriodicThread thread_;  // last: started once the rest is set
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_EXPIRE_SWEEP_H_
