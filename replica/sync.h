// SyncSession: the sans-I/O sync protocol between this replica and one peer.
//
// It never touches a socket or a clock: the owner (net/ in production, the
// simulator in tests) feeds it decoded messages and the current time, and
// sends whatever it returns, in order, over one reliable ordered connection.
// One session lives as long as one connection; a new connection starts a new
// session, which resumes from the cursors persisted in the replica.
//
// Over one session, both directions at once:
//  - oplog tail streaming: our changes after the peer's acknowledged cursor, in
//    batches of at most batch_records_max / batch_bytes_max, at most
//    batches_in_flight_max unacknowledged; a key changed many times ships once;
//    rows that originated at the peer are not echoed back;
//  - tree diff: on first contact, when the peer's cursor fell below our pruned
//    point, and every diff_interval_ms; it descends the Merkle trees only where
//    digests differ, exchanges (key hash, version) summaries of the differing
//    buckets, then only the records one side lacks or holds older;
//  - a peer whose database changed since we stored its cursor (another
//    incarnation: wiped or replaced; or fewer rows than we acknowledged from
//    it: restored from a backup) is repaired as on first contact, and the
//    records it wrote are resynced both ways (OriginRecords); the comment at
//    the top of sync.cc has the details;
//  - tombstone GC: a peer that sends a live record at or below our GC
//    watermark for a key we do not hold (its state predates the watermark) is
//    repaired: the purged delete is restored and shipped to it (or, with
//    refuse_stale_peers, it is refused with a Goodbye telling it to
//    re-bootstrap).
//
// The session reaches its replica only through SyncStore
// (replica/sync_store.h), which Replica implements.
//
// Thread-safety: none; one owner thread drives a session. The store must
// outlive it.
#ifndef TIDEMAP_REPLICA_SYNC_H_
#define TIDEMAP_REPLICA_SYNC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/replica/sync_store.h>
#include <tidemap/schemas/messages.h>

namespace tidemap {

struct SyncOptions {
  size_t batch_records_max = 1000;
  size_t batch_bytes_max = size_t{1} << 20;  // a record larger than this goes alone
  size_t batches_in_flight_max = 4;
  size_t diff_chunk_bytes_max = size_t{1} << 20;  // per TreeNodes/BucketSummaries/DiffRecords
  // The bucket summaries and records a diff (or a resync) owes the peer are
  // read and sent a window at a time: one Receive or Poll emits about this
  // many bytes of them at most (a summary entry counts about 12), and the
  // next Poll the next window. An owner that polls only when its send queue
  // has room keeps the memory of a bootstrap bounded.
  size_t records_window_bytes = size_t{4} << 20;
  uint64_t diff_interval_ms = 60'000;  // periodic anti-entropy (0: never)
  // After a BatchRefused, or records a diff refused for their clock, wait
  // this long before sending again (or asking again, with another diff).
  uint64_t refused_retry_ms = 5'000;
  // While diffs keep refusing records for their clock (each moves all of
  // them again), each pause is twice the one before, up to this.
  uint64_t refused_retry_max_ms = 80'000;
  // A peer that sends a live record at or below our GC watermark for a key
  // we do not hold (its state predates the watermark): false, the default,
  // answers it with the purged delete, restored (StaleRecords::kRedelete)
  // and a tree diff that ships it; true ends the session with a Goodbye that
  // tells the peer to re-bootstrap (its data never merges).
  bool refuse_stale_peers = false;
};

// What a session has done, for status, metrics and benchmarks.
struct SyncStats {
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t records_sent = 0;
  uint64_t records_applied = 0;  // received records that won here
  // Records of a tree diff (or an origin resync) refused for a timestamp
  // beyond our max_clock_offset, counted each time: the diff applies the
  // others, the peer keeps these, and a diff after refused_retry_ms asks for
  // them again. (A streamed batch with such a record is refused whole.)
  uint64_t records_refused = 0;
  uint64_t diffs_completed = 0;
  uint64_t acked_seq = 0;  // the peer's cursor into our oplog
  // Tombstones received at or below our GC watermark for keys we do not
  // hold, not stored (a purge here already stands for them).
  uint64_t below_watermark_dropped = 0;
  // Live records received at or below our GC watermark for keys we do not
  // hold, answered with the delete restored (refuse_stale_peers false), and
  // what the first one was.
  uint64_t stale_redeleted = 0;
  std::string stale_note;
  bool diff_in_progress = false;
  // The peer's clock minus ours when its hello arrived (latency included).
  int64_t peer_clock_offset_ms = 0;
  // While diff_in_progress: an estimate of how far it got (0..99), from the
  // records received against how many more the peer holds than we did.
  double sync_percent = 0;
  std::string last_error;  // e.g. the peer refused our clock, or closed the session
  // Set when the peer's database changed since we stored its state (wiped,
  // replaced, restored from a backup): what we found and what we do.
  std::string peer_reset;
};

class SyncSession {
 public:
  // `peer_node_id` is the authenticated id of the other side. `store` (the
  // replica) must outlive the session.
  SyncSession(SyncStore* store, uint64_t peer_node_id, SyncOptions options);
  ~SyncSession();
  SyncSession(const SyncSession&) = delete;
  SyncSession& operator=(const SyncSession&) = delete;

  // The opening messages (our Hello). Call once, first.
  Status Start(uint64_t now_ms, std::vector<msg::Message>* out);

  // Handles one message from the peer and appends the replies to `out`.
  // A non-OK status means the session must be closed (protocol violation,
  // wrong peer, incompatible version, with refuse_stale_peers a peer whose
  // state predates our GC watermark, a Goodbye from the peer); the message says why. When `out`
  // then ends with a Goodbye, send it before closing: it tells the peer why.
  // Refusals of our data by the peer are not errors: they show in
  // stats().last_error.
  Status Receive(const msg::Message& message, uint64_t now_ms, std::vector<msg::Message>* out);

  // Appends what is due now: new oplog rows to stream (within the in-flight
  // window), the next window of records a running diff or resync owes the
  // peer, a periodic diff. Call after local writes, when the transport's send
  // queue drained, and on a timer.
  Status Poll(uint64_t now_ms, std::vector<msg::Message>* out);

  // Asks for a tree diff as soon as the handshake is done (or at the next
  // Poll), whatever the cursors say: an operator's "repair now".
  void RequestDiff();

  // True when nothing is in flight or pending in either direction.
  bool Idle() const;

  const SyncStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_SYNC_H_
