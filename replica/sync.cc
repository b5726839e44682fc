// The sync session: start, hello, streaming the oplog tail, acks, goodbye
// and polling. Tree diffs and origin resyncs: replica/sync_diff.cc. The
// session's state: replica/sync_session_internal.h.
#include <tidemap/replica/sync.h>

#include <algorithm>
#include <string>
#include <vector>

#include <tidemap/replica/sync_session_internal.h>

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
// Tombstone GC (docs/tombstone-gc.md): records for keys we do not hold at or below our
// GC watermark are not stored as they are; a live one means the peer's state
// predates the watermark (it holds a deleted key's old version, or a write
// far later than the horizon allows). By default the replica stores the
// purged delete again in its place and a tree diff ships it to the peer; with
// refuse_stale_peers the session ends with a Goodbye telling the peer to
// re-bootstrap. In diffs, tombstones at or below the watermark of the side
// that lacks the key are neither requested nor sent, so replicas whose purges
// are at different points do not ship them back and forth.

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
  if (s.stored.has_value() && s.stored->incarnation != 0) {
    hello.held_incarnation = s.stored->incarnation;
    hello.held_seq = s.stored->received;
  }
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
    // A peer without TTL would keep a TTL'd record forever (and serve it):
    // refused before any record moves, rather than let replicas diverge.
    return Status::Refused(
        "peer speaks protocol version " + std::to_string(h.protocol_version) + ", this node " +
        std::to_string(kSyncProtocolVersion) +
        (h.protocol_version < kSyncProtocolVersionTtl
             ? " (the peer predates per-record TTL and would keep expiring records forever: "
               "upgrade it)"
             : ""));
  }
  if (h.tree_fanout_bits != info.tree_fanout_bits || h.tree_depth != info.tree_depth) {
    return Status::Refused("peer's Merkle tree has another shape");
  }
  if (h.incarnation == 0) return Status::InvalidArgument("hello without a database incarnation");
  TIDEMAP_RETURN_IF_ERROR(
      store->CheckHeldByPeer(peer_id, h.held_incarnation, h.held_seq, start_last_seq));
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
    const bool full = applied.status().IsQuotaExceeded();
    if (applied.status().IsRefused() || full) {
      // Not ours to keep: the sender holds its data and retries later. Our
      // status shows why until a batch from it is applied.
      SetError(Error::kRefusedPeerBatch, applied.status().message());
      Emit(msg::BatchRefused{b.last_seq, applied.status().message(), full}, out);
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
           "peer " + NodeIdToString(peer_id) +
               (r.quota_exceeded ? " is out of storage (quota_exceeded)" : "") +
               " refused our records: " + r.reason);
  // Send it all again from the last acknowledged row, after a pause.
  in_flight.clear();
  const uint64_t floor =
      repair_pending || restate_pending ? std::max(snapshot_seq, repaired_acked) : stored_cursor;
  const uint64_t resume = std::max(session_acked, floor);
  stream_next = resume + 1;
  blocked_until_ms = now_ms + options.refused_retry_ms;
  return Status::Ok();
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
