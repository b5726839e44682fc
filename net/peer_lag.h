// PeerLag: how many of our changes a peer still lacks, for status.
//
// A peer lacks the entries of our oplog after its cursor (the seq it
// acknowledged) except those that came from it: written by it or received
// from it, which are never streamed back. On the receiving side of a
// bootstrap the oplog fills with the source's records while the source's
// cursor waits for the repair to end; they are not counted, so that side
// shows the lag of what the source truly lacks. A seq missing from the oplog
// (pruned past the cursor by the retention cap) counts as lacking.
//
// It counts incrementally: each call reads only the entries appended since
// the last one, and those from the cursor to the next mark again (fewer than
// 2 * kMarkEntries), keeping about one mark per kMarkEntries entries above
// the cursor.
//
// Thread-safe (one mutex; a call may read the oplog while holding it). The
// replica is borrowed and must outlive it.
#ifndef TIDEMAP_NET_PEER_LAG_H_
#define TIDEMAP_NET_PEER_LAG_H_

#include <cstdint>
#include <deque>
#include <map>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>

namespace tidemap::net {

class PeerLag {
 public:
  static constexpr uint64_t kMarkEntries = 1024;

  explicit PeerLag(const Replica* replica) : replica_(replica) {}

  // The entries in (acked, last_seq] that did not come from `peer` (see the
  // top of the file); errors are the oplog's read errors.
  Result<uint64_t> Count(uint64_t peer, uint64_t acked, uint64_t last_seq) TIDEMAP_EXCLUDES(mu_);

 private:
  struct Mark {
    uint64_t seq;      // entries up to this seq counted
    uint64_t lacking;  // of them, from the first mark's seq on
  };
  // Marks of one peer, oldest first; the first is at or below its cursor.
  using Marks = std::deque<Mark>;

  // Counts the entries after marks->back() up to last_seq, adding marks.
  Status Extend(uint64_t peer, uint64_t last_seq, Marks* marks) const;
  // The lacking entries in (from, to], read from the oplog.
  Result<uint64_t> Scan(uint64_t peer, uint64_t from, uint64_t to) const;

  const Replica* const replica_;
  Mutex mu_;
  std::map<uint64_t, Marks> peers_ TIDEMAP_GUARDED_BY(mu_);
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_PEER_LAG_H_
