// Tree diffs and origin resyncs of a sync session: descending the Merkle
// trees where they differ, exchanging bucket summaries, then the records one
// side lacks or holds older, a window at a time; and resending every record
// of a node whose database changed (see replica/sync.cc).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <tidemap/replica/sync_session_internal.h>

namespace tidemap {

Status SyncSession::Impl::StartDiff(uint64_t now_ms, std::vector<msg::Message>* out) {
  TIDEMAP_CHECK(diff_id == 0);
  // Ids are odd from the lower node id and even from the higher, so the two
  // sides never pick the same one.
  diff_id = (++diff_counter << 1) | (IsLowerId() ? 1 : 0);
  diff_initiator = true;
  diff_answered = false;
  diff_requested = false;
  diff_repairs = repair_pending;
  BeginDiffProgress();
  last_diff_ms = now_ms;
  if (repair_pending) snapshot_seq = std::max(snapshot_seq, store->LastSeq());
  return SendTreeStep(0, {0}, out);
}

void SyncSession::Impl::JoinDiff(uint64_t id) {
  diff_id = id;
  diff_initiator = false;
  diff_answered = true;
  BeginDiffProgress();
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
  const auto CountSent = [this](const M& sent) {
    stats.records_sent += sent.records.size();
    if constexpr (std::is_same_v<M, msg::DiffRecords>) {
      diff_records_sent += sent.records.size();
      NoteDiffProgress();
    }
  };
  M chunk = header;
  size_t bytes = 0;
  for (KeyedRecord& r : records) {
    if (!chunk.records.empty() && (bytes + RecordBytes(r) > options.diff_chunk_bytes_max ||
                                   chunk.records.size() >= options.batch_records_max)) {
      chunk.last = false;
      CountSent(chunk);
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
  CountSent(chunk);
  Emit(std::move(chunk), out);
}

void SyncSession::Impl::BeginDiffProgress() {
  stats.diff_in_progress = true;
  stats.sync_percent = 0;
  diff_records_received = 0;
  diff_records_sent = 0;
}

void SyncSession::Impl::NoteDiffProgress() {
  // The records one side holds beyond the other's are what a bootstrap has
  // to move: received on the side that holds fewer, sent on the other.
  double percent = 0;
  if (peer_records > records_at_start) {
    percent = 100.0 * static_cast<double>(diff_records_received) /
              static_cast<double>(peer_records - records_at_start);
  } else if (records_at_start > peer_records) {
    percent = 100.0 * static_cast<double>(diff_records_sent) /
              static_cast<double>(records_at_start - peer_records);
  }
  stats.sync_percent = std::min(99.0, percent);
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
  NoteDiffProgress();
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

}  // namespace tidemap
