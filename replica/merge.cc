#include "replica/merge_internal.h"

#include "base/check.h"

namespace tidemap {

namespace {

bool DigestLess(const Digest128& a, const Digest128& b) {
  return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
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
  if (incoming.tombstone) return MergeDecision::kDropTombstone;
  return stale == StaleRecords::kDrop ? MergeDecision::kDropStale : MergeDecision::kRedelete;
}

}  // namespace tidemap
