#include <tidemap/replica/merge_internal.h>

#include <algorithm>
#include <string>

#include <tidemap/base/check.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/limits_internal.h>

namespace tidemap {

namespace {

bool DigestLess(const Digest128& a, const Digest128& b) {
  return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
}

// Sizes and origin of each record, before anything else; "from peer <name>"
// is put in front of the error.
Status CheckRemoteRecords(const Limits& limits, std::span<const KeyedRecord> records,
                          const std::string& context, size_t* bytes, Timestamp* newest) {
  for (const KeyedRecord& r : records) {
    // A map's clear is its tombstone at the reserved empty key.
    Status s = r.key == kClearKey && r.tombstone ? CheckMapName(limits, r.map)
                                                 : CheckSizes(limits, r.map, r.key, r.value);
    if (s.ok() && r.tombstone && !r.value.empty()) {
      s = Status::InvalidArgument("tombstone for " + rows::DescribeKey(r.map, r.key) +
                                  " carries a value");
    }
    if (s.ok() && r.tombstone && r.expiry_ms != 0) {
      s = Status::InvalidArgument("tombstone for " + rows::DescribeKey(r.map, r.key) +
                                  " carries an expiry");
    }
    if (s.ok() && r.version.origin == 0) {
      s = Status::InvalidArgument("record " + rows::DescribeKey(r.map, r.key) +
                                  " has origin node 0");
    }
    if (!s.ok()) return s.WithContext(context);
    *newest = std::max(*newest, r.version.hlc);
    *bytes += r.map.size() + r.key.size() + r.value.size();
  }
  return Status::Ok();
}

}  // namespace

Digest128 ContentDigest(bool tombstone, std::string_view value) {
  return Hash128(value, tombstone ? 1 : 0);
}

MergeDecision DecideMerge(const KeyState& held, const IncomingVersion& incoming,
                          const Version& bucket_watermark, StaleRecords stale) {
  if (held.exists) {
    if (incoming.version != held.meta.version) {
      return incoming.version > held.meta.version ? MergeDecision::kStore : MergeDecision::kIgnore;
    }
    TIDEMAP_CHECK(held.content.has_value());
    return DigestLess(*held.content, incoming.content) ? MergeDecision::kStore
                                                       : MergeDecision::kIgnore;
  }
  if (incoming.version > bucket_watermark) return MergeDecision::kStore;
  // Not held, at or below the watermark: maybe an old version of a purged key.
  if (incoming.tombstone || incoming.expired) return MergeDecision::kDropTombstone;
  return stale == StaleRecords::kDrop ? MergeDecision::kDropStale : MergeDecision::kRedelete;
}

Result<ApplyResult> Replica::ApplyRemote(std::span<const KeyedRecord> records, uint64_t peer,
                                         StaleRecords stale) {
  // Hlc::CheckOffset says "peer <name>: clock ... ahead"; other errors get
  // "from peer <name>" in front.
  const std::string peer_name = peer == 0 ? "(unknown)" : NodeIdToString(peer);
  const std::string context = "from peer " + peer_name;
  size_t bytes = 0;
  Timestamp newest;
  TIDEMAP_RETURN_IF_ERROR(
      CheckRemoteRecords(impl_->options.limits, records, context, &bytes, &newest));
  if (records.empty()) return ApplyResult{};
  // The newest timestamp stands for them all: when it is within
  // max_clock_offset, every one is.
  TIDEMAP_RETURN_IF_ERROR(impl_->hlc->CheckOffset(newest, peer_name));
  TIDEMAP_RETURN_IF_ERROR(
      CheckBatch(impl_->options.limits, records.size(), bytes).WithContext(context));
  // Merge the timestamps into our clock first, so every later local write is
  // stamped above what we just learned (the HLC receive rule). Merging is a
  // max, so merging the newest is merging them all.
  TIDEMAP_RETURN_IF_ERROR(impl_->hlc->Update(newest, peer_name));
  Writer w(&impl_->queue);
  w.remote = true;
  w.peer = peer;
  w.stale = stale;
  w.remote_records = records;
  w.bytes = bytes;
  TIDEMAP_RETURN_IF_ERROR(impl_->Commit(&w));
  impl_->remote_applied.fetch_add(w.apply.applied, std::memory_order_relaxed);
  impl_->below_watermark_tombstones.fetch_add(w.apply.below_watermark_tombstones,
                                              std::memory_order_relaxed);
  impl_->stale_dropped.fetch_add(w.apply.stale, std::memory_order_relaxed);
  return w.apply;
}

}  // namespace tidemap
