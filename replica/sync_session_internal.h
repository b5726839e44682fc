// SyncSession::Impl, the state of one sync session, shared by the files
// that implement it: replica/sync.cc (the session, hello, streaming, acks,
// goodbye, polling) and replica/sync_diff.cc (tree diffs and origin
// resyncs). Not installed. Not thread-safe: a session is driven by one
// caller at a time (see replica/sync.h).
#ifndef TIDEMAP_REPLICA_SYNC_SESSION_INTERNAL_H_
#define TIDEMAP_REPLICA_SYNC_SESSION_INTERNAL_H_

#include <algorithm>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <tidemap/merkle/merkle.h>
#include <tidemap/replica/sync.h>

namespace tidemap {

namespace sync_detail {

// A diff's records are read by one pass over the stored records, rather than
// a lookup per key, when they are at least this many and at least one in
// kDenseDiffShare of the stored keys: a lookup at a random place costs about
// as much as reading a few dozen records in order.
inline constexpr size_t kDenseDiffKeysMin = 1024;
inline constexpr uint64_t kDenseDiffShare = 8;
// What a bucket summary entry (or a bucket's header) counts for in chunks and
// windows: about its encoded size.
inline constexpr size_t kSummaryEntryBytes = 12;

inline size_t RecordBytes(const KeyedRecord& r) {
  return r.map.size() + r.key.size() + r.value.size() + 32;
}

inline const SummaryEntry* FindEntry(const std::vector<SummaryEntry>& entries, uint64_t key_hash) {
  auto it = std::lower_bound(entries.begin(), entries.end(), key_hash,
                             [](const SummaryEntry& e, uint64_t h) { return e.key_hash < h; });
  return it != entries.end() && it->key_hash == key_hash ? &*it : nullptr;
}

}  // namespace sync_detail

using sync_detail::FindEntry;
using sync_detail::kDenseDiffKeysMin;
using sync_detail::kDenseDiffShare;
using sync_detail::kSummaryEntryBytes;
using sync_detail::RecordBytes;

struct SyncSession::Impl {
  Impl(SyncStore* st, uint64_t peer, SyncOptions o)
      : store(st), info(st->Info()), peer_id(peer), options(o) {}

  SyncStore* const store;
  const SyncStoreInfo info;  // fixed while the store is open
  const uint64_t peer_id;
  const SyncOptions options;
  SyncStats stats;

  uint64_t out_msg_seq = 0;  // last message seq we sent
  uint64_t in_msg_seq = 0;   // last message seq we received
  bool started = false;
  bool got_hello = false;
  Digest128 hello_root;  // our root as sent in our Hello

  // Outbound streaming. Every row below stream_next was sent (or skipped).
  uint64_t stream_next = 1;
  std::deque<uint64_t> in_flight;  // last_seq of each unacknowledged batch
  uint64_t session_acked = 0;      // highest seq acknowledged in this session
  uint64_t blocked_until_ms = 0;   // after a BatchRefused
  // What stats.last_error reports, so that only the event that ends it
  // clears it.
  enum class Error {
    kNone,
    kRefusedPeerBatch,    // we refused the peer's batch; ends when one is applied
    kPeerRefusedOurs,     // the peer refused ours; ends when it acknowledges one
    kRefusedDiffRecords,  // we refused records of a diff; ends with a diff that refuses none
    kPeerClosed,          // the peer's Goodbye
  };
  Error error = Error::kNone;
  void SetError(Error kind, std::string message) {
    error = kind;
    stats.last_error = std::move(message);
  }
  void EndError(Error kind) {
    if (error != kind) return;
    error = Error::kNone;
    stats.last_error.clear();
  }
  // Records a tree diff (or an origin resync) received from the peer were
  // refused for their clock: once no diff runs, another is due from
  // diff_retry_at_ms, diff_retry_pause_ms later (refused_retry_ms, doubled
  // while diffs keep refusing, up to refused_retry_max_ms).
  bool diff_retry_due = false;
  uint64_t diff_retry_at_ms = 0;
  uint64_t diff_retry_pause_ms = 0;
  // For the progress estimate of a diff (stats.sync_percent): our records
  // when the session started, the peer's (from its Hello), and the records
  // the running diff received and sent.
  uint64_t records_at_start = 0;
  uint64_t peer_records = 0;
  uint64_t diff_records_received = 0;
  uint64_t diff_records_sent = 0;

  // What we had stored about the peer when the session started (nullopt:
  // first contact), and our state then: the Hello's last seq and root.
  std::optional<PeerState> stored;
  uint64_t start_last_seq = 0;
  uint64_t start_pruned = 0;
  // From the peer's Hello.
  uint64_t peer_incarnation = 0;
  Version peer_watermark;

  // The peer's persisted cursor into our oplog. While `repair_pending`, the
  // peer is missing rows we no longer hold (first contact, its cursor fell
  // below our pruned point, or its database changed): acks are held in
  // memory until a tree diff has repaired it, then the cursor jumps to
  // max(snapshot_seq, acks).
  uint64_t stored_cursor = 0;
  bool repair_pending = false;
  uint64_t snapshot_seq = 0;
  // The peer's whole stored state is replaced once the repair (and, if
  // `peer_changed`, the resync) is done; until then nothing is persisted.
  bool restate_pending = false;
  bool peer_changed = false;      // its database changed since we stored its state
  bool resync_pending = false;    // we sent its origin records; its own are due
  uint64_t repaired_acked = 0;    // the cursor the repair established
  uint64_t session_received = 0;  // the highest of the peer's seqs acked here

  // The running tree diff, if any.
  uint64_t diff_id = 0;
  bool diff_initiator = false;
  // The running diff began while repair_pending, after snapshot_seq was
  // taken, so finishing it repairs the peer. A diff already running when a
  // gap appears compared trees that may predate the missing rows: it does not.
  bool diff_repairs = false;
  bool diff_answered = false;  // the peer replied to our first step
  uint64_t diff_counter = 0;
  uint64_t last_diff_ms = 0;
  bool diff_requested = false;
  // Chunks of a step being received.
  std::vector<uint32_t> pending_parents;
  std::vector<uint64_t> pending_digests;
  std::vector<uint64_t> pending_send;     // key hashes we owe the peer (from summaries)
  std::vector<uint64_t> pending_request;  // key hashes we want from the peer

  // Bucket summaries we owe the peer (the last step of a diff), read and
  // sent a window at a time (PumpOwed) like records: in a bootstrap every
  // bucket differs, and the summaries of every key would otherwise be read
  // and queued at once. `buckets` ascending; `next` is the first not sent.
  struct SummariesOut {
    bool active = false;
    std::vector<uint32_t> buckets;
    size_t next = 0;
  };
  SummariesOut summaries_out;
  // Records we owe the peer, read and sent a window at a time (PumpOwed),
  // so that a bootstrap never holds more than a window of them in memory.
  // The records of a diff step: sorted key hashes, the next to read, and the
  // requests that ride on the last chunk.
  struct DiffOut {
    bool active = false;
    std::vector<uint64_t> key_hashes;
    size_t next = 0;
    std::vector<uint64_t> requests;
    // A dense diff (a large share of our keys, as in a bootstrap) is read by
    // one pass over the records, resuming after `cursor`, instead of a
    // lookup per key (RecordsByKeyHash) at random places on disk.
    bool scan = false;
    std::string cursor;
  };
  DiffOut diff_out;
  // Resyncs of an origin's records (see the comment at the top): where the
  // scan of each resumes. Both sides' may run at once.
  struct OriginOut {
    uint64_t origin = 0;
    std::string cursor;
  };
  std::deque<OriginOut> origin_out;

  // Appends a message with the next seq, built in place (GCC 12 warns about
  // moving a filled std::variant at -O3, a false positive).
  template <typename T>
  void Emit(T&& body, std::vector<msg::Message>* out) {
    msg::Message& m = out->emplace_back();
    m.seq = ++out_msg_seq;
    m.body.emplace<std::decay_t<T>>(std::forward<T>(body));
    ++stats.messages_sent;
  }

  bool IsLowerId() const { return info.node_id < peer_id; }

  Status PersistAck(uint64_t seq) {
    if (repair_pending || resync_pending || restate_pending) return Status::Ok();
    stats.acked_seq = std::max(stats.acked_seq, seq);
    return store->SavePeerAcked(peer_id, seq);
  }

  // The repair diff (or equal roots) made the peer hold everything up to `repaired`.
  Status RepairDone(uint64_t repaired) {
    repair_pending = false;
    repaired_acked = std::max(repaired_acked, repaired);
    return MaybeSettle();
  }

  // Persists what the repair and the resync established, once both are done.
  Status MaybeSettle() {
    if (repair_pending || resync_pending) return Status::Ok();
    const uint64_t acked = std::max(repaired_acked, session_acked);
    if (!restate_pending) {
      stored_cursor = std::max(stored_cursor, acked);
      return PersistAck(acked);
    }
    restate_pending = false;
    PeerState state;
    state.acked = acked;
    state.incarnation = peer_incarnation;
    state.received = session_received;
    if (stored.has_value() && !peer_changed) {
      state.received = std::max(state.received, stored->received);
    }
    stored_cursor = acked;
    stats.acked_seq = acked;
    return store->ReplacePeer(peer_id, state);
  }

  // Ends the session: the peer sent live records at or below our GC watermark.
  Status RefuseStale(const ApplyResult& r, std::vector<msg::Message>* out) {
    std::string reason = "peer " + NodeIdToString(peer_id) +
                         ": its state predates our GC watermark " +
                         r.first_stale_watermark.ToString() + " (it sent " + r.first_stale;
    if (r.stale > 1) reason += " and " + std::to_string(r.stale - 1) + " more";
    reason += ", deleted and purged here); re-bootstrap it from an empty data dir";
    Emit(msg::Goodbye{reason}, out);
    return Status::Refused(reason);
  }

  // Applies records the peer sent, in slices within our batch limit; a slice
  // refused for a clock too far ahead is applied without the records that
  // are (the peer keeps those, and a later diff, see Poll, asks again).
  // `context` names the path for errors.
  Status ApplyFromPeer(const std::vector<KeyedRecord>& records, const char* context,
                       std::vector<msg::Message>* out) {
    const size_t slice = std::max<size_t>(1, info.apply_records_max);
    for (size_t i = 0; i < records.size(); i += slice) {
      const std::span<const KeyedRecord> part(records.data() + i,
                                              std::min(slice, records.size() - i));
      auto applied = store->ApplyPeerRecords(part, peer_id, StalePolicy());
      if (!applied.ok() && applied.status().IsQuotaExceeded()) {
        // Out of storage: the peer still holds them; a later diff asks again.
        RefuseForQuota(records.size() - i, applied.status());
        return Status::Ok();
      }
      if (!applied.ok() && applied.status().IsRefused()) {
        applied = ApplyWithinClockOffset(part, applied.status());
      }
      if (!applied.ok()) return applied.status().WithContext(context);
      TIDEMAP_RETURN_IF_ERROR(Applied(*applied, out));
    }
    return Status::Ok();
  }

  // Applies the records of `part` whose timestamps are within our
  // max_clock_offset, after ApplyPeerRecords refused `part` as a whole with
  // `refusal`, and counts the others as refused.
  Result<ApplyResult> ApplyWithinClockOffset(std::span<const KeyedRecord> part,
                                             const Status& refusal) {
    const std::string peer_name = NodeIdToString(peer_id);
    std::vector<KeyedRecord> within;
    for (const KeyedRecord& r : part) {
      if (store->CheckClockOffset(r.version.hlc, peer_name).ok()) within.push_back(r);
    }
    // None refused now (our clock moved on): the whole part goes again.
    const size_t refused = part.size() - within.size();
    if (refused > 0) {
      stats.records_refused += refused;
      std::string message = refusal.message();
      if (refused > 1) message += " (and " + std::to_string(refused - 1) + " more)";
      SetError(Error::kRefusedDiffRecords, std::move(message));
      diff_retry_due = true;
    }
    if (within.empty()) return ApplyResult{};
    return store->ApplyPeerRecords(within, peer_id, StalePolicy());
  }

  // Counts `refused` records of a diff as refused for `refusal` (we are out
  // of storage) and asks for them again after a pause (see Poll).
  void RefuseForQuota(size_t refused, const Status& refusal) {
    stats.records_refused += refused;
    SetError(Error::kRefusedDiffRecords, refusal.message());
    diff_retry_due = true;
  }

  StaleRecords StalePolicy() const {
    return options.refuse_stale_peers ? StaleRecords::kDrop : StaleRecords::kRedelete;
  }

  // Accounts for records applied from the peer. Stale ones (its state
  // predates our GC watermark) either end the session (refuse_stale_peers)
  // or were answered with the purged delete, restored, which a tree diff
  // now ships to the peer.
  Status Applied(const ApplyResult& r, std::vector<msg::Message>* out) {
    stats.records_applied += r.applied;
    stats.below_watermark_dropped += r.below_watermark_tombstones;
    if (r.stale == 0) return Status::Ok();
    if (options.refuse_stale_peers) return RefuseStale(r, out);
    if (stats.stale_redeleted == 0) {
      stats.stale_note = "peer " + NodeIdToString(peer_id) +
                         ": its state predates our GC watermark " +
                         r.first_stale_watermark.ToString() + " (it sent " + r.first_stale +
                         ", deleted and purged here): the delete was restored and sent back";
    }
    stats.stale_redeleted += r.stale;
    diff_requested = true;
    return Status::Ok();
  }

  // Drops from `diff` the tombstones at or below a watermark of the side
  // that lacks their key (see the comment at the top).
  void FilterBelowWatermarks(const std::vector<SummaryEntry>& mine,
                             const std::vector<SummaryEntry>& theirs, BucketDiff* diff) const {
    if (store->GcWatermark(std::nullopt) != Version{}) {
      std::erase_if(diff->request, [&](uint64_t h) {
        const SummaryEntry* t = FindEntry(theirs, h);
        return t != nullptr && t->tombstone && FindEntry(mine, h) == nullptr &&
               t->version <= store->GcWatermark(h);
      });
    }
    std::erase_if(diff->send, [&](uint64_t h) {
      const SummaryEntry* m = FindEntry(mine, h);
      return m != nullptr && m->tombstone && m->version <= peer_watermark &&
             FindEntry(theirs, h) == nullptr;
    });
  }

  Status OnHello(const msg::Hello& h, uint64_t now_ms, std::vector<msg::Message>* out);
  Status OnBatch(const msg::RecordBatch& b, std::vector<msg::Message>* out);
  Status OnAck(const msg::BatchAck& a);
  Status OnRefused(const msg::BatchRefused& r, uint64_t now_ms);
  Status OnTreeNodes(const msg::TreeNodes& t, uint64_t now_ms, std::vector<msg::Message>* out);
  Status OnSummaries(const msg::BucketSummaries& s, uint64_t now_ms,
                     std::vector<msg::Message>* out);
  Status OnDiffRecords(const msg::DiffRecords& d, uint64_t now_ms, std::vector<msg::Message>* out);
  // A diff starts (ours or the peer's): its progress starts at 0.
  void BeginDiffProgress();
  // stats.sync_percent of the running diff, from the records moved so far.
  void NoteDiffProgress();
  Status OnDiffEnd(const msg::DiffEnd& e, uint64_t now_ms);
  Status OnOriginRecords(const msg::OriginRecords& o, std::vector<msg::Message>* out);
  Status OnGoodbye(const msg::Goodbye& g);
  // Sends every record we hold of `origin`, chunked, a window at a time; the
  // last chunk says so.
  Status SendOriginRecords(uint64_t origin, std::vector<msg::Message>* out);
  // Emits the next window of what we owe the peer: a diff's bucket
  // summaries, its records, then resyncs' records.
  Status PumpOwed(std::vector<msg::Message>* out);
  // Emits summaries until `*window` (bytes, added to) reaches the window.
  Status PumpSummaries(size_t* window, std::vector<msg::Message>* out);
  // Emits `records` as chunks of M (DiffRecords or OriginRecords) within the
  // chunk limits, each a copy of `header` with its records; the last of them
  // marked last when `final`, and then given the diff's requests (the
  // surplus over a chunk's worth goes on chunks of requests just before it).
  // Adds the bytes of records to `*window`.
  template <typename M>
  void EmitRecordChunks(std::vector<KeyedRecord> records, const M& header, bool final,
                        size_t* window, std::vector<msg::Message>* out);

  Status StartDiff(uint64_t now_ms, std::vector<msg::Message>* out);
  // Adopts the peer's diff `id` as its responder.
  void JoinDiff(uint64_t id);
  Status FinishDiff(uint64_t now_ms);
  // Sends the records for `key_hashes`, chunked, a window at a time;
  // `requests` ride on the last chunk.
  Status SendDiffRecords(std::vector<uint64_t> key_hashes, std::vector<uint64_t> requests,
                         std::vector<msg::Message>* out);
  Status SendTreeStep(uint32_t level, const std::vector<uint32_t>& parents,
                      std::vector<msg::Message>* out);
  // Sends the summaries of `buckets` (ascending), chunked, a window at a time.
  Status SendSummaries(std::vector<uint32_t> buckets, std::vector<msg::Message>* out);
  Status Stream(uint64_t now_ms, std::vector<msg::Message>* out);
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_SYNC_SESSION_INTERNAL_H_
