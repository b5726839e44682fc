#include <tidemap/net/watch_hold.h>

namespace tidemap::net {

void WatchHold::Record(uint64_t now_ms, uint64_t last_seq) {
  if (retention_ms_ == 0) return;
  samples_.emplace_back(now_ms, last_seq);
}

uint64_t WatchHold::HoldAfter(uint64_t now_ms) {
  if (retention_ms_ == 0) return UINT64_MAX;
  if (now_ms < retention_ms_) return 0;
  const uint64_t cutoff = now_ms - retention_ms_;
  // Drop the samples older than cutoff but the newest of them: it is the one
  // that bounds what a watcher gone since the cutoff may ask for.
  while (samples_.size() >= 2 && samples_[1].first <= cutoff) samples_.pop_front();
  if (samples_.empty() || samples_.front().first > cutoff) return 0;
  return samples_.front().second;
}

}  // namespace tidemap::net
