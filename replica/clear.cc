// Clearing a map: the clear itself (one record) and the background removal
// of the records it deletes. Design: replica/clear_state_internal.h and
// docs/storage.md ("Map clears").
#include <algorithm>
#include <string>
#include <vector>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/limits_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

Result<Version> Replica::ClearMap(std::string_view map) {
  // The key is the reserved one no write may use: only the map is checked.
  TIDEMAP_RETURN_IF_ERROR(CheckMapName(impl_->options.limits, map));
  WriteBatch batch;
  batch.Delete(map, kClearKey);
  Writer w(&impl_->queue);
  w.local = &batch;
  w.bytes = map.size();
  TIDEMAP_RETURN_IF_ERROR(impl_->Commit(&w));
  impl_->local_writes.fetch_add(1, std::memory_order_relaxed);
  return w.versions.front();
}

bool Replica::Impl::Cleared(const GroupBuild& g, std::string_view map,
                            const Version& version) const {
  // A clear stored earlier in the group won over the committed one.
  for (auto it = g.clears.rbegin(); it != g.clears.rend(); ++it) {
    if (it->first == map) return version < it->second;
  }
  return clears.Hides(map, version);
}

Result<ClearRemoval> Replica::RemoveClearedRecords(size_t rows_max) {
  if (rows_max == 0) return Status::InvalidArgument("rows_max must be 1 or more");
  Impl& im = *impl_;
  ClearRemoval stats;
  if (im.options.read_only) {
    stats.maps_pending = im.clears.pending();
    return stats;
  }
  std::vector<std::string> finished;
  {
    MutexLock commit(&im.commit_mu);  // no group is half done; writes wait
    TIDEMAP_RETURN_IF_ERROR(im.CheckStorage(/*now=*/false));
    while (stats.visited < rows_max) {
      const std::optional<ClearState::Pending> pending = im.clears.NextPending();
      if (!pending.has_value()) break;
      bool done = false;
      TIDEMAP_RETURN_IF_ERROR(
          im.RemoveClearedBatch(*pending, rows_max - stats.visited, &stats, &done));
      if (done) finished.push_back(pending->map);
    }
    stats.maps_pending = im.clears.pending();
  }
  // A finished map's range is compacted (writes go on meanwhile), so a scan
  // of it no longer steps over the deleted rows: it costs what a scan of an
  // empty map does.
  for (const std::string& map : finished) {
    const std::string begin = rows::RecordMapPrefix(map);
    std::string end = begin;  // the least key above the map's rows
    while (!end.empty() && end.back() == '\xff') end.pop_back();
    if (!end.empty()) ++end.back();
    im.store->CompactRange(begin, end);
  }
  return stats;
}

// The records older than the clear are deleted with every row derived from
// them (key-hash index, tombstone queue row, Merkle item; an expiry index
// entry goes stale and is dropped later) and the clear row's progress, in
// one synced batch that also checkpoints the tree:
// like a purge, a removal has no oplog entry for Open to replay. It raises no
// GC watermark: the clear itself, kept for good, stands for what it removed.
Status Replica::Impl::RemoveClearedBatch(const ClearState::Pending& p, size_t rows_max,
                                         ClearRemoval* stats, bool* done) {
  PrefixIterator records(*store, rows::RecordMapPrefix(p.map));
  if (p.row.after.empty()) {
    records.SeekToFirst();
  } else {
    records.SeekAfter(rows::RecordKey(p.map, p.row.after));
  }
  Batch batch;
  std::vector<LeafDelta> deltas;
  uint64_t live_removed = 0, tombs_removed = 0;
  rows::ClearRow row = p.row;
  row.done = true;
  size_t visited = 0;
  for (; records.Valid(); records.Next()) {
    const std::string_view row_key = records.key();
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordKeyParts parts, rows::SplitRecordKey(row_key));
    if (visited == rows_max) {
      row.done = false;  // resume after the last key visited
      break;
    }
    ++visited;
    row.after.assign(parts.key);
    if (parts.key == kClearKey) continue;
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordMeta meta,
                             rows::DecodeRecordMeta(row_key, records.value()));
    if (!(meta.version < p.row.version)) continue;  // newer than the clear: stays
    const uint64_t key_hash = KeyHash(parts.map, parts.key);
    batch.Delete(row_key);
    batch.Delete(rows::HashIndexKey(key_hash, parts.map, parts.key));
    // An expiry index entry of the record stops being valid with it.
    if (meta.tombstone) batch.Delete(rows::GcQueueKey(meta.version, parts.map, parts.key));
    deltas.push_back(LeafDelta{BucketOf(key_hash, tree_shape),
                               ItemDigest(parts.map, parts.key, meta.version, meta.tombstone),
                               meta.tombstone ? 0 : -1, meta.tombstone ? -1 : 0});
    ++(meta.tombstone ? tombs_removed : live_removed);
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  if (row.done) row.after.clear();
  batch.Put(rows::ClearRowKey(p.map), rows::EncodeClearRow(row));
  const uint64_t seq = LastSeq();
  const uint64_t now_ms = options.clock->NowMillis();
  if (!deltas.empty()) AppendCheckpoint(&batch, seq, deltas);
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, /*sync=*/true));
  if (!deltas.empty()) Checkpointed(deltas, seq, now_ms);
  {
    MutexLock l(&state_mu);
    live -= live_removed;
    tombstones -= tombs_removed;
  }
  clears.Progress(p.map, row);
  *done = row.done;
  clear_removed.fetch_add(deltas.size(), std::memory_order_relaxed);
  stats->removed += deltas.size();
  // A batch that found nothing still counts one row, so a call ends.
  stats->visited += std::max<size_t>(visited, 1);
  return Status::Ok();
}

}  // namespace tidemap
