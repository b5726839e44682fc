// Scrub: the stored Merkle tree, the in-memory tree and counts, the key-hash
// index, the tombstone queue and the expiry index, each compared with what
// the records say.
#include <map>
#include <string>
#include <utility>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/readers_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Whether the key-hash index row and (for a tombstone) the queue row of the
// record `m` agree with it: adds one mismatch per disagreement. A read error
// other than NotFound is returned.
Status CheckIndexRows(const Store& store, const KeyMeta& m, uint64_t key_hash,
                      uint64_t* mismatches) {
  auto row = store.Get(rows::HashIndexKey(key_hash, m.map, m.key));
  if (!row.ok() && !row.status().IsNotFound()) return row.status();
  auto meta = row.ok() ? rows::DecodeHashIndexValue(*row) : Result<rows::RecordMeta>(row.status());
  if (!meta.ok() || meta->version != m.version || meta->tombstone != m.tombstone ||
      meta->expiry_ms != m.expiry_ms) {
    ++*mismatches;
  }
  if (!m.tombstone) return Status::Ok();
  auto queued = store.Get(rows::GcQueueKey(m.version, m.map, m.key));
  if (!queued.ok() && !queued.status().IsNotFound()) return queued.status();
  if (!queued.ok() || !rows::DecodeU64(*queued, "tombstone queue seq").ok()) ++*mismatches;
  return Status::Ok();
}

// Rows of the key-hash index (Corruption for a malformed one).
Result<uint64_t> CountIndexRows(const Store& store) {
  uint64_t n = 0;
  auto it = store.NewIterator();
  TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
      it.get(), 0, UINT64_MAX,
      [&](uint64_t, std::string_view, std::string_view, const rows::RecordMeta&) { ++n; }));
  return n;
}

// Rows of the tombstone queue, or of the version 4 expiry queue.
Result<uint64_t> CountQueueRows(const Store& store, char family) {
  uint64_t n = 0;
  PrefixIterator queue(store, std::string(1, family));
  for (queue.SeekToFirst(); queue.Valid(); queue.Next()) ++n;
  TIDEMAP_RETURN_IF_ERROR(queue.status());
  return n;
}

// The expiry index against the records: `expiring` holds the live records
// with an expiry per expiry bucket. Every such record must have a valid
// entry, and a valid entry names such a record (at most one per record once
// deduped), so the valid entries of each bucket must number exactly its
// records; adds the differences. Holds one bucket's entries at a time.
Result<uint64_t> CheckExpiryIndex(const Store& store, const ExpiryIndex& index,
                                  std::map<uint64_t, uint64_t> expiring) {
  uint64_t mismatches = 0;
  TIDEMAP_RETURN_IF_ERROR(
      index.ForEachBucket(store, 0, UINT64_MAX - 1, [&](const ExpiryBucket& b) -> Result<bool> {
        uint64_t valid = 0;
        for (const rows::ExpiryEntry& e : b.Merged()) {
          TIDEMAP_ASSIGN_OR_RETURN(const bool ok, ExpiryIndex::Valid(store, e));
          valid += ok ? 1 : 0;
        }
        const uint64_t records = expiring[b.bucket];
        mismatches += valid > records ? valid - records : records - valid;
        expiring.erase(b.bucket);
        return true;
      }));
  for (const auto& [bucket, records] : expiring) mismatches += records;  // no entry at all
  return mismatches;
}

// Sealed values (encryption at rest) that fail to open with `cipher`: their
// tags are checked, so tampered or moved values are counted.
Result<uint64_t> CountValueFailures(const Store& store, const ValueCipher* cipher) {
  uint64_t failures = 0;
  PrefixIterator records(store, std::string(1, rows::kRecordPrefix));
  for (records.SeekToFirst(); records.Valid(); records.Next()) {
    auto key_id = rows::RecordSealKeyId(records.key(), records.value());
    // A checksum mismatch fails the tree rebuild, which runs first.
    if (!key_id.ok() || *key_id == 0) continue;
    if (!rows::DecodeRecord(records.key(), records.value(), cipher).ok()) ++failures;
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  return failures;
}

}  // namespace

Result<ScrubReport> Replica::Scrub() {
  Impl& im = *impl_;
  MutexLock commit(&im.commit_mu);  // no commit is half done while we look
  // Persist every leaf changed since the last checkpoint, so the rows on disk
  // should equal the rebuild exactly.
  TIDEMAP_RETURN_IF_ERROR(im.Checkpoint(im.LastSeq(), /*sync=*/false));
  ScrubReport report;
  uint64_t tombstones = 0;
  std::map<uint64_t, uint64_t> expiring;  // live records with an expiry, per expiry bucket
  TIDEMAP_ASSIGN_OR_RETURN(const TreeRebuild rebuilt,
                           TreeState::RebuildFromRecords(
                               *im.store, im.tree_shape, [&](const KeyMeta& m, uint64_t key_hash) {
                                 if (m.tombstone) ++tombstones;
                                 if (!m.tombstone && m.expiry_ms != 0) {
                                   ++expiring[rows::ExpiryBucketOf(m.expiry_ms)];
                                 }
                                 return CheckIndexRows(*im.store, m, key_hash,
                                                       &report.index_mismatches);
                               }));
  report.records = rebuilt.records;
  // Index rows without a record show up as a count difference; tombstone
  // queue rows without their tombstone, likewise.
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t index_rows, CountIndexRows(*im.store));
  if (index_rows > report.records) report.index_mismatches += index_rows - report.records;
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t queue_rows, CountQueueRows(*im.store, rows::kGcPrefix));
  if (queue_rows > tombstones) report.index_mismatches += queue_rows - tombstones;
  // Version 4 queue rows are all moved at open.
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t old_rows, CountQueueRows(*im.store, rows::kExpiryPrefix));
  report.index_mismatches += old_rows;
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t expiry_mismatches,
                           CheckExpiryIndex(*im.store, im.expiry_index, std::move(expiring)));
  report.index_mismatches += expiry_mismatches;
  TIDEMAP_ASSIGN_OR_RETURN(report.value_failures,
                           CountValueFailures(*im.store, im.options.value_cipher));
  TIDEMAP_RETURN_IF_ERROR(im.tree.CompareWithRebuild(*im.store, rebuilt, &report));
  return report;
}

}  // namespace tidemap
