// The replica's readers: local reads (Get, Scan, ForEachKeyMeta) and the
// sync core's reads for tree diffs (ReadRecord, RecordsByKeyHash,
// BucketSummaries, ScanRecords). Reads go straight
// to LevelDB and see whole batches or nothing.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/readers_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

constexpr size_t kScanLimitMax = 10'000;

// Appends the records for which keep(meta, map, key) holds to `out`, from
// after `*cursor` (empty: the first record) in (map, key) order, until they
// reach `page_bytes` (then `*cursor` is where to resume, and the result
// false) or the records end (true).
template <typename Keep>
Result<bool> ScanRecordsWhere(const Store& store, const ValueCipher* cipher, std::string* cursor,
                              size_t page_bytes, std::vector<KeyedRecord>* out, Keep&& keep) {
  PrefixIterator records(store, std::string(1, rows::kRecordPrefix));
  size_t bytes = 0;
  if (cursor->empty()) {
    records.SeekToFirst();
  } else {
    records.SeekAfter(*cursor);
  }
  for (; records.Valid(); records.Next()) {
    const std::string_view row_key = records.key();
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta,
                             rows::DecodeRecordMeta(row_key, records.value()));
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordKeyParts parts, rows::SplitRecordKey(row_key));
    if (!keep(meta, parts.map, parts.key)) continue;
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec,
                             rows::DecodeRecord(row_key, records.value(), cipher));
    bytes += parts.map.size() + parts.key.size() + rec.value.size();
    out->push_back(KeyedRecord{std::string(parts.map), std::string(parts.key), std::move(rec.value),
                               rec.version, rec.tombstone, rec.expiry_ms.value_or(0)});
    if (bytes >= page_bytes) {
      cursor->assign(row_key);
      TIDEMAP_RETURN_IF_ERROR(records.status());
      return false;
    }
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  return true;
}

// The records one slice of RecordsByKeyHash read: for each of its hashes in
// order, how many records it has (all of them in `records`).
struct HashSlice {
  std::vector<KeyedRecord> records;
  std::vector<uint32_t> per_hash;
};

// One slice of RecordsByKeyHash: the records of `hashes` in order, until
// they alone reach `bytes_max`.
Status ReadHashSlice(const Replica& replica, const Store& store, std::span<const uint64_t> hashes,
                     size_t bytes_max, HashSlice* slice) {
  HashSlice& mine = *slice;
  auto it = store.NewIterator();
  std::vector<std::pair<std::string, std::string>> keys;
  size_t mine_bytes = 0;
  for (size_t i = 0; i < hashes.size() && mine_bytes < bytes_max; ++i) {
    keys.clear();
    TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
        it.get(), hashes[i], hashes[i],
        [&](uint64_t, std::string_view m, std::string_view k, const rows::RecordMeta&) {
          keys.emplace_back(std::string(m), std::string(k));
        }));
    uint32_t count = 0;
    for (const auto& [m, k] : keys) {
      TIDEMAP_ASSIGN_OR_RETURN(std::optional<KeyedRecord> rec, replica.ReadRecord(m, k));
      if (!rec.has_value()) continue;
      mine_bytes += rec->map.size() + rec->key.size() + rec->value.size();
      mine.records.push_back(std::move(*rec));
      ++count;
    }
    mine.per_hash.push_back(count);
  }
  return Status::Ok();
}

}  // namespace

Status ForEachRecordMeta(const Store& store, const std::function<bool(const KeyMeta&)>& fn) {
  PrefixIterator records(store, std::string(1, rows::kRecordPrefix));
  for (records.SeekToFirst(); records.Valid(); records.Next()) {
    const std::string_view row_key = records.key();
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordKeyParts parts, rows::SplitRecordKey(row_key));
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta,
                             rows::DecodeRecordMeta(row_key, records.value()));
    if (!fn(KeyMeta{parts.map, parts.key, meta.version, meta.tombstone, meta.expiry_ms})) {
      return Status::Ok();
    }
  }
  return records.status();
}

Result<Record> Replica::Get(std::string_view map, std::string_view key) const {
  impl_->reads.fetch_add(1, std::memory_order_relaxed);
  const std::string row_key = rows::RecordKey(map, key);
  auto bytes = impl_->store->Get(row_key);
  if (bytes.status().IsNotFound()) {
    return Status::NotFound(rows::DescribeKey(map, key) + " not found");
  }
  // A read error from LevelDB (a block checksum, say) knows no key: name it.
  if (!bytes.ok()) return bytes.status().WithContext("reading " + rows::DescribeKey(map, key));
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec,
                           rows::DecodeRecord(row_key, *bytes, impl_->options.value_cipher));
  if (rec.tombstone) return Status::NotFound(rows::DescribeKey(map, key) + " not found (deleted)");
  if (impl_->clears.Hides(map, rec.version)) {
    return Status::NotFound(rows::DescribeKey(map, key) + " not found (map cleared)");
  }
  const uint64_t expiry_ms = rec.expiry_ms.value_or(0);
  if (IsExpired(expiry_ms, impl_->options.clock->NowMillis())) {
    return Status::NotFound(rows::DescribeKey(map, key) + " not found (expired)");
  }
  return Record{std::move(rec.value), rec.version, expiry_ms};
}

Result<ScanPage> Replica::Scan(std::string_view map, std::string_view prefix,
                               std::optional<std::string_view> after, size_t limit) const {
  impl_->reads.fetch_add(1, std::memory_order_relaxed);
  if (limit == 0 || limit > kScanLimitMax) {
    return Status::InvalidArgument("scan limit must be 1.." + std::to_string(kScanLimitMax) +
                                   ", not " + std::to_string(limit));
  }
  ScanPage page;
  const uint64_t now_ms = impl_->options.clock->NowMillis();
  // Records older than the map's clear are left out, removed or not yet.
  const std::optional<Version> cleared = impl_->clears.VersionOf(map);
  PrefixIterator records(*impl_->store, rows::RecordMapPrefix(map, prefix));
  if (after.has_value()) {
    records.SeekAfter(rows::RecordKey(map, *after));
  } else {
    // Past the map's clear (its record at the empty key, the first of the
    // map) without reading it: a cleared map scans like an empty one.
    records.Seek(rows::RecordKey(map, std::string_view("\0", 1)));
  }
  for (; records.Valid(); records.Next()) {
    const std::string_view row_key = records.key();
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordKeyParts parts, rows::SplitRecordKey(row_key));
    TIDEMAP_ASSIGN_OR_RETURN(
        rows::RecordValue rec,
        rows::DecodeRecord(row_key, records.value(), impl_->options.value_cipher));
    const uint64_t expiry_ms = rec.expiry_ms.value_or(0);
    if (rec.tombstone || IsExpired(expiry_ms, now_ms)) continue;
    if (cleared.has_value() && rec.version < *cleared) continue;
    if (page.items.size() == limit) {
      page.next = page.items.back().key;
      break;
    }
    page.items.push_back(
        ScanItem{std::string(parts.key), std::move(rec.value), rec.version, expiry_ms});
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  return page;
}

Status Replica::ForEachKeyMeta(const std::function<bool(const KeyMeta&)>& fn) const {
  return ForEachRecordMeta(*impl_->store, fn);
}

Result<std::optional<KeyedRecord>> Replica::ReadRecord(std::string_view map,
                                                       std::string_view key) const {
  const std::string row_key = rows::RecordKey(map, key);
  auto bytes = impl_->store->Get(row_key);
  if (bytes.status().IsNotFound()) return std::optional<KeyedRecord>();
  if (!bytes.ok()) return bytes.status();
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec,
                           rows::DecodeRecord(row_key, *bytes, impl_->options.value_cipher));
  return std::optional<KeyedRecord>(KeyedRecord{std::string(map), std::string(key),
                                                std::move(rec.value), rec.version, rec.tombstone,
                                                rec.expiry_ms.value_or(0)});
}

Result<size_t> Replica::RecordsByKeyHash(std::span<const uint64_t> key_hashes, size_t bytes_max,
                                         std::vector<KeyedRecord>* out) const {
  for (size_t i = 1; i < key_hashes.size(); ++i) TIDEMAP_CHECK(key_hashes[i] > key_hashes[i - 1]);
  // A window of hashes at a time is read in parallel slices, each seeking
  // forward with its own iterator and stopping once it alone has read what
  // is left of the byte budget; then the slices are taken in order until the
  // budget is spent. So memory stays within a budget (plus one hash's
  // records) per slice, and a slice's unread tail is never skipped: the
  // budget is always spent before it.
  const uint32_t threads = impl_->options.diff_read_threads;
  const size_t window_max = size_t{threads} * kParallelReadSliceMin * 4;
  std::vector<HashSlice> slices;
  size_t bytes = 0, done = 0;
  while (done < key_hashes.size() && bytes < bytes_max) {
    const std::span<const uint64_t> window =
        key_hashes.subspan(done, std::min(window_max, key_hashes.size() - done));
    const size_t left = bytes_max - bytes;
    slices.assign(threads, HashSlice{});
    TIDEMAP_RETURN_IF_ERROR(ForEachReadSlice(
        window.size(), threads, [&](size_t slice, size_t begin, size_t end) -> Status {
          return ReadHashSlice(*this, *impl_->store, window.subspan(begin, end - begin), left,
                               &slices[slice]);
        }));
    for (HashSlice& slice : slices) {
      size_t next = 0;
      for (uint32_t count : slice.per_hash) {
        if (bytes >= bytes_max) break;
        for (uint32_t r = 0; r < count; ++r) {
          KeyedRecord& rec = slice.records[next++];
          bytes += rec.map.size() + rec.key.size() + rec.value.size();
          out->push_back(std::move(rec));
        }
        ++done;
      }
    }
  }
  return done;
}

Status Replica::BucketSummaries(const std::vector<uint32_t>& buckets,
                                std::vector<msg::SummaryEntry>* entries,
                                std::vector<uint32_t>* counts) const {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  TIDEMAP_RETURN_IF_ERROR(impl_->tree.BucketRanges(buckets, &ranges));
  // Cold buckets cost a block read and decompression each: parallel slices,
  // each seeking forward with its own iterator, joined in bucket order. The
  // first slice appends to the output directly (the only one when the call
  // is small), the others to their own vectors, appended after it.
  const uint32_t threads = impl_->options.diff_read_threads;
  std::vector<std::vector<msg::SummaryEntry>> slice_entries(threads);
  std::vector<std::vector<uint32_t>> slice_counts(slice_entries.size());
  const Status status = ForEachReadSlice(
      ranges.size(), threads, [&](size_t slice, size_t begin, size_t end) -> Status {
        std::vector<msg::SummaryEntry>& mine = slice == 0 ? *entries : slice_entries[slice];
        std::vector<uint32_t>& mine_counts = slice == 0 ? *counts : slice_counts[slice];
        auto it = impl_->store->NewIterator();
        for (size_t i = begin; i < end; ++i) {
          const size_t before = mine.size();
          TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
              it.get(), ranges[i].first, ranges[i].second,
              [&](uint64_t h, std::string_view, std::string_view, const rows::RecordMeta& meta) {
                mine.push_back(msg::SummaryEntry{h, meta.version, meta.tombstone});
              }));
          mine_counts.push_back(static_cast<uint32_t>(mine.size() - before));
        }
        return Status::Ok();
      });
  if (!status.ok()) return status;
  for (size_t slice = 1; slice < slice_entries.size(); ++slice) {
    entries->insert(entries->end(), slice_entries[slice].begin(), slice_entries[slice].end());
    counts->insert(counts->end(), slice_counts[slice].begin(), slice_counts[slice].end());
  }
  return Status::Ok();
}

Status Replica::MerkleChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                                   std::vector<uint64_t>* out) const {
  return impl_->tree.ChildDigests(level, parents, out);
}

Result<bool> Replica::ScanRecords(const RecordScan& scan, std::string* cursor, size_t page_bytes,
                                  std::vector<KeyedRecord>* out) const {
  if (scan.origin.has_value()) {
    return ScanRecordsWhere(
        *impl_->store, impl_->options.value_cipher, cursor, page_bytes, out,
        [origin = *scan.origin](const rows::RecordMeta& meta, std::string_view, std::string_view) {
          return meta.version.origin == origin;
        });
  }
  return ScanRecordsWhere(*impl_->store, impl_->options.value_cipher, cursor, page_bytes, out,
                          [key_hashes = scan.key_hashes](const rows::RecordMeta&,
                                                         std::string_view m, std::string_view k) {
                            return std::binary_search(key_hashes.begin(), key_hashes.end(),
                                                      KeyHash(m, k));
                          });
}

}  // namespace tidemap
