#include <tidemap/replica/expiry_index_internal.h>

#include <algorithm>
#include <functional>
#include <string_view>
#include <unordered_set>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Oplog entries Recover reads at a time.
constexpr size_t kRecoverEntriesPerRead = 4096;

rows::ExpiryEntry Owned(const rows::ExpiryEntryRef& e) {
  return rows::ExpiryEntry{e.expiry_ms, e.version, e.seq, std::string(e.map), std::string(e.key)};
}

// Sorts and drops duplicates; of equal entries the one kept has the greatest
// seq (a purge then waits for the later acknowledgement).
void SortUnique(std::vector<rows::ExpiryEntry>* entries) {
  std::sort(entries->begin(), entries->end(), [](const auto& a, const auto& b) {
    return rows::ExpiryEntryLess(a, b) || (rows::SameExpiryEntry(a, b) && a.seq > b.seq);
  });
  entries->erase(std::unique(entries->begin(), entries->end(), rows::SameExpiryEntry),
                 entries->end());
}

struct NameHash {
  size_t operator()(const std::pair<std::string_view, std::string_view>& n) const {
    return std::hash<std::string_view>()(n.first) * 31 + std::hash<std::string_view>()(n.second);
  }
};

// Of the entries of one key in `refs` (in commit order), only the last can
// be valid: each later one was stored over the one before. Drops the others
// before they take room in a row.
void DropSuperseded(std::vector<rows::ExpiryEntryRef>* refs) {
  std::unordered_set<std::pair<std::string_view, std::string_view>, NameHash> seen;
  seen.reserve(refs->size());
  auto keep = refs->end();
  for (auto it = refs->end(); it != refs->begin();) {
    --it;
    if (seen.emplace(it->map, it->key).second) *--keep = *it;
  }
  refs->erase(refs->begin(), keep);
}

}  // namespace

void ExpiryPending::Add(const rows::ExpiryEntryRef& e) {
  fixed_.push_back(Fixed{e.expiry_ms, e.version, e.seq, names_.size(),
                         static_cast<uint32_t>(e.map.size()), static_cast<uint32_t>(e.key.size())});
  names_.append(e.map);
  names_.append(e.key);
}

void ExpiryPending::Append(const ExpiryPending& other) {
  for (size_t i = 0; i < other.size(); ++i) Add(other.at(i));
}

void ExpiryPending::Clear() {
  fixed_.clear();
  names_.clear();
}

rows::ExpiryEntryRef ExpiryPending::at(size_t i) const {
  const Fixed& f = fixed_[i];
  const std::string_view names(names_);
  return rows::ExpiryEntryRef{f.expiry_ms, f.version, f.seq, names.substr(f.names_at, f.map_bytes),
                              names.substr(f.names_at + f.map_bytes, f.key_bytes)};
}

std::vector<rows::ExpiryEntry> ExpiryBucket::Merged() const {
  std::vector<rows::ExpiryEntry> all = stored;
  all.insert(all.end(), pending.begin(), pending.end());
  SortUnique(&all);
  return all;
}

void ExpiryRowWriter::Add(const rows::ExpiryEntryRef& e, Batch* batch) {
  buffered_.Add(e);
  if (buffered_.size() >= kBufferedMax) Finish(batch);
}

void ExpiryRowWriter::Finish(Batch* batch) {
  if (buffered_.empty()) return;
  index_.AppendRows(batch, buffered_);
  buffered_.Clear();
}

Status ExpiryIndex::Load(const Store& store) {
  uint64_t next_id = 1;
  auto row = store.Get(rows::MetaKey(rows::kMetaExpiryRowId));
  if (row.ok()) {
    TIDEMAP_ASSIGN_OR_RETURN(next_id, rows::DecodeU64(*row, "expiry_row_id"));
  } else if (!row.status().IsNotFound()) {
    return row.status();
  }
  MutexLock l(&mu_);
  next_row_id_ = next_id;
  pending_.Clear();
  return Status::Ok();
}

Status ExpiryIndex::Recover(const Store& store, const Oplog& oplog, uint64_t checkpoint_seq) {
  // The oplog is never pruned past the checkpoint, so the tail names every
  // record stored since the last flush. An entry is added only for the
  // oplog entry that wrote the record's current version.
  ExpiryPending found;
  for (uint64_t after = checkpoint_seq;;) {
    TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> tail,
                             oplog.ReadAfter(after, kRecoverEntriesPerRead));
    if (tail.empty()) break;
    for (const OplogEntry& e : tail) {
      if (e.tombstone) continue;
      auto bytes = store.Get(rows::HashIndexKey(KeyHash(e.map, e.key), e.map, e.key));
      if (bytes.status().IsNotFound()) continue;
      if (!bytes.ok()) return bytes.status();
      TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordMeta meta, rows::DecodeHashIndexValue(*bytes));
      if (meta.tombstone || meta.expiry_ms == 0 || meta.version != e.version) continue;
      found.Add(rows::ExpiryEntryRef{meta.expiry_ms, meta.version, e.seq, e.map, e.key});
    }
    after = tail.back().seq;
  }
  MutexLock l(&mu_);
  pending_.Append(found);
  return Status::Ok();
}

void ExpiryIndex::Add(const ExpiryPending& committed) {
  if (committed.empty()) return;
  MutexLock l(&mu_);
  pending_.Append(committed);
}

bool ExpiryIndex::HasPending() const {
  MutexLock l(&mu_);
  return !pending_.empty();
}

void ExpiryIndex::AppendFlush(Batch* batch, const ExpiryPending* more) {
  MutexLock l(&mu_);
  std::vector<rows::ExpiryEntryRef> refs;
  refs.reserve(pending_.size() + (more != nullptr ? more->size() : 0));
  for (size_t i = 0; i < pending_.size(); ++i) refs.push_back(pending_.at(i));
  for (size_t i = 0; more != nullptr && i < more->size(); ++i) refs.push_back(more->at(i));
  DropSuperseded(&refs);
  AppendRowsLocked(batch, &refs);
}

void ExpiryIndex::Flushed() {
  MutexLock l(&mu_);
  pending_.Clear();
}

void ExpiryIndex::AppendRows(Batch* batch, const ExpiryPending& entries) {
  std::vector<rows::ExpiryEntryRef> refs;
  refs.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) refs.push_back(entries.at(i));
  MutexLock l(&mu_);
  AppendRowsLocked(batch, &refs);
}

void ExpiryIndex::AppendRowsLocked(Batch* batch, std::vector<rows::ExpiryEntryRef>* refs) {
  if (refs->empty()) return;
  std::stable_sort(refs->begin(), refs->end(),
                   [](const rows::ExpiryEntryRef& a, const rows::ExpiryEntryRef& b) {
                     return a.expiry_ms < b.expiry_ms;
                   });
  // Cut a row at a bucket's end, at kExpiryRowEntriesMax entries, or after
  // the entry that takes it to kExpiryRowBytesMax.
  size_t begin = 0, row_bytes = 0;
  for (size_t i = 0; i < refs->size(); ++i) {
    const rows::ExpiryEntryRef& e = (*refs)[i];
    row_bytes += 32 + e.map.size() + e.key.size();
    const bool last = i + 1 == refs->size();
    if (last || i + 1 - begin == rows::kExpiryRowEntriesMax ||
        row_bytes >= rows::kExpiryRowBytesMax ||
        rows::ExpiryBucketOf((*refs)[i + 1].expiry_ms) != rows::ExpiryBucketOf(e.expiry_ms)) {
      const uint64_t bucket = rows::ExpiryBucketOf(e.expiry_ms);
      const std::string key = rows::ExpiryRowKey(bucket, next_row_id_++);
      batch->Put(
          key, rows::EncodeExpiryRow(key, bucket, std::span(refs->data() + begin, i + 1 - begin)));
      begin = i + 1;
      row_bytes = 0;
    }
  }
  batch->Put(rows::MetaKey(rows::kMetaExpiryRowId), rows::EncodeU64(next_row_id_));
}

std::vector<rows::ExpiryEntry> ExpiryIndex::PendingIn(uint64_t first, uint64_t last) const {
  std::vector<rows::ExpiryEntry> out;
  MutexLock l(&mu_);
  for (size_t i = 0; i < pending_.size(); ++i) {
    const rows::ExpiryEntryRef e = pending_.at(i);
    const uint64_t bucket = rows::ExpiryBucketOf(e.expiry_ms);
    if (bucket >= first && bucket <= last) out.push_back(Owned(e));
  }
  SortUnique(&out);
  return out;
}

Status ExpiryIndex::ForEachBucket(
    const Store& store, uint64_t first, uint64_t last,
    const std::function<Result<bool>(const ExpiryBucket&)>& fn) const {
  // Pending entries first, then the iterator (see the header).
  const std::vector<rows::ExpiryEntry> pending = PendingIn(first, last);
  auto next_pending = pending.begin();
  PrefixIterator it(store, std::string_view(&rows::kExpiryRowPrefix, 1));
  it.Seek(rows::ExpiryRowSeek(first));
  for (;;) {
    uint64_t row_bucket = UINT64_MAX, id = 0;
    if (it.Valid() && !rows::ParseExpiryRowKey(it.key(), &row_bucket, &id)) {
      return Status::Corruption("malformed expiry row key " + Printable(it.key()));
    }
    if (row_bucket > last) row_bucket = UINT64_MAX;
    const uint64_t pending_bucket =
        next_pending == pending.end() ? UINT64_MAX : rows::ExpiryBucketOf(next_pending->expiry_ms);
    ExpiryBucket b;
    b.bucket = std::min(row_bucket, pending_bucket);
    if (b.bucket == UINT64_MAX) break;
    for (; it.Valid() && row_bucket == b.bucket; it.Next()) {
      if (!rows::ParseExpiryRowKey(it.key(), &row_bucket, &id)) {
        return Status::Corruption("malformed expiry row key " + Printable(it.key()));
      }
      if (row_bucket != b.bucket) break;
      TIDEMAP_RETURN_IF_ERROR(rows::DecodeExpiryRow(it.key(), it.value(), &b.stored));
      b.row_keys.emplace_back(it.key());
    }
    SortUnique(&b.stored);
    for (;
         next_pending != pending.end() && rows::ExpiryBucketOf(next_pending->expiry_ms) == b.bucket;
         ++next_pending) {
      b.pending.push_back(*next_pending);
    }
    TIDEMAP_ASSIGN_OR_RETURN(const bool go_on, fn(b));
    if (!go_on) return Status::Ok();
  }
  return it.status();
}

Result<bool> ExpiryIndex::Valid(const Store& store, const rows::ExpiryEntry& e) {
  auto bytes = store.Get(rows::HashIndexKey(KeyHash(e.map, e.key), e.map, e.key));
  if (bytes.status().IsNotFound()) return false;
  if (!bytes.ok()) return bytes.status();
  TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordMeta meta, rows::DecodeHashIndexValue(*bytes));
  return !meta.tombstone && meta.version == e.version && meta.expiry_ms == e.expiry_ms;
}

Result<uint64_t> ExpiryIndex::NextExpiry(const Store& store, uint64_t after_ms) const {
  uint64_t next_ms = 0;
  TIDEMAP_RETURN_IF_ERROR(ForEachBucket(store, rows::ExpiryBucketOf(after_ms + 1), UINT64_MAX - 1,
                                        [&](const ExpiryBucket& b) -> Result<bool> {
                                          for (const rows::ExpiryEntry& e : b.Merged()) {
                                            if (e.expiry_ms <= after_ms) continue;
                                            TIDEMAP_ASSIGN_OR_RETURN(const bool valid,
                                                                     Valid(store, e));
                                            if (valid) {
                                              next_ms = e.expiry_ms;
                                              return false;
                                            }
                                          }
                                          return true;
                                        }));
  return next_ms;
}

}  // namespace tidemap
