// Snapshots: SnapshotCursor (a consistent read of every record) and
// SnapshotLoader (records into an empty replica).
#include <tidemap/replica/snapshot.h>

#include <algorithm>
#include <string>
#include <utility>

#include <tidemap/base/radix_sort.h>
#include <tidemap/replica/clear_state_internal.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/limits_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Loader batches are written when they pass this size.
constexpr size_t kLoadBatchBytesMax = size_t{4} << 20;

}  // namespace

// ---------------------------------------------------------------------------
// SnapshotCursor

SnapshotCursor::~SnapshotCursor() = default;

Result<std::unique_ptr<SnapshotCursor>> SnapshotCursor::Open(const Replica& replica,
                                                             uint64_t created_ms) {
  Replica::Impl& im = *replica.impl_;
  std::unique_ptr<SnapshotCursor> cursor(new SnapshotCursor());
  SnapshotHeader& h = cursor->header_;
  {
    // Under the commit lock no group is between its LevelDB write and the
    // counts that describe it, so the iterator's implicit snapshot holds
    // exactly the records of every seq up to h.seq.
    MutexLock commit(&im.commit_mu);
    const CommittedCounts counts = im.Counts();
    h.seq = counts.seq;
    h.records = counts.live + counts.tombs;
    cursor->it_ = im.store->NewIterator();
  }
  cursor->cipher_ = im.options.value_cipher;
  h.node_id = im.options.node_id;
  h.incarnation = im.incarnation.load();
  h.created_ms = created_ms;
  cursor->records_ =
      std::make_unique<PrefixIterator>(cursor->it_.get(), std::string(1, rows::kRecordPrefix));
  cursor->records_->SeekToFirst();
  return cursor;
}

Result<bool> SnapshotCursor::Visit(size_t page_bytes, size_t records_max, const RecordFn& fn) {
  if (done_) return false;
  PrefixIterator& records = *records_;
  size_t bytes = 0, n = 0;
  for (; records.Valid() && bytes < page_bytes && n < records_max; records.Next()) {
    const std::string_view row_key = records.key();
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordKeyParts parts, rows::SplitRecordKey(row_key));
    std::string_view value;
    TIDEMAP_ASSIGN_OR_RETURN(
        const rows::RecordMeta meta,
        rows::DecodeRecordView(row_key, records.value(), cipher_, &opened_, &value));
    bytes += parts.map.size() + parts.key.size() + value.size();
    ++n;
    TIDEMAP_RETURN_IF_ERROR(fn(SnapshotRecordView{parts.map, parts.key, value, meta.version,
                                                  meta.tombstone, meta.expiry_ms}));
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  if (records.Valid()) return true;
  done_ = true;
  return false;
}

Result<bool> SnapshotCursor::Next(size_t page_bytes, size_t records_max,
                                  std::vector<KeyedRecord>* out) {
  return Visit(page_bytes, records_max, [out](const SnapshotRecordView& r) {
    out->push_back(KeyedRecord{std::string(r.map), std::string(r.key), std::string(r.value),
                               r.version, r.tombstone, r.expiry_ms});
    return Status::Ok();
  });
}

Result<std::vector<SnapshotWatermark>> SnapshotCursor::Watermarks() {
  TIDEMAP_CHECK(done_);
  std::vector<SnapshotWatermark> out;
  PrefixIterator marks(it_.get(), std::string(1, rows::kGcWatermarkPrefix));
  for (marks.SeekToFirst(); marks.Valid(); marks.Next()) {
    uint32_t bucket = 0;
    if (!rows::ParseGcWatermarkKey(marks.key(), &bucket)) {
      return Status::Corruption("malformed GC watermark row");
    }
    TIDEMAP_ASSIGN_OR_RETURN(const Version v,
                             rows::DecodeVersion(marks.value(), "bucket gc watermark"));
    out.push_back(SnapshotWatermark{bucket, v});
  }
  TIDEMAP_RETURN_IF_ERROR(marks.status());
  return out;
}

// ---------------------------------------------------------------------------
// SnapshotLoader

SnapshotLoader::SnapshotLoader(Replica* replica, TreeRebuild tree, size_t index_run_bytes_max)
    : replica_(replica),
      batch_(std::make_unique<Batch>()),
      rebuilt_(std::make_unique<TreeRebuild>(std::move(tree))),
      leaves_(rebuilt_->tree.leaf_count()),
      index_run_bytes_max_(index_run_bytes_max),
      expiry_rows_(std::make_unique<ExpiryRowWriter>(&replica->impl_->expiry_index)) {
  index_.reserve(index_run_bytes_max / sizeof(IndexRow) + 1);
  index_bytes_.reserve(index_run_bytes_max);
}

SnapshotLoader::~SnapshotLoader() = default;

Result<std::unique_ptr<SnapshotLoader>> SnapshotLoader::Begin(Replica* replica,
                                                              size_t index_run_bytes_max) {
  TIDEMAP_CHECK(index_run_bytes_max <= (size_t{1} << 31));  // rows are at 32-bit offsets
  if (replica->LastSeq() != 0 || replica->KeyCount() != 0) {
    return Status::Refused("a snapshot loads only into an empty replica; this one holds " +
                           std::to_string(replica->KeyCount()) + " records and oplog seq " +
                           std::to_string(replica->LastSeq()));
  }
  TreeRebuild tree;
  TIDEMAP_ASSIGN_OR_RETURN(tree.tree, MerkleTree::Create(replica->impl_->tree_shape));
  tree.live.assign(tree.tree.leaf_count(), 0);
  tree.tombs.assign(tree.tree.leaf_count(), 0);
  return std::unique_ptr<SnapshotLoader>(
      new SnapshotLoader(replica, std::move(tree), index_run_bytes_max));
}

Status SnapshotLoader::Flush() {
  if (batch_->empty()) return Status::Ok();
  TIDEMAP_RETURN_IF_ERROR(replica_->impl_->store->Write(batch_.get(), /*sync=*/false));
  batch_->Clear();
  return Status::Ok();
}

Status SnapshotLoader::WriteIndexRun() {
  TIDEMAP_RETURN_IF_ERROR(Flush());
  const std::string_view bytes(index_bytes_.data(), index_bytes_.size());
  auto row_key = [bytes](const IndexRow& r) { return bytes.substr(r.at, r.key_bytes); };
  // Row keys are the prefix, the hash big-endian, then map and key: by hash
  // first, the whole key on a tie, is row key order.
  RadixSortByKey(
      index_.data(), index_.data() + index_.size(), [](const IndexRow& r) { return r.hash; },
      [&](const IndexRow& a, const IndexRow& b) {
        return a.hash != b.hash ? a.hash < b.hash : row_key(a) < row_key(b);
      });
  // In hash order the rows' bytes are read at random from the buffer: the
  // bytes of a row some places ahead are asked for before they are needed.
  constexpr size_t kPrefetchAhead = 16;
  for (size_t i = 0; i < index_.size(); ++i) {
    if (i + kPrefetchAhead < index_.size()) {
      __builtin_prefetch(bytes.data() + index_[i + kPrefetchAhead].at);
    }
    const IndexRow& r = index_[i];
    const std::string_view value = bytes.substr(r.at + r.key_bytes, r.value_bytes);
    AddToTree(r.hash, row_key(r), value);
    batch_->Put(row_key(r), value);
    if (batch_->ApproximateBytes() >= kLoadBatchBytesMax) TIDEMAP_RETURN_IF_ERROR(Flush());
  }
  index_.clear();
  index_bytes_.clear();
  return Flush();
}

void SnapshotLoader::AddToTree(uint64_t hash, std::string_view row_key, std::string_view value) {
  uint64_t parsed_hash = 0;
  std::string_view map, key;
  const bool parsed = rows::ParseHashIndexKey(row_key, &parsed_hash, &map, &key);
  const Result<rows::RecordMeta> meta = rows::DecodeHashIndexValue(value);
  TIDEMAP_CHECK(parsed && parsed_hash == hash && meta.ok());  // rows this loader encoded
  TreeRebuild& tree = *rebuilt_;
  const uint32_t bucket = tree.tree.BucketOf(hash);
  leaves_[bucket] ^= ItemDigest(map, key, meta->version, meta->tombstone);
  ++(meta->tombstone ? tree.tombs : tree.live)[bucket];
}

Status SnapshotLoader::Add(std::span<const KeyedRecord> records) {
  for (const KeyedRecord& r : records) {
    TIDEMAP_RETURN_IF_ERROR(
        Add(SnapshotRecordView{r.map, r.key, r.value, r.version, r.tombstone, r.expiry_ms}));
  }
  return Status::Ok();
}

Status SnapshotLoader::Add(const SnapshotRecordView& r) {
  // A map's clear is the one record at the empty key (a tombstone).
  const bool clear = r.tombstone && r.key == kClearKey;
  const Limits& limits = replica_->limits();
  TIDEMAP_RETURN_IF_ERROR(clear ? CheckMapName(limits, r.map)
                                : CheckSizes(limits, r.map, r.key, r.value));
  if (r.tombstone && (!r.value.empty() || r.expiry_ms != 0)) {
    return Status::InvalidArgument("snapshot: a tombstone with a value or an expiry at " +
                                   rows::DescribeKey(r.map, r.key));
  }
  rows::RecordKeyInto(&row_key_, r.map, r.key);
  if (records_ != 0 && row_key_ <= last_row_key_) {
    return Status::InvalidArgument("snapshot: records out of (map, key) order at " +
                                   rows::DescribeKey(r.map, r.key));
  }
  const rows::RecordMeta meta{r.version, r.tombstone, r.expiry_ms};
  const std::optional<uint64_t> expiry =
      r.expiry_ms == 0 ? std::nullopt : std::optional<uint64_t>(r.expiry_ms);
  rows::EncodeRecordInto(&value_bytes_, row_key_, meta, expiry, r.value,
                         replica_->impl_->options.value_cipher);
  batch_->Put(row_key_, value_bytes_);
  std::swap(last_row_key_, row_key_);
  // A map's clear: its meta row, so the opened replica hides the records
  // older than it (a snapshot may hold some not yet removed) and removes them.
  if (clear) batch_->Put(rows::ClearRowKey(r.map), rows::EncodeClearRow({r.version, false, {}}));
  // The rows RebuildDerivedRows would write, and the tree it would compute,
  // without reading the records back. A queue row holds the seq that must
  // be acknowledged before a purge: none here (the records are not changes
  // of this database).
  if (r.tombstone) batch_->Put(rows::GcQueueKey(r.version, r.map, r.key), rows::EncodeU64(0));
  if (r.expiry_ms != 0) {
    expiry_rows_->Add(rows::ExpiryEntryRef{r.expiry_ms, r.version, 0, r.map, r.key}, batch_.get());
  }
  const uint64_t hash = KeyHash(r.map, r.key);
  IndexRow& row = index_.emplace_back();
  row.hash = hash;
  row.at = static_cast<uint32_t>(index_bytes_.size());
  rows::HashIndexKeyInto(&row_key_, hash, r.map, r.key);
  rows::EncodeHashIndexValueInto(&value_bytes_, meta);
  index_bytes_.insert(index_bytes_.end(), row_key_.begin(), row_key_.end());
  index_bytes_.insert(index_bytes_.end(), value_bytes_.begin(), value_bytes_.end());
  row.key_bytes = static_cast<uint32_t>(row_key_.size());
  row.value_bytes = static_cast<uint32_t>(value_bytes_.size());
  ++rebuilt_->records;
  ++records_;
  max_physical_ms_ = std::max(max_physical_ms_, r.version.hlc.physical_ms());
  if (batch_->ApproximateBytes() >= kLoadBatchBytesMax) TIDEMAP_RETURN_IF_ERROR(Flush());
  if (index_bytes_.size() + index_.size() * sizeof(IndexRow) >= index_run_bytes_max_) {
    return WriteIndexRun();
  }
  return Status::Ok();
}

Result<uint64_t> SnapshotLoader::Finish(std::span<const SnapshotWatermark> watermarks) {
  Replica::Impl& im = *replica_->impl_;
  const uint32_t leaf_count = im.tree.leaf_count();
  Version overall;
  for (const SnapshotWatermark& w : watermarks) {
    if (w.bucket >= leaf_count) {
      return Status::InvalidArgument("snapshot: GC watermark of bucket " +
                                     std::to_string(w.bucket) + ", the tree has " +
                                     std::to_string(leaf_count));
    }
    batch_->Put(rows::GcWatermarkKey(w.bucket), rows::EncodeVersion(w.version));
    overall = std::max(overall, w.version);
  }
  if (!overall.hlc.IsZero()) {
    batch_->Put(rows::MetaKey(rows::kMetaGcWatermark), rows::EncodeVersion(overall));
    batch_->Put(rows::MetaKey(rows::kMetaGcPurged), rows::EncodeU64(0));
  }
  // Local writes after the restore are stamped above every loaded version.
  const uint64_t bound_ms = std::max(max_physical_ms_, overall.hlc.physical_ms());
  if (bound_ms != 0) batch_->Put(rows::MetaKey(rows::kMetaHlcBound), rows::EncodeU64(bound_ms));
  expiry_rows_->Finish(batch_.get());
  TIDEMAP_RETURN_IF_ERROR(WriteIndexRun());
  TIDEMAP_RETURN_IF_ERROR(rebuilt_->tree.SetLeaves(leaves_));
  // Every page is dirty: the checkpoint writes them all, synced (and with
  // them every unsynced row above).
  MutexLock commit(&im.commit_mu);
  im.tree.Reset(std::move(*rebuilt_));
  TIDEMAP_RETURN_IF_ERROR(im.tree.Checkpoint(im.store.get(), 0, /*sync=*/true, im.options.clock));
  // A compaction of a range beyond every row writes the memtable out and
  // nothing else, so the next open does not replay the log of the last rows.
  im.store->CompactRange("\xff", "\xff\xff");
  return records_;
}

}  // namespace tidemap
