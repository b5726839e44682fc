#include <tidemap/replica/tombstone_gc_internal.h>

#include <algorithm>
#include <string>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Tombstones one purge batch deletes at most.
constexpr size_t kPurgeBatchMax = 10'000;
// Expiry index entries of buckets not yet due that one purge checks at most
// (see CompactExpiryRows).
constexpr size_t kCompactEntriesMax = 50'000;

// The greatest seq every known peer acknowledged (UINT64_MAX with no known
// peer: then the horizon alone decides).
Result<uint64_t> AckedByAll(const Oplog& oplog) {
  TIDEMAP_ASSIGN_OR_RETURN(auto acks, oplog.PeerAcks());
  uint64_t acked_by_all = UINT64_MAX;
  for (const auto& [peer, seq] : acks) acked_by_all = std::min(acked_by_all, seq);
  return acked_by_all;
}

}  // namespace

Status GcState::LoadMeta(const Store& store) {
  Version watermark;
  uint64_t purged = 0;
  if (auto wm = store.Get(rows::MetaKey(rows::kMetaGcWatermark)); wm.ok()) {
    TIDEMAP_ASSIGN_OR_RETURN(watermark, rows::DecodeVersion(*wm, "gc_watermark"));
    TIDEMAP_ASSIGN_OR_RETURN(std::string purged_bytes,
                             store.Get(rows::MetaKey(rows::kMetaGcPurged)));
    TIDEMAP_ASSIGN_OR_RETURN(purged, rows::DecodeU64(purged_bytes, "gc_purged"));
  } else if (!wm.status().IsNotFound()) {
    return wm.status();
  }
  MutexLock l(&mu_);
  watermark_ = watermark;
  purged_ = purged;
  return Status::Ok();
}

Status GcState::LoadBuckets(const Store& store, const std::string& path, uint32_t leaf_count) {
  MutexLock l(&mu_);
  bucket_watermark_.assign(leaf_count, Version{});
  PrefixIterator marks(store, std::string(1, rows::kGcWatermarkPrefix));
  for (marks.SeekToFirst(); marks.Valid(); marks.Next()) {
    uint32_t bucket = 0;
    if (!rows::ParseGcWatermarkKey(marks.key(), &bucket) || bucket >= bucket_watermark_.size()) {
      return Status::Corruption("database " + path + ": malformed GC watermark row");
    }
    TIDEMAP_ASSIGN_OR_RETURN(bucket_watermark_[bucket],
                             rows::DecodeVersion(marks.value(), "bucket gc watermark"));
  }
  return marks.status();
}

Version GcState::watermark() const {
  MutexLock l(&mu_);
  return watermark_;
}

uint64_t GcState::purged() const {
  MutexLock l(&mu_);
  return purged_;
}

Version GcState::BucketWatermark(uint32_t bucket) const {
  MutexLock l(&mu_);
  return bucket_watermark_[bucket];
}

void GcState::Raise(const std::map<uint32_t, Version>& buckets, const Version& watermark,
                    uint64_t purged) {
  MutexLock l(&mu_);
  for (const auto& [bucket, v] : buckets) bucket_watermark_[bucket] = v;
  watermark_ = watermark;
  purged_ = purged;
}

// One purge: the tombstones it deletes, a batch of up to kPurgeBatchMax at a
// time. Each batch deletes their records, key-hash index rows and queue
// rows, raises the watermarks and the purge count, and checkpoints the
// Merkle leaves (a purge has no oplog row for Open to replay).
class Replica::Impl::TombstonePurge {
 public:
  TombstonePurge(Replica::Impl* im, uint64_t now_ms, PurgeStats* stats,
                 const std::function<void(const KeyMeta&)>& on_purged)
      : im_(*im),
        now_ms_(now_ms),
        stats_(*stats),
        on_purged_(on_purged),
        watermark_(stats->watermark),
        purged_total_(im->gc.purged()) {}

  // Adds the tombstone of (map, key) at `version` with its queue row
  // `queue_key` (with `expiry_ms` non-zero: the expired live record, whose
  // expiry index entry needs no delete: `queue_key` is empty); commits the
  // batch once it is full.
  Status Add(std::string_view queue_key, const Version& version, std::string_view map,
             std::string_view key, uint64_t expiry_ms = 0);
  // Replaces the expiry rows `row_keys` with rows holding `kept`, in the
  // batch being built.
  void RewriteExpiryRows(const std::vector<std::string>& row_keys, const ExpiryPending& kept);
  // Commits what was added since the last commit.
  Status Commit();

 private:
  struct Purged {
    std::string map, key;
    Version version;
    bool tombstone;
  };
  void Published();

  Replica::Impl& im_;
  const uint64_t now_ms_;
  PurgeStats& stats_;
  const std::function<void(const KeyMeta&)>& on_purged_;
  Version watermark_;
  uint64_t purged_total_;
  std::vector<Purged> purged_;
  std::map<uint32_t, Version> raised_;  // bucket watermarks this batch raises
  std::vector<LeafDelta> deltas_;
  bool rows_rewritten_ = false;  // the batch rewrites expiry rows
  Batch batch_;
};

Status Replica::Impl::TombstonePurge::Add(std::string_view queue_key, const Version& version,
                                          std::string_view map, std::string_view key,
                                          uint64_t expiry_ms) {
  const uint64_t key_hash = KeyHash(map, key);
  const bool tombstone = expiry_ms == 0;
  TIDEMAP_ASSIGN_OR_RETURN(KeyState st, im_.LoadKeyState(key_hash, map, key));
  if (!st.exists || st.meta.tombstone != tombstone || st.meta.version != version ||
      st.meta.expiry_ms != expiry_ms) {
    return Status::Corruption(std::string(tombstone ? "tombstone" : "expiry") + " queue row of " +
                              rows::DescribeKey(map, key) + " at " + version.ToString() +
                              " disagrees with the key-hash index");
  }
  batch_.Delete(rows::RecordKey(map, key));
  batch_.Delete(rows::HashIndexKey(key_hash, map, key));
  if (!queue_key.empty()) batch_.Delete(queue_key);
  const uint32_t bucket = BucketOf(key_hash, im_.tree_shape);
  deltas_.push_back(LeafDelta{bucket, ItemDigest(map, key, version, tombstone), tombstone ? 0 : -1,
                              tombstone ? -1 : 0});
  purged_.push_back(Purged{std::string(map), std::string(key), version, tombstone});
  watermark_ = std::max(watermark_, version);
  auto [r, fresh] = raised_.try_emplace(bucket, Version{});
  if (fresh) r->second = im_.gc.BucketWatermark(bucket);
  r->second = std::max(r->second, version);
  if (purged_.size() >= kPurgeBatchMax) return Commit();
  return Status::Ok();
}

void Replica::Impl::TombstonePurge::RewriteExpiryRows(const std::vector<std::string>& row_keys,
                                                      const ExpiryPending& kept) {
  for (const std::string& row_key : row_keys) batch_.Delete(row_key);
  im_.expiry_index.AppendRows(&batch_, kept);
  rows_rewritten_ = true;
}

Status Replica::Impl::TombstonePurge::Commit() {
  if (purged_.empty() && !rows_rewritten_) return Status::Ok();
  const uint64_t seq = im_.LastSeq();
  batch_.Put(rows::MetaKey(rows::kMetaGcWatermark), rows::EncodeVersion(watermark_));
  batch_.Put(rows::MetaKey(rows::kMetaGcPurged), rows::EncodeU64(purged_total_ + purged_.size()));
  for (const auto& [bucket, v] : raised_) {
    batch_.Put(rows::GcWatermarkKey(bucket), rows::EncodeVersion(v));
  }
  im_.AppendCheckpoint(&batch_, seq, deltas_);
  TIDEMAP_RETURN_IF_ERROR(im_.store->Write(&batch_, /*sync=*/true));
  im_.Checkpointed(deltas_, seq, now_ms_);
  Published();
  return Status::Ok();
}

void Replica::Impl::TombstonePurge::Published() {
  purged_total_ += purged_.size();
  im_.gc.Raise(raised_, watermark_, purged_total_);
  raised_.clear();
  const uint64_t purged_expired = static_cast<uint64_t>(
      std::count_if(purged_.begin(), purged_.end(), [](const Purged& p) { return !p.tombstone; }));
  {
    MutexLock l(&im_.state_mu);
    im_.tombstones -= purged_.size() - purged_expired;
    im_.live -= purged_expired;
  }
  im_.expired_purged.fetch_add(purged_expired, std::memory_order_relaxed);
  stats_.purged += purged_.size();
  stats_.expired_purged += purged_expired;
  stats_.watermark = watermark_;
  if (on_purged_) {
    for (const Purged& p : purged_) on_purged_(KeyMeta{p.map, p.key, p.version, p.tombstone});
  }
  purged_.clear();
  deltas_.clear();
  rows_rewritten_ = false;
  batch_ = Batch();
}

// The design, and why it is safe: docs/tombstone-gc.md. The queue ('g' rows,
// in version order) lists the stored tombstones with their seq, so a purge
// reads only tombstones older than the horizon, never every key.
Result<PurgeStats> Replica::PurgeTombstones(const std::function<void(const KeyMeta&)>& on_purged) {
  Impl& im = *impl_;
  PurgeStats stats;
  stats.watermark = gc_watermark();
  const uint64_t horizon_ms = im.options.tombstone_horizon_ms;
  const uint64_t now_ms = im.options.clock->NowMillis();
  if (horizon_ms == 0 || now_ms <= horizon_ms) return stats;
  const uint64_t cutoff_ms = now_ms - horizon_ms;  // purge tombstones stamped before it

  MutexLock commit(&im.commit_mu);  // no group is half done; writes wait
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t acked_by_all, AckedByAll(*im.oplog));
  Impl::TombstonePurge purge(&im, now_ms, &stats, on_purged);
  // The iterator reads a snapshot; the batches committed meanwhile delete
  // only rows it has passed.
  PrefixIterator queue(*im.store, std::string(1, rows::kGcPrefix));
  for (queue.SeekToFirst(); queue.Valid(); queue.Next()) {
    Version version;
    std::string_view map, key;
    if (!rows::ParseGcQueueKey(queue.key(), &version, &map, &key)) {
      return Status::Corruption("malformed tombstone queue row " + Printable(queue.key()));
    }
    if (version.hlc.physical_ms() >= cutoff_ms) break;  // the rest is younger
    // A map's clear is kept for good: a record older than it may still
    // arrive from a peer, and one row per map is cheap.
    if (key == kClearKey) continue;
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t seq, rows::DecodeU64(queue.value(), "tombstone queue seq"));
    if (seq > acked_by_all) {
      ++stats.unacknowledged;
      continue;
    }
    TIDEMAP_RETURN_IF_ERROR(purge.Add(queue.key(), version, map, key));
  }
  TIDEMAP_RETURN_IF_ERROR(queue.status());
  TIDEMAP_RETURN_IF_ERROR(im.PurgeExpired(&purge, cutoff_ms, acked_by_all, &stats));
  TIDEMAP_RETURN_IF_ERROR(im.CompactExpiryRows(&purge, rows::ExpiryBucketOf(cutoff_ms) + 1));
  TIDEMAP_RETURN_IF_ERROR(purge.Commit());
  return stats;
}

// Expired records are deleted everywhere since their expiry, which stands for
// the tombstone's stamp: one is purged once its expiry is older than the
// horizon and every known peer acknowledged its seq. The expiry index lists
// them by expiry bucket without a full scan; the rows of each bucket visited
// are rewritten without the entries purged or no longer valid.
Status Replica::Impl::PurgeExpired(TombstonePurge* purge, uint64_t cutoff_ms, uint64_t acked_by_all,
                                   PurgeStats* stats) {
  if (cutoff_ms == 0) return Status::Ok();
  return expiry_index.ForEachBucket(
      *store, 0, rows::ExpiryBucketOf(cutoff_ms - 1), [&](const ExpiryBucket& b) -> Result<bool> {
        ExpiryPending kept;  // the stored entries that stay
        bool changed = false;
        // Decides one entry; `stored`: it is in one of the bucket's rows.
        const auto decide = [&](const rows::ExpiryEntry& e, bool stored) -> Status {
          TIDEMAP_ASSIGN_OR_RETURN(const bool valid, ExpiryIndex::Valid(*store, e));
          const bool due = valid && e.expiry_ms < cutoff_ms;
          if (due && e.seq > acked_by_all) ++stats->unacknowledged;
          if (due && e.seq <= acked_by_all) {
            TIDEMAP_RETURN_IF_ERROR(purge->Add({}, e.version, e.map, e.key, e.expiry_ms));
          } else if (valid && stored) {
            kept.Add(rows::RefOf(e));
            return Status::Ok();
          }
          changed = changed || stored;
          return Status::Ok();
        };
        for (const rows::ExpiryEntry& e : b.stored) TIDEMAP_RETURN_IF_ERROR(decide(e, true));
        for (const rows::ExpiryEntry& e : b.pending) {
          if (std::binary_search(b.stored.begin(), b.stored.end(), e, rows::ExpiryEntryLess)) {
            continue;
          }
          TIDEMAP_RETURN_IF_ERROR(decide(e, false));
        }
        if (changed) purge->RewriteExpiryRows(b.row_keys, kept);
        return true;
      });
}

// The entries of overwritten or deleted records stay in their rows until
// their bucket is purged, which is the TTL plus the horizon away. Each purge
// also checks up to kCompactEntriesMax entries of later buckets, from where
// the last one stopped (back to `first_bucket` at the end), and rewrites a
// bucket holding invalid entries with its valid ones only.
Status Replica::Impl::CompactExpiryRows(TombstonePurge* purge, uint64_t first_bucket) {
  const uint64_t from = std::max(first_bucket, expiry_compact_from);
  size_t checked = 0;
  uint64_t next_from = first_bucket;  // when the end is reached
  TIDEMAP_RETURN_IF_ERROR(expiry_index.ForEachBucket(
      *store, from, UINT64_MAX - 1, [&](const ExpiryBucket& b) -> Result<bool> {
        if (checked >= kCompactEntriesMax) {
          next_from = b.bucket;
          return false;
        }
        ExpiryPending kept;
        for (const rows::ExpiryEntry& e : b.stored) {
          TIDEMAP_ASSIGN_OR_RETURN(const bool valid, ExpiryIndex::Valid(*store, e));
          if (valid) kept.Add(rows::RefOf(e));
        }
        checked += b.stored.size();
        if (kept.size() < b.stored.size()) purge->RewriteExpiryRows(b.row_keys, kept);
        return true;
      }));
  expiry_compact_from = next_from;
  return Status::Ok();
}

}  // namespace tidemap
