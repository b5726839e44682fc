// WatchHold: how much of the oplog a resumable watch stream still needs.
// A watcher that disconnected at most retention_ms ago may resume from the
// last seq it saw; the hold is the replica's last seq as it was at a moment at
// least retention_ms ago, so every seq above it stays (Replica::PruneOplog's
// `hold_after`) whatever the peers acknowledged.
//
// It samples (time, last seq) pairs, one per maintenance round: the last seq
// at a sampled moment is at most the one at any later disconnect, so the
// promise holds between samples too. Before any sample is retention_ms old
// (right after a start) the hold is 0: everything is kept. At most one sample
// older than retention_ms is kept, so the samples number about
// retention_ms / the sampling interval.
//
// Not thread-safe: the node's event loop owns it.
#ifndef TIDEMAP_NET_WATCH_HOLD_H_
#define TIDEMAP_NET_WATCH_HOLD_H_

#include <cstdint>
#include <deque>
#include <utility>

namespace tidemap::net {

class WatchHold {
 public:
  // retention_ms 0: nothing is held (HoldAfter returns UINT64_MAX).
  explicit WatchHold(uint64_t retention_ms) : retention_ms_(retention_ms) {}

  // Records that the replica's last seq was `last_seq` at `now_ms`.
  void Record(uint64_t now_ms, uint64_t last_seq);

  // The seq above which the oplog must stay for watchers gone since
  // now_ms - retention_ms or later.
  uint64_t HoldAfter(uint64_t now_ms);

  uint64_t retention_ms() const { return retention_ms_; }

 private:
  const uint64_t retention_ms_;
  std::deque<std::pair<uint64_t, uint64_t>> samples_;  // (time ms, last seq), oldest first
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_WATCH_HOLD_H_
