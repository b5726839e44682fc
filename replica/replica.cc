// The Replica's entry points that are not a room of their own: local
// writes, stats and accessors. Where the rest lives: replica/impl_internal.h.
#include <tidemap/replica/replica.h>

#include <string>
#include <utility>
#include <vector>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/limits_internal.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

std::string_view ChangeKindName(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kCreate:
      return "create";
    case ChangeKind::kUpdate:
      return "update";
    case ChangeKind::kDelete:
      return "delete";
    case ChangeKind::kExpire:
      return "expire";
    case ChangeKind::kClear:
      return "clear";
    case ChangeKind::kQuota:
      return "quota";
  }
  return "unknown";
}

void WriteBatch::Put(std::string_view map, std::string_view key, std::string_view value) {
  Add(map, key, value, /*tombstone=*/false, /*ttl_ms=*/0);
}

void WriteBatch::Put(std::string_view map, std::string_view key, std::string_view value,
                     const PutOptions& options) {
  Add(map, key, value, /*tombstone=*/false, options.ttl_ms);
}

void WriteBatch::Delete(std::string_view map, std::string_view key) {
  Add(map, key, {}, /*tombstone=*/true, /*ttl_ms=*/0);
}

void WriteBatch::Add(std::string_view map, std::string_view key, std::string_view value,
                     bool tombstone, uint64_t ttl_ms) {
  ops_.push_back(OpRef{bytes_.size(), map.size(), key.size(), value.size(), tombstone, ttl_ms});
  bytes_.append(map).append(key).append(value);
}

WriteBatch::Op WriteBatch::op(size_t i) const {
  const OpRef& r = ops_[i];
  const std::string_view all(bytes_);
  return Op{all.substr(r.offset, r.map_size), all.substr(r.offset + r.map_size, r.key_size),
            all.substr(r.offset + r.map_size + r.key_size, r.value_size), r.tombstone, r.ttl_ms};
}

uint64_t Replica::Impl::LastSeq() const {
  MutexLock l(&state_mu);
  return last_seq;
}

CommittedCounts Replica::Impl::Counts() const {
  MutexLock l(&state_mu);
  return CommittedCounts{last_seq, live, tombstones};
}

Result<Version> Replica::Put(std::string_view map, std::string_view key, std::string_view value) {
  WriteBatch b;
  b.Put(map, key, value);
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> v, Write(b));
  return v.front();
}

Result<Version> Replica::Put(std::string_view map, std::string_view key, std::string_view value,
                             const PutOptions& options) {
  WriteBatch b;
  b.Put(map, key, value, options);
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> v, Write(b));
  return v.front();
}

Result<Version> Replica::Delete(std::string_view map, std::string_view key) {
  WriteBatch b;
  b.Delete(map, key);
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> v, Write(b));
  return v.front();
}

Result<std::vector<Version>> Replica::Write(const WriteBatch& batch) {
  const Limits& limits = impl_->options.limits;
  size_t bytes = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const WriteBatch::Op op = batch.op(i);
    TIDEMAP_RETURN_IF_ERROR(CheckSizes(limits, op.map, op.key, op.value));
    if (op.ttl_ms > kTtlMaxMs) {
      return Status::InvalidArgument("ttl of " + std::to_string(op.ttl_ms) + " ms for " +
                                     rows::DescribeKey(op.map, op.key) + " is over the limit of " +
                                     std::to_string(kTtlMaxMs) + " ms");
    }
    bytes += op.map.size() + op.key.size() + op.value.size();
  }
  if (batch.size() == 0) return std::vector<Version>{};
  TIDEMAP_RETURN_IF_ERROR(CheckBatch(limits, batch.size(), bytes));
  Writer w(&impl_->queue);
  w.local = &batch;
  w.bytes = bytes;
  TIDEMAP_RETURN_IF_ERROR(impl_->Commit(&w));
  impl_->local_writes.fetch_add(w.versions.size(), std::memory_order_relaxed);
  return std::move(w.versions);
}

uint64_t Replica::LastSeq() const { return impl_->LastSeq(); }

Digest128 Replica::MerkleRoot() const { return impl_->tree.Root(); }

void Replica::Compact() { impl_->store->CompactRange("", std::string(1, '\xff')); }

Result<PruneStats> Replica::PruneOplog(uint64_t hold_after) {
  // Open() replays the oplog rows after the last checkpoint, so none of them
  // may go: checkpoint first, then prune no further than it covers.
  uint64_t covered;
  {
    MutexLock commit(&impl_->commit_mu);
    TIDEMAP_RETURN_IF_ERROR(impl_->Checkpoint(impl_->LastSeq(), /*sync=*/true));
    covered = impl_->tree.checkpoint_seq();
  }
  return impl_->oplog->Prune(covered, impl_->options.retention, hold_after);
}

uint64_t Replica::KeyCount() const {
  const CommittedCounts c = impl_->Counts();
  return c.live + c.tombs;
}

Result<ReplicaStats> Replica::Stats() const {
  ReplicaStats s;
  s.node_id = impl_->options.node_id;
  const CommittedCounts counts = impl_->Counts();
  s.keys = counts.live;
  s.tombstones = counts.tombs;
  s.oplog_last_seq = counts.seq;
  TIDEMAP_ASSIGN_OR_RETURN(s.oplog_first_seq, impl_->oplog->FirstSeq());
  TIDEMAP_ASSIGN_OR_RETURN(s.oplog_pruned_through, impl_->oplog->PrunedThrough());
  s.hlc_last = impl_->hlc->Last();
  s.recovered_oplog_rows = impl_->recovered_rows.load(std::memory_order_relaxed);
  s.recovered_buckets = impl_->recovered_buckets.load(std::memory_order_relaxed);
  s.local_writes = impl_->local_writes.load(std::memory_order_relaxed);
  s.remote_applied = impl_->remote_applied.load(std::memory_order_relaxed);
  s.reads = impl_->reads.load(std::memory_order_relaxed);
  s.oplog_bytes = impl_->store->ApproximateBytes(Oplog::RowKey(0), Oplog::RowKey(UINT64_MAX));
  s.disk_bytes = impl_->store->DiskBytes();
  s.usage = impl_->quota.usage();
  s.incarnation = impl_->incarnation;
  s.gc_watermark = impl_->gc.watermark();
  s.tombstones_purged = impl_->gc.purged();
  s.below_watermark_tombstones = impl_->below_watermark_tombstones.load(std::memory_order_relaxed);
  s.stale_records_dropped = impl_->stale_dropped.load(std::memory_order_relaxed);
  s.expired = impl_->expired.load(std::memory_order_relaxed);
  s.expired_purged = impl_->expired_purged.load(std::memory_order_relaxed);
  s.cleared_maps = impl_->clears.maps();
  s.clear_pending_maps = impl_->clears.pending();
  s.clear_removed = impl_->clear_removed.load(std::memory_order_relaxed);
  TIDEMAP_ASSIGN_OR_RETURN(
      s.next_expiry_ms,
      impl_->NextExpiry(impl_->expire_notified_cache.load(std::memory_order_relaxed)));
  s.storage = storage_health();
  return s;
}

Version Replica::gc_watermark() const { return impl_->gc.watermark(); }

Version Replica::gc_watermark(uint64_t key_hash) const {
  return impl_->gc.BucketWatermark(BucketOf(key_hash, impl_->tree_shape));
}

uint64_t Replica::incarnation() const { return impl_->incarnation; }

uint64_t Replica::node_id() const { return impl_->options.node_id; }
Timestamp Replica::LastTimestamp() const { return impl_->hlc->Last(); }
const Limits& Replica::limits() const { return impl_->options.limits; }

Result<std::vector<OplogEntry>> Replica::ReadOplog(uint64_t after_seq, size_t entries_max) const {
  return impl_->oplog->ReadAfter(after_seq, entries_max);
}
Result<uint64_t> Replica::OplogPrunedThrough() const { return impl_->oplog->PrunedThrough(); }
Status Replica::AddPeer(uint64_t peer) { return impl_->oplog->AddPeer(peer); }
Status Replica::RemovePeer(uint64_t peer) { return impl_->oplog->RemovePeer(peer); }
Result<std::map<uint64_t, uint64_t>> Replica::PeerAcks() const { return impl_->oplog->PeerAcks(); }

Oplog& ReplicaTestAccess::oplog(Replica& replica) { return *replica.impl_->oplog; }
Hlc& ReplicaTestAccess::hlc(Replica& replica) { return *replica.impl_->hlc; }

}  // namespace tidemap
