// RebuildDerivedRows: every row a record implies, rewritten from the records.
#include <string>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/expiry_rows_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Rebuild batches are written when they pass this size.
constexpr size_t kRebuildBatchBytesMax = size_t{4} << 20;

// Writes `batch` once it passes kRebuildBatchBytesMax, and clears it.
Status FlushIfFull(Store* store, Batch* batch) {
  if (batch->ApproximateBytes() < kRebuildBatchBytesMax) return Status::Ok();
  TIDEMAP_RETURN_IF_ERROR(store->Write(batch, /*sync=*/false));
  batch->Clear();
  return Status::Ok();
}

// Deletes every row whose key starts with `family`.
Status DeleteFamily(Store* store, char family) {
  Batch batch;
  PrefixIterator it(*store, std::string(1, family));
  for (it.SeekToFirst(); it.Valid(); it.Next()) {
    batch.Delete(it.key());
    TIDEMAP_RETURN_IF_ERROR(FlushIfFull(store, &batch));
  }
  TIDEMAP_RETURN_IF_ERROR(it.status());
  return store->Write(&batch, /*sync=*/false);
}

}  // namespace

Result<uint64_t> Replica::RebuildDerivedRows() {
  Impl& im = *impl_;
  MutexLock commit(&im.commit_mu);
  Store* store = im.store.get();
  for (char family : {rows::kHashIndexPrefix, rows::kGcPrefix, rows::kExpiryPrefix,
                      rows::kExpiryRowPrefix, rows::kMerklePrefix}) {
    TIDEMAP_RETURN_IF_ERROR(DeleteFamily(store, family));
  }
  // A tombstone's (or an expiring record's) queue row holds the seq that must be acknowledged
  // before it may be purged; the seq that wrote it is unknown now, and the last one is the safe
  // choice (it only makes the purge wait for newer acks).
  const uint64_t seq = im.LastSeq();
  Batch batch;
  ExpiryRowWriter expiry_rows(&im.expiry_index);
  TIDEMAP_ASSIGN_OR_RETURN(
      TreeRebuild rebuilt,
      TreeState::RebuildFromRecords(*store, im.tree_shape, [&](const KeyMeta& m, uint64_t hash) {
        batch.Put(
            rows::HashIndexKey(hash, m.map, m.key),
            rows::EncodeHashIndexValue(rows::RecordMeta{m.version, m.tombstone, m.expiry_ms}));
        if (m.tombstone) batch.Put(rows::GcQueueKey(m.version, m.map, m.key), rows::EncodeU64(seq));
        // A map's clear: its meta row, with the removal to run again (a
        // no-op where it had finished).
        if (m.tombstone && m.key == kClearKey) {
          batch.Put(rows::ClearRowKey(m.map), rows::EncodeClearRow({m.version, false, {}}));
        }
        if (!m.tombstone && m.expiry_ms != 0) {
          expiry_rows.Add(rows::ExpiryEntryRef{m.expiry_ms, m.version, seq, m.map, m.key}, &batch);
        }
        return FlushIfFull(store, &batch);
      }));
  expiry_rows.Finish(&batch);
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, /*sync=*/false));
  const uint64_t records = rebuilt.records;
  im.tree.Reset(std::move(rebuilt));
  // Every page is dirty: the checkpoint writes them all, synced (and with
  // them every unsynced row above).
  TIDEMAP_RETURN_IF_ERROR(im.Checkpoint(seq, /*sync=*/true));
  return records;
}

}  // namespace tidemap
