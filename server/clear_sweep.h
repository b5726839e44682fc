// ClearSweep: the daemon's removal of cleared records. Once per interval it
// calls Replica::RemoveClearedRecords, batch after batch, while a cleared map
// still holds records older than its clear (at most a bounded number of
// batches per round, so Stop is never kept waiting long). Reads hide those
// records on their own; the sweep frees their space and brings the Merkle
// tree to what every other replica that removed them holds.
//
// Threading: its own thread (each batch holds the replica's commit lock
// briefly, so writes interleave); Stop (or the destructor) wakes and joins it.
// The replica and the logger are borrowed and must outlive it.
#ifndef TIDEMAP_SERVER_CLEAR_SWEEP_H_
#define TIDEMAP_SERVER_CLEAR_SWEEP_H_

#include <cstdint>
#include <memory>
#include <string>

#include <tidemap/replica/replica.h>
#include <tidemap/server/periodic_thread.h>

namespace spdlog {
class logger;
}

namespace tidemap {

class ClearSweep {
 public:
  ClearSweep(Replica* replica, std::shared_ptr<spdlog::logger> log, uint64_t interval_ms);
  ~ClearSweep();  // Stop()
  ClearSweep(const ClearSweep&) = delete;
  ClearSweep& operator=(const ClearSweep&) = delete;

  void Stop();

 private:
  // One round: batches until nothing is pending or the round's bound, a log
  // line when the pending maps are done, and one for a new error.
  void Sweep();

  Replica* const replica_;
  const std::shared_ptr<spdlog::logger> log_;
  // Only the sweep thread touches these: records removed since the pending
  // maps started, and the last error (each new one is logged once).
  uint64_t removed_ = 0;
  std::string last_error_;

  PeriodicThread thread_;  // last: started once the rest is set
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_CLEAR_SWEEP_H_
