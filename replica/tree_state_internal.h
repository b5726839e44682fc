// The tree state: the Merkle tree over every stored key's metadata, the live
// and tombstone counts per bucket, and their persistence.
//
// Persistence: leaf digests and counts are stored a page of leaves to a row
// (storage/rows.h). They are not rewritten by every commit: a checkpoint
// writes the page of every leaf changed since the last one ("dirty" pages),
// and the meta state row with the seq it covers, inside the batch of a group
// commit (when due), of a purge, or of its own. Every record change commits
// with an oplog row, so after a crash the buckets named by the oplog entries
// past the checkpoint are recomputed from their key-hash index rows
// (ReplayOplogTail): the tree is exact at open with no full rebuild.
// RebuildFromRecords computes the whole tree and counts from the records
// (for Scrub, and to repair a damaged tree).
//
// Thread-safety: every method may be called from any thread; all state is
// guarded by mu_. Changes (Apply*, Checkpoint) must be ordered with the
// commits they describe: the replica makes them under its commit_mu.
#ifndef TIDEMAP_REPLICA_TREE_STATE_INTERNAL_H_
#define TIDEMAP_REPLICA_TREE_STATE_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/base/hash.h>
#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// One op's (or a group's) change to one Merkle leaf and its counts.
struct LeafDelta {
  uint32_t bucket = 0;
  Digest128 digest;
  int32_t live = 0;
  int32_t tombstones = 0;
};

// A tree and per-bucket counts computed from every record.
struct TreeRebuild {
  MerkleTree tree;
  std::vector<uint32_t> live, tombs;  // per bucket
  uint64_t records = 0;               // tombstones included
};

// What ReplayOplogTail did.
struct ReplayStats {
  uint64_t last_seq = 0;  // the last seq of the oplog (the checkpoint's when none follows)
  uint64_t entries = 0;   // oplog entries after the checkpoint
  uint64_t buckets = 0;   // buckets recomputed for them
};

class TreeState {
 public:
  TreeState(const TreeShape& shape, uint64_t checkpoint_interval_ms, uint64_t checkpoint_rows_max);

  // ---- open ----
  // Loads the leaves and counts as of the checkpoint covering
  // `checkpoint_seq` (the meta state row); inner nodes stay stale until
  // ReplayOplogTail.
  Status Load(const Store& store, uint64_t checkpoint_seq, uint64_t now_ms);
  // Recomputes the buckets of the oplog entries after the checkpoint and
  // then every inner node. REQUIRES: Load succeeded.
  Result<ReplayStats> ReplayOplogTail(const Store& store, const Oplog& oplog);
  // The whole tree and counts from the records (reads every record). Calls
  // `visit` (may be empty) for each record too; its error ends the rebuild.
  static Result<TreeRebuild> RebuildFromRecords(
      const Store& store, const TreeShape& shape,
      const std::function<Status(const KeyMeta&, uint64_t key_hash)>& visit);

  // ---- reads ----
  Digest128 Root() const TIDEMAP_EXCLUDES(mu_);
  uint32_t leaf_count() const TIDEMAP_EXCLUDES(mu_);
  // Stored keys, live and tombstones, summed over the buckets.
  std::pair<uint64_t, uint64_t> Totals() const TIDEMAP_EXCLUDES(mu_);
  // The key-hash range of each bucket; InvalidArgument for one out of range.
  Status BucketRanges(const std::vector<uint32_t>& buckets,
                      std::vector<std::pair<uint64_t, uint64_t>>* ranges) const
      TIDEMAP_EXCLUDES(mu_);
  // See Replica::MerkleChildDigests.
  Status ChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                      std::vector<uint64_t>* out) const TIDEMAP_EXCLUDES(mu_);
  // Compares `rebuilt` with the leaf rows on disk and the counts in memory:
  // sets report's leaf_mismatches and its three roots.
  Status CompareWithRebuild(const Store& store, const TreeRebuild& rebuilt,
                            ScrubReport* report) const TIDEMAP_EXCLUDES(mu_);

  // ---- changes (under the replica's commit_mu) ----
  // Whether the group that brings the oplog to `seq` at `now_ms` must carry
  // a checkpoint.
  bool CheckpointDue(uint64_t seq, uint64_t now_ms) const TIDEMAP_EXCLUDES(mu_);
  // Whether a checkpoint covering `seq` would write anything.
  bool NeedsCheckpoint(uint64_t seq) const TIDEMAP_EXCLUDES(mu_);
  // Puts a checkpoint covering `seq` into `batch`: the page row of every
  // dirty page and of every page with a bucket in `pending` (changes this
  // batch commits, not yet applied), and the state row.
  void AppendCheckpoint(Batch* batch, uint64_t seq, std::span<const LeafDelta> pending) const
      TIDEMAP_EXCLUDES(mu_);
  // Applies committed changes whose batch carried no checkpoint: their pages
  // are dirty until the next one.
  void Apply(std::span<const LeafDelta> deltas) TIDEMAP_EXCLUDES(mu_);
  // Applies committed changes whose batch carried a checkpoint covering
  // `seq` (AppendCheckpoint with them as `pending`): nothing is dirty after.
  void ApplyCheckpointed(std::span<const LeafDelta> deltas, uint64_t seq, uint64_t now_ms)
      TIDEMAP_EXCLUDES(mu_);
  // Replaces the tree and counts with `rebuilt` (from RebuildFromRecords);
  // every page is dirty until the next checkpoint.
  void Reset(TreeRebuild rebuilt) TIDEMAP_EXCLUDES(mu_);
  // Writes a checkpoint covering `seq` of its own when anything changed
  // (dated by `clock` once written).
  Status Checkpoint(Store* store, uint64_t seq, bool sync, Clock* clock) TIDEMAP_EXCLUDES(mu_);
  uint64_t checkpoint_seq() const TIDEMAP_EXCLUDES(mu_);

 private:
  void ApplyLocked(std::span<const LeafDelta> deltas) TIDEMAP_REQUIRES(mu_);
  void MarkDirty(uint32_t bucket) TIDEMAP_REQUIRES(mu_);
  Status RecomputeBucket(StoreIterator* it, uint32_t bucket) TIDEMAP_REQUIRES(mu_);

  const TreeShape shape_;
  const uint64_t checkpoint_interval_ms_;
  const uint64_t checkpoint_rows_max_;
  mutable Mutex mu_;
  MerkleTree tree_ TIDEMAP_GUARDED_BY(mu_);
  // Live records and tombstones per bucket (what leaf rows persist).
  std::vector<uint32_t> live_ TIDEMAP_GUARDED_BY(mu_);
  std::vector<uint32_t> tombs_ TIDEMAP_GUARDED_BY(mu_);
  // Pages (see rows::kLeavesPerPage) with a leaf changed since the last
  // checkpoint: the persisted page rows lag memory exactly there.
  // `dirty_flag_` has one byte per page.
  std::vector<uint8_t> dirty_flag_ TIDEMAP_GUARDED_BY(mu_);
  std::vector<uint32_t> dirty_ TIDEMAP_GUARDED_BY(mu_);
  // The last checkpoint: every leaf row and count is exact as of this seq.
  uint64_t checkpoint_seq_ TIDEMAP_GUARDED_BY(mu_) = 0;
  uint64_t checkpoint_ms_ TIDEMAP_GUARDED_BY(mu_) = 0;  // clock time it was written (or the open)
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_TREE_STATE_INTERNAL_H_
