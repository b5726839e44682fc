// Tombstone GC state: the GC watermarks and the purge count.
//
// Design: docs/tombstone-gc.md. A purge (Replica::PurgeTombstones,
// replica/tombstone_gc.cc) deletes tombstones every known peer acknowledged
// that are older than the horizon, and raises the GC watermark of each
// purged key's Merkle bucket to the greatest version purged there. A remote
// record for a key not held at or below its bucket's watermark is never
// stored as it is (DecideMerge, replica/merge_internal.h).
//
// Persistence: the greatest watermark over every bucket and the purge count
// are meta rows; each bucket that ever purged has a 'w' row. All of them
// commit in the batch of the purge that changes them.
//
// Thread-safety: every method may be called from any thread; the state is
// guarded by mu_. Raise is called only by a purge, under the replica's commit_mu.
#ifndef TIDEMAP_REPLICA_TOMBSTONE_GC_INTERNAL_H_
#define TIDEMAP_REPLICA_TOMBSTONE_GC_INTERNAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

class GcState {
 public:
  // Loads the overall watermark and the purge count (meta rows).
  Status LoadMeta(const Store& store) TIDEMAP_EXCLUDES(mu_);
  // Loads the bucket watermarks of a tree of `leaf_count` buckets; `path`
  // names the database in messages.
  Status LoadBuckets(const Store& store, const std::string& path, uint32_t leaf_count)
      TIDEMAP_EXCLUDES(mu_);
  // The greatest purged version over every bucket (zero when none).
  Version watermark() const TIDEMAP_EXCLUDES(mu_);
  // Tombstones purged since the database was created.
  uint64_t purged() const TIDEMAP_EXCLUDES(mu_);
  // The greatest purged version of `bucket`. REQUIRES: bucket < leaf_count.
  Version BucketWatermark(uint32_t bucket) const TIDEMAP_EXCLUDES(mu_);
  // After a purge batch committed: the bucket watermarks it raised, the new
  // overall watermark and purge count.
  void Raise(const std::map<uint32_t, Version>& buckets, const Version& watermark, uint64_t purged)
      TIDEMAP_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  Version watermark_ TIDEMAP_GUARDED_BY(mu_);
  uint64_t purged_ TIDEMAP_GUARDED_BY(mu_) = 0;
  std::vector<Version> bucket_watermark_ TIDEMAP_GUARDED_BY(mu_);  // one per bucket
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_TOMBSTONE_GC_INTERNAL_H_
