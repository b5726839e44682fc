// The last-writer-wins merge rule: what happens when a remote version of a
// key arrives.
//
// Path of a remote record: Replica::ApplyRemote (replica/merge.cc) checks its
// sizes and clock offset and queues it in the commit pipeline
// (replica/commit_queue_internal.h); the group's leader reads the key's held
// state and asks DecideMerge (below) what to do
// (Replica::Impl::MergeRemoteOp, replica/group_commit.cc), then stores the
// winners with a fresh oplog seq.
//
// DecideMerge is a pure function of (held state, incoming version, the GC
// watermark of the key's Merkle bucket): no I/O, no locks, no clock.
#ifndef TIDEMAP_REPLICA_MERGE_INTERNAL_H_
#define TIDEMAP_REPLICA_MERGE_INTERNAL_H_

#include <optional>
#include <string_view>

#include <tidemap/base/hash.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

// What is held for a key (as of everything committed or queued before).
struct KeyState {
  bool exists = false;
  rows::RecordMeta meta;  // when exists
  // Digest of the held (tombstone, value) (ContentDigest); loaded only when a
  // tie needs it.
  std::optional<Digest128> content;
};

// The digest the tie rule compares: of (tombstone, value).
Digest128 ContentDigest(bool tombstone, std::string_view value);

// A version of a key received from a peer.
struct IncomingVersion {
  Version version;
  bool tombstone = false;
  // ContentDigest(tombstone, value); read only on a tie (NeedsHeldContent).
  Digest128 content;
  // A live version whose expiry passed (set by the caller, which has the
  // clock, for a key not held at or below the watermark): deleted since its
  // expiry, so it counts as a tombstone there.
  bool expired = false;
};

enum class MergeDecision {
  kStore,   // the incoming version wins: store it
  kIgnore,  // the held version is newer, or equal and wins the tie
  // The key is not held and the incoming version is at or below the bucket's
  // GC watermark: it may be an old version of a key whose tombstone was
  // purged here (docs/tombstone-gc.md). Never stored as it is:
  kDropTombstone,  // a tombstone or an expired record: the purge already stands for it
  kRedelete,       // a live version: store a tombstone at the watermark instead
  kDropStale,      // a live version, with StaleRecords::kDrop: store nothing
};

// Whether DecideMerge needs held.content: the held version equals the
// incoming one (the tie rule).
inline bool NeedsHeldContent(const KeyState& held, const Version& incoming) {
  return held.exists && held.meta.version == incoming;
}

// The LWW rule. A held key: the greater (hlc, origin) wins; an equal pair
// (which honest peers never produce) is decided by the greater content
// digest, so every replica picks the same; equal digests are a duplicate
// (kIgnore). A key not held: stored unless at or below `bucket_watermark`.
// REQUIRES: held.content set when NeedsHeldContent(held, incoming.version).
MergeDecision DecideMerge(const KeyState& held, const IncomingVersion& incoming,
                          const Version& bucket_watermark, StaleRecords stale);

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_MERGE_INTERNAL_H_
