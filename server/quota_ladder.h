// QuotaLadder: the daemon's storage quota at work. It logs each change of
// the storage state (a kQuota event, whichever thread caused it). Once per
// interval it measures the database directory (Replica::MeasureStorage), and
// while the state is `pruning` or `full` frees space in order, logging each
// step:
//   1. prunes the oplog to the lowest cursor of the connected peers: the
//      retention kept for absent peers gives way first, with a warning naming
//      the peers that will then need a tree diff;
//   2. purges expired records and purgeable tombstones (PurgeTombstones, its
//      usual all-peers-acknowledged and horizon rule);
//   3. compacts the database, so the freed ranges leave the disk;
// then measures again. While usage stays at or above the quota the replica
// refuses writes that add data (QuotaExceeded); a measurement below it, a
// raised quota (SetQuota, on reload) or freed space lets them in again.
// The ladder runs at most once per ladder_interval_ms, and less often (up to
// 12 intervals apart) while it frees nothing.
//
// Threading: its own thread (PeriodicThread), and a subscription to the
// replica, whose callback logs on the thread that changed the state. The
// replica and the logger are borrowed and must outlive it; `peers` is called
// on its thread.
#ifndef TIDEMAP_SERVER_QUOTA_LADDER_H_
#define TIDEMAP_SERVER_QUOTA_LADDER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/periodic_thread.h>

namespace spdlog {
class logger;
}

namespace tidemap {

struct QuotaLadderOptions {
  uint64_t interval_ms = 1000;         // how often usage is measured
  uint64_t ladder_interval_ms = 5000;  // the least time between two ladders
  // The peers and whether each is connected (nullptr: none known).
  std::function<std::vector<net::PeerStatus>()> peers;
};

class QuotaLadder {
 public:
  QuotaLadder(Replica* replica, std::shared_ptr<spdlog::logger> log, QuotaLadderOptions options);
  ~QuotaLadder();  // Stop()
  QuotaLadder(const QuotaLadder&) = delete;
  QuotaLadder& operator=(const QuotaLadder&) = delete;

  // Sets the quota (0: none) and applies it at once; logs the change.
  void SetQuota(uint64_t quota_bytes);
  void Stop();

 private:
  void Check();
  // The three steps, each logged; returns the usage measured after them.
  StorageUsage RunLadder();
  void PruneOplog();

  Replica* const replica_;
  const std::shared_ptr<spdlog::logger> log_;
  const QuotaLadderOptions options_;
  // The ladder thread's: when the next ladder may run (steady ms), and how
  // many ladder intervals apart they are now.
  uint64_t next_ladder_ms_ = 0;
  uint64_t ladder_backoff_ = 1;
  Replica::SubscriptionId subscription_ = 0;

  PeriodicThread thread_;  // last: started once the rest is set
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_QUOTA_LADDER_H_
