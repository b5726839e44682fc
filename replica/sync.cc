#include "replica/sync.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "merkle/merkle.h"

namespace tidemap {

// Peers whose database changed
// -----------------------------
// What we persist about a peer (PeerState, in the store: the cursor it acknowledged
// into our oplog, the highest of its seqs we acknowledged, and the
// incarnation of its database both are about) is true only of that database.
// A node may come back under the same id with another one: wiped (a new,
// empty database, so another incarnation) or restored from an older backup
// (the same incarnation, but fewer rows than we acknowledged from it). Its
// Hello carries its incarnation and last seq, so OnHello sees either:
//   - another incarnation than the stored one, or a last seq below what we
//     acknowledged from it: its database changed. The stored cursor is not
//     trusted (streaming from it would leave a gap, and rows it wrote itself
//     are never streamed back to their origin): it is repaired by a tree diff
//     as on first contact, and its records are resynced (OriginRecords,
//     below). Nothing is persisted until both are done, so a session cut
//     before then finds the same mismatch next time; then the whole state
//     is replaced at once (SyncStore::ReplacePeer), the cursor moving back if need be.
//   - no stored state, or one whose incarnation was never learned (0: a
//     first session cut before its repair, or a cursor an embedder set): a
//     tree diff repairs it, and the incarnation is stored when it is done.
// A changed node may also issue a version its former self issued, with other
// bytes (its HLC bound went with its database). Merkle digests cover
// versions, not values, so no diff sees that. Hence the resync: the side that
// noticed sends every record it holds of the changed node's origin; the
// changed node applies them (the tie rule picks one of two equal versions),
// then answers with every record of its own origin, which the first side
// applies. Both then hold the same bytes. This reaches the peers that held
// the node's former records themselves; the others get the winner from them
// as any change. It costs a scan of every record on both sides, once per
// database change.
//
// Tombstone GC (replica.cc): records for keys we do not hold at or below our
// GC watermark are not stored as they are; a live one means the peer's state
// predates the watermark (it holds a deleted key's old version, or a write
// far later than the horizon allows). By default the replica stores the
// purged delete again in its place and a tree diff ships it to the peer; with
// refuse_stale_peers the session ends with a Goodbye telling the peer to
// re-bootstrap. In diffs, tombstones at or below the watermark of the side
// that lacks the key are neither requested nor sent, so replicas whose purges
// are at different points do not ship them back and forth.

namespace {

// A diff's records are read by one pass over the stored records, rather than
// a lookup per key, when they are at least this many and at least one in
// kDenseDiffShare of the stored keys: a lookup at a random place costs about
// as much as reading a few dozen records in order.
constexpr size_t kDenseDiffKeysMin = 1024;
constexpr uint64_t kDenseDiffShare = 8;
// What a bucket summary entry (or a bucket's header) counts for in chunks and
// windows: about its encoded size.
constexpr size_t kSummaryEntryBytes = 12;

size_t RecordBytes(const KeyedRecord& r) {
  return r.map.size() + r.key.size() + r.value.size() + 32;
}

const SummaryEntry* FindEntry(const std::vector<SummaryEntry>& entries, uint64_t key_hash) {
  auto it = std::lower_bound(entries.begin(), entries.end(), key_hash,
                             [](const SummaryEntry& e, uint64_t h) { return e.key_hash < h; });
  return it != entries.end() && it->key_hash == key_hash ? &*it : nullptr;
}

}  // namespace

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
  // received by the running diff.
  uint64_t records_at_start = 0;
  uint64_t peer_records = 0;
  uint64_t diff_records_received = 0;

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

SyncSession::SyncSession(SyncStore* store, uint64_t peer_node_id, SyncOptions options)
    : impl_(std::make_unique<Impl>(store, peer_node_id, options)) {}

SyncSession::~SyncSession() = default;

const SyncStats& SyncSession::stats() const { return impl_->stats; }

Status SyncSession::Start(uint64_t now_ms, std::vector<msg::Message>* out) {
  Impl& s = *impl_;
  TIDEMAP_CHECK(!s.started);
  s.started = true;
  s.last_diff_ms = now_ms;
  TIDEMAP_ASSIGN_OR_RETURN(s.stored, s.store->LoadPeer(s.peer_id));
  if (s.stored.has_value()) s.stored_cursor = s.stored->acked;
  s.stats.acked_seq = s.stored_cursor;
  // The snapshot's seq is read before its root, so the root covers at least
  // every row up to it: a snapshot the peer may be declared repaired to.
  // Whether it needs a repair is decided when its Hello tells who it is now
  // (OnHello).
  TIDEMAP_ASSIGN_OR_RETURN(const SyncSnapshot snapshot, s.store->Snapshot());
  s.start_last_seq = snapshot.last_seq;
  s.start_pruned = snapshot.pruned_through;
  s.hello_root = snapshot.merkle_root;
  msg::Hello hello;
  hello.merkle_root = s.hello_root;
  hello.tree_fanout_bits = s.info.tree_fanout_bits;
  hello.tree_depth = s.info.tree_depth;
  hello.incarnation = s.info.incarnation;
  hello.last_seq = s.start_last_seq;
  hello.gc_watermark = snapshot.gc_watermark;
  hello.physical_ms = now_ms;
  s.records_at_start = snapshot.records;
  hello.records = s.records_at_start;
  s.Emit(hello, out);
  return Status::Ok();
}

Status SyncSession::Receive(const msg::Message& message, uint64_t now_ms,
                            std::vector<msg::Message>* out) {
  Impl& s = *impl_;
  TIDEMAP_CHECK(s.started);
  if (message.seq != s.in_msg_seq + 1) {
    return Status::InvalidArgument("message " + std::to_string(message.seq) + " (" +
                                   msg::BodyName(message.body) + ") out of order, expected " +
                                   std::to_string(s.in_msg_seq + 1));
  }
  s.in_msg_seq = message.seq;
  ++s.stats.messages_received;
  if (!s.got_hello && !std::holds_alternative<msg::Hello>(message.body)) {
    return Status::InvalidArgument(std::string("expected hello, got ") +
                                   msg::BodyName(message.body));
  }
  const msg::Body& b = message.body;
  if (auto* h = std::get_if<msg::Hello>(&b)) return s.OnHello(*h, now_ms, out);
  if (auto* rb = std::get_if<msg::RecordBatch>(&b)) return s.OnBatch(*rb, out);
  if (auto* a = std::get_if<msg::BatchAck>(&b)) return s.OnAck(*a);
  if (auto* r = std::get_if<msg::BatchRefused>(&b)) return s.OnRefused(*r, now_ms);
  if (auto* t = std::get_if<msg::TreeNodes>(&b)) return s.OnTreeNodes(*t, now_ms, out);
  if (auto* bs = std::get_if<msg::BucketSummaries>(&b)) return s.OnSummaries(*bs, now_ms, out);
  if (auto* d = std::get_if<msg::DiffRecords>(&b)) return s.OnDiffRecords(*d, now_ms, out);
  if (auto* e = std::get_if<msg::DiffEnd>(&b)) return s.OnDiffEnd(*e, now_ms);
  if (auto* o = std::get_if<msg::OriginRecords>(&b)) return s.OnOriginRecords(*o, out);
  if (auto* g = std::get_if<msg::Goodbye>(&b)) return s.OnGoodbye(*g);
  return Status::InvalidArgument("unknown message");
}

Status SyncSession::Impl::OnHello(const msg::Hello& h, uint64_t now_ms,
                                  std::vector<msg::Message>* out) {
  if (got_hello) return Status::InvalidArgument("second hello");
  if (h.physical_ms != 0) {
    // One-way latency included: an estimate, for status, not for decisions.
    stats.peer_clock_offset_ms = static_cast<int64_t>(h.physical_ms - now_ms);
  }
  peer_records = h.records;
  if (h.protocol_version != kSyncProtocolVersion) {
    return Status::Refused("peer speaks protocol version " + std::to_string(h.protocol_version) +
                           ", this node " + std::to_string(kSyncProtocolVersion));
  }
  if (h.tree_fanout_bits != info.tree_fanout_bits || h.tree_depth != info.tree_depth) {
    return Status::Refused("peer's Merkle tree has another shape");
  }
  if (h.incarnation == 0) return Status::InvalidArgument("hello without a database incarnation");
  got_hello = true;
  peer_incarnation = h.incarnation;
  peer_watermark = h.gc_watermark;

  // Does the cursor we stored still describe the peer's database? (See the
  // comment at the top.)
  bool repair = false;
  if (!stored.has_value() || stored->incarnation == 0) {
    repair = true;
    restate_pending = true;
  } else if (stored->incarnation != h.incarnation || stored->received > h.last_seq) {
    repair = true;
    restate_pending = true;
    peer_changed = true;
    stats.peer_reset =
        "peer " + NodeIdToString(peer_id) + ": " +
        (stored->incarnation != h.incarnation
             ? "another database (incarnation " + NodeIdToString(h.incarnation) +
                   ", we had synced with " + NodeIdToString(stored->incarnation) + ")"
             : "its database went back in time (it ends at seq " + std::to_string(h.last_seq) +
                   ", we had acknowledged its seq " + std::to_string(stored->received) + ")") +
        ": repairing it by tree diff and resyncing the records it wrote";
  } else if (stored->acked < start_pruned) {
    repair = true;
  }
  if (repair) {
    repair_pending = true;
    snapshot_seq = start_last_seq;
    stream_next = start_last_seq + 1;  // what precedes the snapshot comes by tree diff
  } else {
    stream_next = stored_cursor + 1;
  }
  if (peer_changed) {
    resync_pending = true;
    TIDEMAP_RETURN_IF_ERROR(SendOriginRecords(peer_id, out));
  }
  if (h.merkle_root == hello_root) diff_requested = false;  // nothing to find
  if (repair_pending && h.merkle_root == hello_root) {
    // Equal roots: the peer held everything we had at our snapshot.
    TIDEMAP_RETURN_IF_ERROR(RepairDone(snapshot_seq));
  }
  if (repair_pending || diff_requested) TIDEMAP_RETURN_IF_ERROR(StartDiff(now_ms, out));
  return Stream(now_ms, out);
}

Status SyncSession::Impl::Stream(uint64_t now_ms, std::vector<msg::Message>* out) {
  if (!got_hello || now_ms < blocked_until_ms) return Status::Ok();
  while (in_flight.size() < options.batches_in_flight_max) {
    if (stream_next > store->LastSeq()) return Status::Ok();
    TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> rows,
                             store->ReadOplog(stream_next - 1, options.batch_records_max));
    if (rows.empty() || rows.front().seq != stream_next) {
      // Our own pruning overtook this peer while the session ran: the rows it
      // needs are gone (all of them, when nothing is left after stream_next).
      // A repair that has not started yet covers them (its diff compares the
      // trees from its start on), as does a running repairing diff whose
      // snapshot is past them; otherwise the peer is repaired again by a new
      // tree diff instead of being left with a gap. (Found by the simulator:
      // a gap found while a repairing diff ran used to be skipped even when
      // the rows came after that diff's snapshot.)
      const uint64_t gap_end = rows.empty() ? store->LastSeq() : rows.front().seq - 1;
      const bool covered =
          repair_pending && (diff_id == 0 || !diff_repairs || gap_end <= snapshot_seq);
      if (!covered) {
        repair_pending = true;
        diff_repairs = false;  // a running diff may predate the missing rows
        snapshot_seq = store->LastSeq();
        stream_next = snapshot_seq + 1;
        if (diff_id == 0) return StartDiff(now_ms, out);
        return Status::Ok();
      }
      if (rows.empty()) return Status::Ok();
    }
    msg::RecordBatch batch;
    batch.first_seq = stream_next;
    size_t bytes = 0;
    for (const OplogEntry& row : rows) {
      if (!batch.records.empty() && bytes >= options.batch_bytes_max) break;
      batch.last_seq = row.seq;
      // Never echo a change to the node that wrote it or the peer it came from.
      if (row.version.origin == peer_id || row.via == peer_id) continue;
      TIDEMAP_ASSIGN_OR_RETURN(std::optional<KeyedRecord> rec, store->ReadRecord(row.map, row.key));
      // A key changed again later has a later row, which ships it once.
      if (!rec.has_value() || rec->version != row.version) continue;
      bytes += RecordBytes(*rec);
      batch.records.push_back(std::move(*rec));
    }
    stats.records_sent += batch.records.size();
    stream_next = batch.last_seq + 1;
    in_flight.push_back(batch.last_seq);
    Emit(std::move(batch), out);
  }
  return Status::Ok();
}

Status SyncSession::Impl::OnBatch(const msg::RecordBatch& b, std::vector<msg::Message>* out) {
  auto applied = store->ApplyPeerRecords(b.records, peer_id, StalePolicy());
  if (!applied.ok()) {
    if (applied.status().IsRefused()) {
      // Not ours to keep: the sender holds its data and retries later. Our
      // status shows why until a batch from it is applied.
      SetError(Error::kRefusedPeerBatch, applied.status().message());
      Emit(msg::BatchRefused{b.last_seq, applied.status().message()}, out);
      return Status::Ok();
    }
    return applied.status();
  }
  EndError(Error::kRefusedPeerBatch);
  TIDEMAP_RETURN_IF_ERROR(Applied(*applied, out));
  Emit(msg::BatchAck{b.last_seq}, out);
  session_received = std::max(session_received, b.last_seq);
  // Until a changed or unverified peer is settled, its stored state is kept.
  if (!restate_pending) return store->SavePeerReceived(peer_id, b.last_seq);
  return Status::Ok();
}

Status SyncSession::Impl::OnAck(const msg::BatchAck& a) {
  // Acks arrive in order; one for a batch we rewound after a refusal is stale.
  if (in_flight.empty() || in_flight.front() != a.last_seq) return Status::Ok();
  in_flight.pop_front();
  session_acked = a.last_seq;
  EndError(Error::kPeerRefusedOurs);
  return PersistAck(a.last_seq);
}

Status SyncSession::Impl::OnRefused(const msg::BatchRefused& r, uint64_t now_ms) {
  SetError(Error::kPeerRefusedOurs,
           "peer " + NodeIdToString(peer_id) + " refused our records: " + r.reason);
  // Send it all again from the last acknowledged row, after a pause.
  in_flight.clear();
  const uint64_t floor =
      repair_pending || restate_pending ? std::max(snapshot_seq, repaired_acked) : stored_cursor;
  const uint64_t resume = std::max(session_acked, floor);
  stream_next = resume + 1;
  blocked_until_ms = now_ms + options.refused_retry_ms;
  return Status::Ok();
}

Status SyncSession::Impl::StartDiff(uint64_t now_ms, std::vector<msg::Message>* out) {
  TIDEMAP_CHECK(diff_id == 0);
  // Ids are odd from the lower node id and even from the higher, so the two
  // sides never pick the same one.
  diff_id = (++diff_counter << 1) | (IsLowerId() ? 1 : 0);
  diff_initiator = true;
  diff_answered = false;
  diff_requested = false;
  diff_repairs = repair_pending;
  stats.diff_in_progress = true;
  stats.sync_percent = 0;
  diff_records_received = 0;
  last_diff_ms = now_ms;
  if (repair_pending) snapshot_seq = std::max(snapshot_seq, store->LastSeq());
  return SendTreeStep(0, {0}, out);
}

void SyncSession::Impl::JoinDiff(uint64_t id) {
  diff_id = id;
  diff_initiator = false;
  diff_answered = true;
  stats.diff_in_progress = true;
  stats.sync_percent = 0;
  diff_records_received = 0;
  pending_parents.clear();
  pending_digests.clear();
  pending_send.clear();
  pending_request.clear();
  summaries_out = SummariesOut{};
  diff_out = DiffOut{};
  // Everything up to now is covered by the tree we are about to describe.
  diff_repairs = repair_pending;
  if (repair_pending) snapshot_seq = std::max(snapshot_seq, store->LastSeq());
}

Status SyncSession::Impl::FinishDiff(uint64_t now_ms) {
  diff_id = 0;
  summaries_out = SummariesOut{};
  diff_out = DiffOut{};
  stats.diff_in_progress = false;
  stats.sync_percent = 0;
  ++stats.diffs_completed;
  last_diff_ms = now_ms;
  // A diff that refused none of the peer's records for their clock ends the
  // refusal it reported before.
  if (!diff_retry_due) {
    EndError(Error::kRefusedDiffRecords);
    diff_retry_pause_ms = 0;
  }
  // Only a diff that began as the repair completes it; if the repair became
  // pending during this one, Poll starts the repairing diff next.
  if (repair_pending && diff_repairs) {
    const uint64_t repaired = std::max(snapshot_seq, session_acked);
    // Rows up to the snapshot reached the peer by the diff: do not stream
    // them again (pruning may even have removed them by now).
    stream_next = std::max(stream_next, repaired + 1);
    return RepairDone(repaired);
  }
  return Status::Ok();
}

Status SyncSession::Impl::SendTreeStep(uint32_t level, const std::vector<uint32_t>& parents,
                                       std::vector<msg::Message>* out) {
  const size_t fanout = size_t{1} << info.tree_fanout_bits;
  const size_t per_chunk = std::max<size_t>(1, options.diff_chunk_bytes_max / (8 * fanout + 4));
  for (size_t i = 0; i < parents.size(); i += per_chunk) {
    msg::TreeNodes t;
    t.diff_id = diff_id;
    t.level = level;
    t.parents.assign(
        parents.begin() + static_cast<std::ptrdiff_t>(i),
        parents.begin() + static_cast<std::ptrdiff_t>(std::min(parents.size(), i + per_chunk)));
    TIDEMAP_RETURN_IF_ERROR(store->MerkleChildDigests(level, t.parents, &t.child_digests));
    t.last = i + per_chunk >= parents.size();
    Emit(std::move(t), out);
  }
  return Status::Ok();
}

Status SyncSession::Impl::OnTreeNodes(const msg::TreeNodes& t, uint64_t now_ms,
                                      std::vector<msg::Message>* out) {
  if (t.diff_id != diff_id) {
    if (diff_id != 0 && diff_initiator && !diff_answered && IsLowerId()) {
      return Status::Ok();  // both started one; the lower id's diff goes on, this one is dropped
    }
    JoinDiff(t.diff_id);
  }
  diff_answered = true;
  pending_parents.insert(pending_parents.end(), t.parents.begin(), t.parents.end());
  pending_digests.insert(pending_digests.end(), t.child_digests.begin(), t.child_digests.end());
  if (!t.last) return Status::Ok();

  const size_t fanout = size_t{1} << info.tree_fanout_bits;
  const uint32_t depth = info.tree_depth;
  if (t.level >= depth || pending_digests.size() != pending_parents.size() * fanout) {
    return Status::InvalidArgument("malformed tree step");
  }
  std::vector<uint64_t> ours;
  TIDEMAP_RETURN_IF_ERROR(store->MerkleChildDigests(t.level, pending_parents, &ours));
  std::vector<uint32_t> differing;
  for (size_t p = 0; p < pending_parents.size(); ++p) {
    for (size_t c = 0; c < fanout; ++c) {
      if (ours[p * fanout + c] != pending_digests[p * fanout + c]) {
        differing.push_back(static_cast<uint32_t>(pending_parents[p] * fanout + c));
      }
    }
  }
  const uint32_t child_level = t.level + 1;
  pending_parents.clear();
  pending_digests.clear();
  if (differing.empty()) {
    // Nothing differs any more: this side owes nothing, and the peer held
    // everything we hold (both sides' states are as of their last step).
    Emit(msg::DiffEnd{diff_id}, out);
    return FinishDiff(now_ms);
  }
  if (child_level == depth) return SendSummaries(std::move(differing), out);
  return SendTreeStep(child_level, differing, out);
}

Status SyncSession::Impl::SendSummaries(std::vector<uint32_t> buckets,
                                        std::vector<msg::Message>* out) {
  summaries_out = SummariesOut{true, std::move(buckets), 0};
  return PumpOwed(out);
}

Status SyncSession::Impl::PumpSummaries(size_t* window, std::vector<msg::Message>* out) {
  if (!summaries_out.active) return Status::Ok();
  // Buckets per read: about a window of entries, at our average per bucket.
  const uint32_t leaf_bits = std::min<uint32_t>(63, info.tree_fanout_bits * info.tree_depth);
  const uint64_t per_bucket = std::max<uint64_t>(1, store->KeyCount() >> leaf_bits);
  const size_t buckets_per_read = static_cast<size_t>(
      std::max<uint64_t>(1, options.records_window_bytes / (kSummaryEntryBytes * per_bucket)));
  while (summaries_out.active && *window < options.records_window_bytes) {
    const std::vector<uint32_t>& all = summaries_out.buckets;
    const size_t begin = summaries_out.next;
    const size_t end = std::min(all.size(), begin + buckets_per_read);
    const std::vector<uint32_t> buckets(all.begin() + static_cast<std::ptrdiff_t>(begin),
                                        all.begin() + static_cast<std::ptrdiff_t>(end));
    std::vector<msg::SummaryEntry> entries;
    std::vector<uint32_t> counts;
    TIDEMAP_RETURN_IF_ERROR(store->BucketSummaries(buckets, &entries, &counts));
    // Chunks of whole buckets, about diff_chunk_bytes_max each.
    msg::BucketSummaries s;
    s.diff_id = diff_id;
    size_t offset = 0, chunk_entries = 0;
    for (size_t i = 0; i < buckets.size(); ++i) {
      s.buckets.push_back(buckets[i]);
      s.counts.push_back(counts[i]);
      s.entries.insert(s.entries.end(), entries.begin() + static_cast<std::ptrdiff_t>(offset),
                       entries.begin() + static_cast<std::ptrdiff_t>(offset + counts[i]));
      offset += counts[i];
      chunk_entries += counts[i] + 1;
      *window += (counts[i] + 1) * kSummaryEntryBytes;
      if (chunk_entries * kSummaryEntryBytes >= options.diff_chunk_bytes_max &&
          i + 1 < buckets.size()) {
        s.last = false;
        Emit(std::move(s), out);
        s = msg::BucketSummaries{};
        s.diff_id = diff_id;
        chunk_entries = 0;
      }
    }
    s.last = end == all.size();
    Emit(std::move(s), out);
    summaries_out.next = end;
    if (end == all.size()) summaries_out = SummariesOut{};
  }
  return Status::Ok();
}

Status SyncSession::Impl::OnSummaries(const msg::BucketSummaries& bs, uint64_t now_ms,
                                      std::vector<msg::Message>* out) {
  if (bs.diff_id != diff_id) return Status::Ok();  // an abandoned diff
  diff_answered = true;
  if (bs.counts.size() != bs.buckets.size()) return Status::InvalidArgument("malformed summaries");
  for (size_t i = 1; i < bs.buckets.size(); ++i) {
    if (bs.buckets[i] <= bs.buckets[i - 1]) return Status::InvalidArgument("unsorted buckets");
  }
  std::vector<msg::SummaryEntry> local;
  std::vector<uint32_t> local_counts;
  TIDEMAP_RETURN_IF_ERROR(store->BucketSummaries(bs.buckets, &local, &local_counts));
  size_t offset = 0, local_offset = 0;
  for (size_t i = 0; i < bs.buckets.size(); ++i) {
    if (offset + bs.counts[i] > bs.entries.size()) {
      return Status::InvalidArgument("malformed summaries");
    }
    std::vector<SummaryEntry> mine, theirs;
    mine.reserve(local_counts[i]);
    for (size_t j = local_offset; j < local_offset + local_counts[i]; ++j) {
      const auto& e = local[j];
      mine.push_back(SummaryEntry{e.key_hash, e.version, e.tombstone});
    }
    local_offset += local_counts[i];
    for (size_t j = offset; j < offset + bs.counts[i]; ++j) {
      const auto& e = bs.entries[j];
      theirs.push_back(SummaryEntry{e.key_hash, e.version, e.tombstone});
    }
    offset += bs.counts[i];
    TIDEMAP_ASSIGN_OR_RETURN(BucketDiff diff, DiffBucket(mine, theirs));
    FilterBelowWatermarks(mine, theirs, &diff);
    pending_send.insert(pending_send.end(), diff.send.begin(), diff.send.end());
    pending_request.insert(pending_request.end(), diff.request.begin(), diff.request.end());
  }
  if (!bs.last) return Status::Ok();
  std::vector<uint64_t> send = std::move(pending_send), request = std::move(pending_request);
  pending_send.clear();
  pending_request.clear();
  if (send.empty() && request.empty()) {
    Emit(msg::DiffEnd{diff_id}, out);
    return FinishDiff(now_ms);
  }
  return SendDiffRecords(std::move(send), std::move(request), out);
}

Status SyncSession::Impl::SendDiffRecords(std::vector<uint64_t> key_hashes,
                                          std::vector<uint64_t> requests,
                                          std::vector<msg::Message>* out) {
  // Sorted, so each window's reads seek forward through the index.
  std::sort(key_hashes.begin(), key_hashes.end());
  key_hashes.erase(std::unique(key_hashes.begin(), key_hashes.end()), key_hashes.end());
  diff_out.active = true;
  diff_out.scan = key_hashes.size() >= kDenseDiffKeysMin &&
                  key_hashes.size() * kDenseDiffShare >= store->KeyCount();
  diff_out.key_hashes = std::move(key_hashes);
  diff_out.next = 0;
  diff_out.requests = std::move(requests);
  return PumpOwed(out);
}

template <typename M>
void SyncSession::Impl::EmitRecordChunks(std::vector<KeyedRecord> records, const M& header,
                                         bool final, size_t* window,
                                         std::vector<msg::Message>* out) {
  M chunk = header;
  size_t bytes = 0;
  for (KeyedRecord& r : records) {
    if (!chunk.records.empty() && (bytes + RecordBytes(r) > options.diff_chunk_bytes_max ||
                                   chunk.records.size() >= options.batch_records_max)) {
      chunk.last = false;
      stats.records_sent += chunk.records.size();
      Emit(std::move(chunk), out);
      chunk = header;
      bytes = 0;
    }
    bytes += RecordBytes(r);
    *window += RecordBytes(r);
    chunk.records.push_back(std::move(r));
  }
  if (!final && chunk.records.empty()) return;
  chunk.last = final;
  if constexpr (std::is_same_v<M, msg::DiffRecords>) {
    if (final) {
      // The requests ride on the last chunks, a chunk's worth (8 B each) on
      // any one: a bootstrap requests every key, which in one frame would
      // pass the frame limit past a few million keys. The peer gathers them
      // until the last chunk.
      const std::vector<uint64_t>& requests = diff_out.requests;
      const size_t per_chunk = std::max<size_t>(1, options.diff_chunk_bytes_max / 8);
      size_t next = 0;
      for (; requests.size() - next > per_chunk; next += per_chunk) {
        M only_requests = header;
        only_requests.last = false;
        only_requests.requests.assign(
            requests.begin() + static_cast<std::ptrdiff_t>(next),
            requests.begin() + static_cast<std::ptrdiff_t>(next + per_chunk));
        Emit(std::move(only_requests), out);
      }
      chunk.requests.assign(requests.begin() + static_cast<std::ptrdiff_t>(next), requests.end());
      diff_out.requests.clear();
    }
  }
  stats.records_sent += chunk.records.size();
  Emit(std::move(chunk), out);
}

Status SyncSession::Impl::PumpOwed(std::vector<msg::Message>* out) {
  size_t window = 0;
  TIDEMAP_RETURN_IF_ERROR(PumpSummaries(&window, out));
  while (diff_out.active && window < options.records_window_bytes) {
    // About one chunk of records at a time, however large they are.
    std::vector<KeyedRecord> found;
    bool final = false;
    if (diff_out.scan) {
      TIDEMAP_ASSIGN_OR_RETURN(
          final, store->ScanRecords(RecordScan{std::nullopt, diff_out.key_hashes}, &diff_out.cursor,
                                    std::max<size_t>(1, options.diff_chunk_bytes_max), &found));
    } else {
      const std::span<const uint64_t> rest =
          std::span<const uint64_t>(diff_out.key_hashes).subspan(diff_out.next);
      TIDEMAP_ASSIGN_OR_RETURN(
          const size_t done,
          store->RecordsByKeyHash(rest.first(std::min(rest.size(), options.batch_records_max)),
                                  std::max<size_t>(1, options.diff_chunk_bytes_max), &found));
      diff_out.next += done;
      final = diff_out.next == diff_out.key_hashes.size();
    }
    msg::DiffRecords header;
    header.diff_id = diff_id;
    EmitRecordChunks(std::move(found), header, final, &window, out);
    if (final) diff_out = DiffOut{};
  }
  while (!origin_out.empty() && window < options.records_window_bytes) {
    OriginOut& o = origin_out.front();
    std::vector<KeyedRecord> found;
    TIDEMAP_ASSIGN_OR_RETURN(const bool done,
                             store->ScanRecords(RecordScan{o.origin, {}}, &o.cursor,
                                                options.diff_chunk_bytes_max, &found));
    msg::OriginRecords header;
    header.origin = o.origin;
    EmitRecordChunks(std::move(found), header, done, &window, out);
    if (done) origin_out.pop_front();
  }
  return Status::Ok();
}

Status SyncSession::Impl::OnDiffRecords(const msg::DiffRecords& d, uint64_t now_ms,
                                        std::vector<msg::Message>* out) {
  if (d.diff_id != diff_id) return Status::Ok();
  diff_answered = true;
  // Apply in slices within our own batch limit, whatever the peer's chunking.
  TIDEMAP_RETURN_IF_ERROR(ApplyFromPeer(d.records, "tree diff", out));
  // Progress: the records the peer holds beyond ours are what a bootstrap
  // has to move; a diff of a few keys is done before anyone looks.
  diff_records_received += d.records.size();
  if (peer_records > records_at_start) {
    stats.sync_percent = std::min(99.0, 100.0 * static_cast<double>(diff_records_received) /
                                            static_cast<double>(peer_records - records_at_start));
  }
  pending_request.insert(pending_request.end(), d.requests.begin(), d.requests.end());
  if (!d.last) return Status::Ok();
  std::vector<uint64_t> request = std::move(pending_request);
  pending_request.clear();
  if (request.empty()) {
    Emit(msg::DiffEnd{diff_id}, out);
    return FinishDiff(now_ms);
  }
  return SendDiffRecords(std::move(request), {}, out);
}

Status SyncSession::Impl::OnDiffEnd(const msg::DiffEnd& e, uint64_t now_ms) {
  if (e.diff_id != diff_id) return Status::Ok();
  return FinishDiff(now_ms);
}

Status SyncSession::Impl::SendOriginRecords(uint64_t origin, std::vector<msg::Message>* out) {
  origin_out.push_back(OriginOut{origin, {}});
  return PumpOwed(out);
}

Status SyncSession::Impl::OnOriginRecords(const msg::OriginRecords& o,
                                          std::vector<msg::Message>* out) {
  if (o.origin == info.node_id) {
    // The peer found our database changed and sent what it holds of ours;
    // once all of it is applied, it gets ours.
    TIDEMAP_RETURN_IF_ERROR(ApplyFromPeer(o.records, "origin resync", out));
    if (o.last) return SendOriginRecords(o.origin, out);
    return Status::Ok();
  }
  if (o.origin != peer_id || !resync_pending) {
    return Status::InvalidArgument("origin records of node " + NodeIdToString(o.origin) +
                                   " this session did not ask for");
  }
  TIDEMAP_RETURN_IF_ERROR(ApplyFromPeer(o.records, "origin resync", out));
  if (!o.last) return Status::Ok();
  resync_pending = false;
  return MaybeSettle();
}

Status SyncSession::Impl::OnGoodbye(const msg::Goodbye& g) {
  SetError(Error::kPeerClosed,
           "peer " + NodeIdToString(peer_id) + " closed the session: " + g.reason);
  return Status::Refused(stats.last_error);
}

Status SyncSession::Poll(uint64_t now_ms, std::vector<msg::Message>* out) {
  Impl& s = *impl_;
  TIDEMAP_CHECK(s.started);
  if (!s.got_hello) return Status::Ok();
  if (s.diff_id == 0) {
    if (s.diff_retry_due) {
      // Records were refused for their clock: ask again after a pause.
      s.diff_retry_pause_ms =
          s.diff_retry_pause_ms == 0
              ? s.options.refused_retry_ms
              : std::min(2 * s.diff_retry_pause_ms,
                         std::max(s.options.refused_retry_ms, s.options.refused_retry_max_ms));
      s.diff_retry_due = false;
      s.diff_requested = true;
      s.diff_retry_at_ms = now_ms + s.diff_retry_pause_ms;
    }
    const bool periodic_due = s.options.diff_interval_ms > 0 && s.IsLowerId() &&
                              now_ms >= s.last_diff_ms + s.options.diff_interval_ms;
    const bool requested = s.diff_requested && now_ms >= s.diff_retry_at_ms;
    if (s.repair_pending || requested || periodic_due) {
      TIDEMAP_RETURN_IF_ERROR(s.StartDiff(now_ms, out));
    }
  }
  TIDEMAP_RETURN_IF_ERROR(s.PumpOwed(out));
  return s.Stream(now_ms, out);
}

void SyncSession::RequestDiff() { impl_->diff_requested = true; }

bool SyncSession::Idle() const {
  const Impl& s = *impl_;
  return s.got_hello && s.in_flight.empty() && s.diff_id == 0 && !s.repair_pending &&
         !s.resync_pending && !s.diff_requested && s.origin_out.empty() &&
         s.stream_next > s.store->LastSeq();
}

}  // namespace tidemap
