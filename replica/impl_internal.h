// Replica::Impl: the parts of one replica and who may touch what.
//
// The parts live in their own files, each with its contract:
//   commit_queue_internal.h   writers, group leadership, the waits
//   group_commit.cc           a leader builds and commits its group (ProcessGroup)
//   merge_internal.h          the LWW rule for remote records (and ApplyRemote)
//   tree_state_internal.h     Merkle tree, bucket counts, checkpoints, replay
//   expiry_index_internal.h   the records that expire, by expiry (flushed with
//                             the tree's checkpoints: checkpoint.cc)
//   tombstone_gc_internal.h   GC watermarks (and PurgeTombstones)
//   clear_state_internal.h    map clears (clear.cc: ClearMap, RemoveClearedRecords)
//   key_filter_internal.h     the Bloom filter of stored keys and its builder
//   readers_internal.h        scans shared by the readers (reads.cc)
//   subscriptions_internal.h  change events
//   limits_internal.h         size checks before anything is queued
//   scrub.cc                  Scrub: the stored state against a rebuild
//   open.cc                   Replica::Open's steps and the clean close
//   storage_health.cc         refusing writes after a storage error, and healing
//   quota_internal.h          the storage quota's usage and state (quota.cc)
//   lost_writes.cc            noticing writes a peer holds that this database lost
//   replica.cc                local writes, stats, accessors
//
// Locking, outermost first: commit_mu (the group being committed; also taken
// by Scrub, PruneOplog, PurgeTombstones, RemoveClearedRecords and the close)
// before the parts' own mutexes (TreeState, ExpiryIndex, GcState,
// ClearState, state_mu, Subscriptions), which are leaves: none is held
// while taking another. The CommitQueue's mutex is never held with any
// other.
#ifndef TIDEMAP_REPLICA_IMPL_INTERNAL_H_
#define TIDEMAP_REPLICA_IMPL_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/replica/clear_state_internal.h>
#include <tidemap/replica/commit_queue_internal.h>
#include <tidemap/replica/expiry_index_internal.h>
#include <tidemap/replica/key_filter_internal.h>
#include <tidemap/replica/merge_internal.h>
#include <tidemap/replica/quota_internal.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/subscriptions_internal.h>
#include <tidemap/replica/tombstone_gc_internal.h>
#include <tidemap/replica/tree_state_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// A key within one group: views into the writers' ops (alive while the group
// is processed), with its KeyHash.
struct GroupKey {
  std::string_view map, key;
  uint64_t hash = 0;
  bool operator==(const GroupKey& o) const {
    return hash == o.hash && map == o.map && key == o.key;
  }
};
struct GroupKeyHash {
  size_t operator()(const GroupKey& k) const { return static_cast<size_t>(k.hash); }
};

// What a group commits, built op by op.
struct GroupBuild {
  Batch batch;
  // Keys changed earlier in the group, latest state (kept only when the
  // group has more than one op: a batch may touch a key twice).
  std::unordered_map<GroupKey, KeyState, GroupKeyHash> keys;
  std::vector<PendingEvent> events;
  std::vector<LeafDelta> leaf_deltas;  // per op: its Merkle bucket's change
  // One per op that won, in seq order: consecutive seqs, packed into oplog
  // rows once the group is built.
  std::vector<OplogEntryRef> oplog_entries;  // views into the writers' ops
  // The clears the group stores, in op order (maps view the writers' ops).
  std::vector<std::pair<std::string_view, Version>> clears;
  // The expiry index entries of the TTL'd records the group stores.
  ExpiryPending expiries;
  uint64_t seq = 0, live = 0, tombs = 0;
};

// Whether a storage error is the file system's ENOSPC (quota.cc).
bool IsNoSpace(const Status& s);

// Counts of the committed state, as of the last group.
struct CommittedCounts {
  uint64_t seq = 0, live = 0, tombs = 0;
};

struct Replica::Impl {
  explicit Impl(ReplicaOptions opts);
  ~Impl();

  // Fixed once Open returns.
  ReplicaOptions options;
  const TreeShape tree_shape;
  std::unique_ptr<Store> store;
  std::unique_ptr<Oplog> oplog;
  std::unique_ptr<Hlc> hlc;
  // Drawn at creation; renewed when the replica finds it lost writes a peer
  // holds (lost_writes.cc).
  std::atomic<uint64_t> incarnation{0};
  uint64_t open_last_seq = 0;  // LastSeq() when Open returned
  // What Open (or the reload after a reopen) replayed from the oplog tail.
  std::atomic<uint64_t> recovered_rows{0};
  std::atomic<uint64_t> recovered_buckets{0};

  CommitQueue queue;
  // Held by the pipeline leader while it processes and commits a group, and
  // by whatever needs a moment when no commit is half done.
  Mutex commit_mu;
  uint64_t reserved_bound_ms TIDEMAP_GUARDED_BY(commit_mu) = 0;  // the persisted HLC bound
  uint64_t writes_since_open TIDEMAP_GUARDED_BY(commit_mu) = 0;  // ops, not writers
  // Declared after `store`, so it stops its builder before the store goes.
  KeyFilterKeeper key_filter TIDEMAP_GUARDED_BY(commit_mu);
  // Reused by every group: encoding buffers, the group being built, and the
  // writers left in it.
  std::string row_key_scratch TIDEMAP_GUARDED_BY(commit_mu);
  std::string value_scratch TIDEMAP_GUARDED_BY(commit_mu);
  GroupBuild group_build TIDEMAP_GUARDED_BY(commit_mu);
  std::vector<Writer*> group_left TIDEMAP_GUARDED_BY(commit_mu);
  // Storage errors: when the next reopen may be tried, and whether the
  // derived state must be loaded again before a write (a reopen succeeded
  // but the load after it failed).
  uint64_t storage_retry_at_ms TIDEMAP_GUARDED_BY(commit_mu) = 0;
  bool derived_stale TIDEMAP_GUARDED_BY(commit_mu) = false;
  std::atomic<uint64_t> storage_write_errors{0};  // commits that failed
  std::atomic<uint64_t> storage_recoveries{0};    // reopens that brought writes back
  // Lost writes (lost_writes.cc): the peers that sent a Hello since open.
  Mutex lost_writes_mu;
  std::set<uint64_t> peers_heard TIDEMAP_GUARDED_BY(lost_writes_mu);
  std::atomic<uint64_t> lost_writes_detected{0};
  mutable Mutex storage_mu;
  std::string last_storage_error TIDEMAP_GUARDED_BY(storage_mu);
  std::string last_lost_writes TIDEMAP_GUARDED_BY(storage_mu);

  StorageQuota quota;  // from options.storage_quota_bytes; measured at Open

  TreeState tree;
  ExpiryIndex expiry_index;
  GcState gc;
  ClearState clears;
  std::atomic<uint64_t> clear_removed{0};  // records RemoveClearedRecords deleted since open
  // Written only by a leader after its commit (or a purge), read by Stats().
  mutable Mutex state_mu;
  uint64_t last_seq TIDEMAP_GUARDED_BY(state_mu) = 0;
  uint64_t live TIDEMAP_GUARDED_BY(state_mu) = 0;
  uint64_t tombstones TIDEMAP_GUARDED_BY(state_mu) = 0;
  Subscriptions subscriptions;

  // Counters for Stats() (metrics only: relaxed, no ordering with anything).
  std::atomic<uint64_t> local_writes{0};
  std::atomic<uint64_t> remote_applied{0};
  mutable std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> below_watermark_tombstones{0};
  std::atomic<uint64_t> stale_dropped{0};

  uint64_t LastSeq() const TIDEMAP_EXCLUDES(state_mu);
  CommittedCounts Counts() const TIDEMAP_EXCLUDES(state_mu);

  // ---- the write path (group_commit.cc) ----
  // Queues `w` and returns its status once its group committed.
  Status Commit(Writer* w) TIDEMAP_EXCLUDES(commit_mu);
  void ProcessGroup(const std::vector<Writer*>& group) TIDEMAP_REQUIRES(commit_mu);
  // Builds group_build from the writers of `group` that do not fail (left in
  // group_left); those that do get their error.
  void BuildGroup(const std::vector<Writer*>& group, const CommittedCounts& start,
                  const Version& watermark, bool track_keys) TIDEMAP_REQUIRES(commit_mu);
  // Appends the ops of `w` that win to `g`, and sets w's versions and apply
  // result. On error `g` holds part of w's ops and must be built again.
  Status AppendWriter(Writer* w, const Version& watermark, bool track_keys, GroupBuild* g)
      TIDEMAP_REQUIRES(commit_mu);
  // The merge of one remote op with the held state `*old`: false when it is
  // not stored; a restored delete rewrites `*op` and sets `*redelete`.
  Result<bool> MergeRemoteOp(const Writer& w, uint64_t key_hash, const Version& watermark,
                             KeyState* old, WriterOp* op, bool* redelete, ApplyResult* apply)
      TIDEMAP_REQUIRES(commit_mu);
  // Appends the rows of one winning op to `g`; returns its seq.
  uint64_t AppendChange(const WriterOp& op, uint64_t key_hash, const KeyState& old, uint64_t via,
                        bool remote, GroupBuild* g) TIDEMAP_REQUIRES(commit_mu);
  // Puts the HLC bound ahead of the group's timestamps into `batch` when they
  // crossed it; true then (such a commit is synced). `*new_bound` is the bound after.
  bool ReserveHlcBound(Batch* batch, uint64_t* new_bound) TIDEMAP_REQUIRES(commit_mu);
  // Commits the group's batch; feeds a synced commit's duration to the queue.
  Status WriteGroup(Batch* batch, size_t ops, bool sync) TIDEMAP_REQUIRES(commit_mu);
  // After a group: drops what must not outlive it, and the buffers of a large one.
  void ReleaseGroupBuild() TIDEMAP_REQUIRES(commit_mu);
  // The stored state of a key, from its 17-byte key-hash index row (so an
  // overwrite never reads the old value).
  Result<KeyState> LoadKeyState(uint64_t key_hash, std::string_view map,
                                std::string_view key) const;
  // The content digest of the stored record, for the equal-version tie rule.
  Result<Digest128> LoadContent(const std::string& row_key) const;

  // ---- map clears (clear.cc) ----
  // Whether a record of `map` at `version` is older than the map's clear,
  // counting the clears stored earlier in the group `g`.
  bool Cleared(const GroupBuild& g, std::string_view map, const Version& version) const;
  // One batch of RemoveClearedRecords: removes the records of `p.map` older
  // than its clear, from after p.row.after, visiting at most `rows_max` rows;
  // `*done` when it reached the map's end.
  Status RemoveClearedBatch(const ClearState::Pending& p, size_t rows_max, ClearRemoval* stats,
                            bool* done) TIDEMAP_REQUIRES(commit_mu);

  // ---- tombstone GC (tombstone_gc.cc) ----
  class TombstonePurge;  // one PurgeTombstones call's batches
  // Adds to `purge` every expired record with an expiry before `cutoff_ms`
  // whose seq is at or below `acked_by_all`.
  Status PurgeExpired(TombstonePurge* purge, uint64_t cutoff_ms, uint64_t acked_by_all,
                      PurgeStats* stats) TIDEMAP_REQUIRES(commit_mu);
  // Drops entries no longer valid from the expiry rows of buckets from
  // `first_bucket` on (not yet due), a bounded number per call, resuming at
  // expiry_compact_from.
  Status CompactExpiryRows(TombstonePurge* purge, uint64_t first_bucket)
      TIDEMAP_REQUIRES(commit_mu);
  uint64_t expiry_compact_from TIDEMAP_GUARDED_BY(commit_mu) = 0;

  // ---- per-record TTL (expiry.cc) ----
  // Subscribers were told of every record expiring at or before this (ms);
  // loaded by the first ExpireRecords (the meta row).
  std::optional<uint64_t> expire_notified_ms TIDEMAP_GUARDED_BY(commit_mu);
  std::atomic<uint64_t> expire_notified_cache{0};  // the same, for Stats()
  std::atomic<uint64_t> expired{0};                // announced since open
  std::atomic<uint64_t> expired_purged{0};         // purged since open
  // The earliest expiry in the expiry index after `after_ms` (0: none).
  Result<uint64_t> NextExpiry(uint64_t after_ms) const;

  // ---- checkpoints (checkpoint.cc) ----
  // Every checkpoint goes through these, so the expiry index's pending
  // entries are written with the tree's checkpoint that covers them.
  // Puts a checkpoint covering `seq` into `batch`: the tree's
  // (TreeState::AppendCheckpoint, with `deltas` this batch commits) and the
  // rows of the pending expiry entries and of `expiries` (those this batch
  // adds; may be null). Checkpointed must follow once the batch committed.
  // Both under commit_mu (held by the caller: a group's leader, a purge, a
  // clear's removal, the close).
  void AppendCheckpoint(Batch* batch, uint64_t seq, std::span<const LeafDelta> deltas,
                        const ExpiryPending* expiries = nullptr);
  void Checkpointed(std::span<const LeafDelta> deltas, uint64_t seq, uint64_t now_ms);
  // Whether a checkpoint covering `seq` would write anything.
  bool NeedsCheckpoint(uint64_t seq) const;
  // Writes a checkpoint covering `seq` in a batch of its own, when needed.
  Status Checkpoint(uint64_t seq, bool sync) TIDEMAP_REQUIRES(commit_mu);

  // ---- the version 4 expiry queue (expiry_migration.cc) ----
  // Set by LoadOrCreateMeta for a version 4 database.
  bool expiry_migration_due = false;
  // Moves every 'x' row into packed rows, in bounded batches (each commits
  // the rows it moves and deletes them; resumable), then writes the schema
  // version. A read-only replica moves nothing: it holds them as pending
  // entries instead.
  Status MigrateExpiryQueue() TIDEMAP_REQUIRES(commit_mu);

  // ---- open and close (open.cc) ----
  Status OpenStore();
  Status LoadOrCreateMeta();
  // What the replica keeps in memory from the stored rows (GC watermarks,
  // the persisted HLC bound, the Merkle tree and the counts): at Open, and
  // again after the store was reopened.
  Status LoadDerivedState() TIDEMAP_REQUIRES(commit_mu);
  Result<uint64_t> LoadHlcBound() const;
  Status LoadTree(uint64_t checkpoint_seq);

  // ---- lost writes (lost_writes.cc) ----
  // Draws and stores a new incarnation and pulls every peer's acknowledged
  // cursor back to the last seq; returns the new incarnation.
  Result<uint64_t> RenewIncarnation() TIDEMAP_REQUIRES(commit_mu);

  // ---- storage errors (storage_health.cc) ----
  // OK when the store takes writes. After a write failed: the error for the
  // writers, except once per storage_retry_interval_ms (or when `now`), when
  // it first tries Store::Reopen and reloads the derived state.
  Status CheckStorage(bool now) TIDEMAP_REQUIRES(commit_mu);

  // ---- the storage quota (quota.cc) ----
  // The status a write refused at StorageState::kFull gets.
  Status QuotaRefusal() const;
  // At kFull: gives every writer of `group` that adds data (a local put, or
  // remote records) QuotaRefusal() and returns the others, put in `*kept`.
  const std::vector<Writer*>& RefuseOverQuota(const std::vector<Writer*>& group,
                                              std::vector<Writer*>* kept);
  // Tells every subscriber the quota state changed (a kQuota event).
  void AnnounceQuota();

  // Writes what a clean close leaves: the HLC bound shrunk to what was issued
  // and a final checkpoint. Best effort.
  void Close() TIDEMAP_REQUIRES(commit_mu);
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_IMPL_INTERNAL_H_
