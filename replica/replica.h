// Replica: one node's last-writer-wins map store.
//
// A replica holds named maps of byte-string keys. Every change is a version
// stamped (hlc, origin node); of two versions of a key the greater wins, on
// every replica, whatever order they arrive in. A delete is a tombstone
// version like any other. Each change that wins locally (local or remote) gets
// an oplog seq in the same atomic LevelDB batch as the record, so it can be
// streamed on to peers.
//
// Thread-safety: all methods may be called from any thread. Writes go through
// one commit pipeline that stamps, sequences and group-commits them (many
// concurrent writers share one fsync in sync mode); reads go straight to
// LevelDB and see whole batches or nothing.
#ifndef TIDEMAP_REPLICA_REPLICA_H_
#define TIDEMAP_REPLICA_REPLICA_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/base/hash.h>
#include <tidemap/base/random.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/replica/sync_store.h>
#include <tidemap/schemas/messages.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

class ValueCipher;  // storage/value_cipher.h

// Size limits, checked before anything is written. Over a limit is Refused,
// with the limit and the size in the message.
struct Limits {
  size_t map_name_bytes_max = 255;
  size_t key_bytes_max = 4096;
  size_t value_bytes_max = size_t{16} << 20;
  size_t batch_ops_max = 10'000;
  size_t batch_bytes_max = size_t{64} << 20;
};

struct ReplicaOptions {
  std::string path;             // LevelDB directory (the data dir's "db")
  leveldb::Env* env = nullptr;  // nullptr: the real file system; must outlive the replica
  // Create an empty replica when `path` holds no database; else that is
  // NotFound and nothing is created (see Store::Open).
  bool create_if_missing = true;
  // Draw a new incarnation at open even for an existing database, so that
  // peers take it for another database and reconcile by a tree diff both
  // ways (after a repair that may have lost records they acknowledged).
  bool new_incarnation = false;
  // Open without writing anything to the disk (see StoreOptions::read_only):
  // for commands that only read, which then work on a full disk. Every write
  // is Refused.
  bool read_only = false;
  // After a storage error (a full disk, too many open files) writes are
  // refused with IOError while reads go on; a write, or RetryStorage, tries
  // to bring them back by reopening the store at most this often.
  uint64_t storage_retry_interval_ms = 1000;
  Clock* clock = nullptr;  // required; must outlive the replica
  uint64_t node_id = 0;    // required, non-zero: this node's id (from its public key)
  Durability durability = Durability::kSync;
  HlcOptions hlc;
  Limits limits;
  OplogRetention retention;
  // The HLC upper bound is reserved this far ahead of the issued timestamps,
  // with a synced write each time it is crossed (at most about once per this).
  uint64_t hlc_reserve_ms = 1000;
  // A group commit stops collecting writers past this many bytes.
  size_t group_commit_bytes_max = size_t{4} << 20;
  // In sync mode, a group's leader first waits for the threads of the
  // previous group to queue again: a thread that writes in a loop comes back
  // microseconds after its commit returned, just too late for the next group,
  // so without the wait concurrent writers split into two alternating halves
  // and pay twice the fsyncs. The wait ends when they are all back, or after
  // half the recent duration of a synced commit, and never lasts longer than
  // this. A lone writer never waits. 0: never wait.
  uint32_t group_commit_wait_max_us = 1000;
  // In sync mode, writers waiting for their group's commit yield the CPU in a
  // loop instead of sleeping, for up to twice the recent duration of a synced
  // commit and never longer than this; then they sleep. (When this is not 0,
  // a leader's wait above loops the same way.) Waking a sleeping thread costs
  // the leader a system call and the thread a context switch, tens of
  // microseconds each on a virtual machine, and it is what held 8 durable
  // writers to about 4x one writer's rate. The loop burns CPU while a
  // commit's fsync runs. 0: always sleep.
  uint32_t group_commit_spin_max_us = 500;
  // Merkle leaf rows (digest and counts per bucket) and the state row are not
  // rewritten by every commit: a checkpoint writes every leaf changed since the
  // last one, inside the batch of the first group commit this long (on
  // `clock`) or this many oplog entries (seqs) after the last checkpoint, and
  // on a clean close, before Scrub and before PruneOplog. After a crash, Open
  // recomputes the buckets named by the oplog entries since the checkpoint
  // from the key-hash index: the tree stays exact with no full rebuild. Random
  // writes dirty about min(entries, leaf count) buckets, so the bound is set
  // well above the 65,536 leaves: the replay after a crash costs at most one
  // bucket scan per entry since the checkpoint (about a second at the bound).
  uint64_t checkpoint_interval_ms = 1000;
  uint64_t checkpoint_rows_max = 100'000;
  // Tombstone GC (PurgeTombstones, design in docs/tombstone-gc.md): a tombstone goes
  // once it is older than this horizon H (its hlc's physical time against
  // `clock`) and every known peer acknowledged it. 0: never purge. H must
  // exceed the longest time a write may take to reach every replica, clock
  // skew included: a write older than the GC watermark that arrives for a key
  // this replica does not hold is taken for a deleted key's old version.
  uint64_t tombstone_horizon_ms = uint64_t{7} * 24 * 3600 * 1000;
  // A tree diff's reads of at least 256 buckets (summaries) or key hashes
  // (records) run in up to this many threads, the caller's included, each
  // with its own iterator: on a cold block cache they are bound by block
  // reads and decompression, which then overlap. 0: one per hardware thread,
  // at most 4 (more threads than cores only contend); 1: the caller alone.
  uint32_t diff_read_threads = 0;
  // LevelDB's memtable size. Larger means fewer level-0 tables and less
  // compaction under a sustained stream of writes (a bootstrap from a peer),
  // but each insert walks a deeper, less cache-resident skip list (so a batch
  // put is slower), and a restart replays more log. The README's
  // "write_buffer_mb" setting has measured figures.
  size_t write_buffer_bytes = size_t{4} << 20;
  // The storage quota (see StorageUsage): 0 means none. At 80% of it the
  // state is kPruning (the owner frees space: PruneOplogThrough,
  // PurgeTombstones, Compact); at 100% writes that add data are refused with
  // QuotaExceeded, deletes and reads go on. Changed live by SetStorageQuota.
  uint64_t storage_quota_bytes = 0;
  // Draws the incarnation id of a new database (seeded in simulations);
  // nullptr: the OS's randomness. Used only while Open runs.
  Random* random = nullptr;
  // Encryption at rest: every value written is sealed with it, and sealed
  // values are opened with it (a value that fails to open is Corruption,
  // never served). nullptr: values are written in the clear, and reading a
  // sealed one is Unavailable. Versions, key hashes and the tree are never
  // sealed, so peers sync as usual and receive plaintext values. Borrowed:
  // must outlive the replica.
  const ValueCipher* value_cipher = nullptr;
};

// One key's current state as Get returns it.
struct Record {
  std::string value;
  Version version;
  uint64_t expiry_ms = 0;  // when it expires (ms since the Unix epoch); 0: never
};

struct ScanItem {
  std::string key;
  std::string value;
  Version version;
  uint64_t expiry_ms = 0;  // as Record's
};

// Per-record TTL. A put with ttl_ms > 0 stores the absolute expiry
// version.hlc.physical_ms() + ttl_ms, computed once by the writer; it
// replicates with the version, so every replica expires the record at the
// same instant of its own clock. An expired record is absent for every read
// (Get, Scan) but stays a version for LWW; the GC purges it like a tombstone
// (see PurgeTombstones).
struct PutOptions {
  uint64_t ttl_ms = 0;  // 0: never expires; at most kTtlMaxMs
};
inline constexpr uint64_t kTtlMaxMs = uint64_t{100} * 365 * 24 * 3600 * 1000;  // 100 years

struct ScanPage {
  std::vector<ScanItem> items;
  std::optional<std::string> next;  // pass as `after` for the following page
};

// Metadata of one stored key, tombstones included (for anti-entropy and scrub).
struct KeyMeta {
  std::string_view map;
  std::string_view key;
  Version version;
  bool tombstone = false;
  uint64_t expiry_ms = 0;  // a live record's expiry (0: none), expired or not
};

// Where the storage stands against its quota. kPruning: usage reached 80%
// of the quota (writes go on; the owner frees space). kFull: usage reached
// the quota, or the file system itself is full (ENOSPC): local writes that
// add data and records from peers are refused with QuotaExceeded.
enum class StorageState { kOk, kPruning, kFull };
std::string_view StorageStateName(StorageState state);  // "ok", "pruning", "full"

// The usage behind StorageState. `used_bytes` is the last measurement of the
// database directory (file sizes, as `du --apparent-size`; taken at open and
// by MeasureStorage) plus the encoded bytes of every batch committed since:
// exact at a measurement, then an estimate that runs ahead of the disk when
// compactions shrink what was written and behind it while a compaction holds
// old and new tables at once (the next measurement corrects both).
struct StorageUsage {
  uint64_t used_bytes = 0;
  uint64_t quota_bytes = 0;  // 0: none
  StorageState state = StorageState::kOk;
  bool disk_full = false;    // the file system reported ENOSPC (see storage_health())
  uint64_t transitions = 0;  // state changes since open
};

// kExpire: a record's expiry passed (see Replica::ExpireRecords); its
// version stays the one that was written. kClear: the map was cleared (see
// Replica::ClearMap): one event for the whole map, with the clear's version
// and an empty key. kQuota: the storage state changed (ChangeEvent::storage;
// no map, key, version or seq).
enum class ChangeKind { kCreate, kUpdate, kDelete, kExpire, kClear, kQuota };
std::string_view ChangeKindName(ChangeKind kind);

// What subscribers receive after a change committed.
struct ChangeEvent {
  ChangeKind kind;
  std::string_view map;
  std::string_view key;    // empty for kClear
  std::string_view value;  // empty for kDelete, kExpire and kClear
  Version version;
  uint64_t expiry_ms = 0;  // the record's expiry, 0 when it has none
  uint64_t seq = 0;        // 0 for kExpire (an expiry is no new oplog entry)
  bool remote = false;     // applied from a peer rather than written here
  StorageUsage storage;    // kQuota: the new state with its usage and quota
};

// A multi-key write that commits atomically.
class WriteBatch {
 public:
  // One op, viewing the batch's copy of its bytes: valid until the batch
  // changes or goes.
  struct Op {
    std::string_view map;
    std::string_view key;
    std::string_view value;  // empty for a delete
    bool tombstone = false;
    uint64_t ttl_ms = 0;  // PutOptions::ttl_ms of a put
  };
  void Put(std::string_view map, std::string_view key, std::string_view value);
  void Put(std::string_view map, std::string_view key, std::string_view value,
           const PutOptions& options);
  void Delete(std::string_view map, std::string_view key);
  // REQUIRES: i < size().
  Op op(size_t i) const;
  size_t size() const { return ops_.size(); }

 private:
  // Ops are copied back to back into one buffer (no allocation per op).
  struct OpRef {
    size_t offset, map_size, key_size, value_size;
    bool tombstone;
    uint64_t ttl_ms;
  };
  void Add(std::string_view map, std::string_view key, std::string_view value, bool tombstone,
           uint64_t ttl_ms);
  std::string bytes_;
  std::vector<OpRef> ops_;
};

// The precondition of a conditional write (Replica::PutIf, DeleteIf),
// checked against the key's stored state under the commit lock, so no other
// write lands between the check and the write.
struct WriteCondition {
  // The key must be live (a tombstone or no record fails) and, unless
  // `any_version`, its version must be one of `versions`.
  std::vector<Version> versions;
  bool any_version = false;
};

// What a conditional write did.
struct ConditionalWrite {
  bool written = false;
  // When written: the new version. Else the key's live version (when it is live).
  std::optional<Version> version;
};

// What one PurgeTombstones call did.
struct PurgeStats {
  uint64_t purged = 0;  // tombstones deleted
  // Older than the horizon but not yet acknowledged by every known peer.
  uint64_t unacknowledged = 0;
  Version watermark;            // the GC watermark after the call
  uint64_t expired_purged = 0;  // of `purged`, expired records (the rest: tombstones)
};

// What one ExpireRecords call did.
struct ExpireStats {
  uint64_t expired = 0;         // records announced as expired (kExpire events)
  uint64_t next_expiry_ms = 0;  // the earliest expiry still ahead (0: none)
};

// What one RemoveClearedRecords call did.
struct ClearRemoval {
  uint64_t removed = 0;       // records older than their map's clear, deleted
  uint64_t visited = 0;       // record rows read
  uint64_t maps_pending = 0;  // cleared maps whose removal is not done after the call
};

// The storage's state, since open.
struct StorageHealth {
  std::string error;          // empty while writes are accepted, else what stopped them
  std::string last_error;     // the last commit the storage failed ("" when none did)
  uint64_t write_errors = 0;  // commits the storage failed
  uint64_t recoveries = 0;    // reopens that brought writes back (see RetryStorage)
  // Times a peer held writes this database had lost (see SyncStore::CheckHeldByPeer),
  // and what was found the last time ("" when never).
  uint64_t lost_writes_detected = 0;
  std::string last_lost_writes;
};

struct ReplicaStats {
  uint64_t node_id = 0;
  uint64_t keys = 0;             // live records
  uint64_t tombstones = 0;       // deleted records still held
  uint64_t oplog_first_seq = 0;  // 0 when the log is empty
  uint64_t oplog_last_seq = 0;   // the highest seq ever assigned
  uint64_t oplog_pruned_through = 0;
  Timestamp hlc_last;
  // What the last open replayed: oplog entries (seqs, not LevelDB rows) after
  // the last checkpoint, and the Merkle buckets recomputed for them (both 0
  // after a clean close).
  uint64_t recovered_oplog_rows = 0;
  uint64_t recovered_buckets = 0;
  // Since open (counters kept in memory, for metrics): committed local
  // versions (each op of Put, Delete and Write), remote records that won here,
  // and reads (Get and Scan calls, whatever their outcome).
  uint64_t local_writes = 0;
  uint64_t remote_applied = 0;
  uint64_t reads = 0;
  // Approximate on-disk bytes of the oplog rows, and of the whole database directory.
  uint64_t oplog_bytes = 0;
  uint64_t disk_bytes = 0;
  uint64_t incarnation = 0;  // this database's incarnation id (see Replica::incarnation)
  // Tombstone GC: the greatest purged tombstone version over every bucket
  // (zero when none), tombstones purged since the database was created, and
  // since open the records ApplyRemote did not store as they were for being
  // at or below their bucket's watermark (see ApplyResult): tombstones, and
  // stale live versions (dropped, or answered with the delete restored).
  Version gc_watermark;
  uint64_t tombstones_purged = 0;
  uint64_t below_watermark_tombstones = 0;
  uint64_t stale_records_dropped = 0;
  // Per-record TTL: the earliest expiry not yet announced (0: none), and
  // since open the records ExpireRecords announced and the expired records
  // PurgeTombstones purged.
  uint64_t next_expiry_ms = 0;
  uint64_t expired = 0;
  uint64_t expired_purged = 0;
  // Map clears: maps ever cleared, those whose older records are still
  // being removed, and the records removed since open.
  uint64_t cleared_maps = 0;
  uint64_t clear_pending_maps = 0;
  uint64_t clear_removed = 0;
  StorageHealth storage;  // as storage_health() returns it
  StorageUsage usage;     // as storage_usage() returns it
};

// What Scrub() found. Consistent iff every root agrees and nothing mismatched.
struct ScrubReport {
  uint64_t records = 0;          // stored keys, tombstones included
  Digest128 stored_root;         // from the leaf rows on disk
  Digest128 memory_root;         // the tree the replica serves from memory
  Digest128 rebuilt_root;        // recomputed from every record
  uint64_t leaf_mismatches = 0;  // buckets whose stored leaf differs from the rebuild
  // Key-hash index rows, and tombstone queue rows, missing, extra or disagreeing.
  uint64_t index_mismatches = 0;
  // Encryption at rest: values sealed that fail to open (a tag mismatch:
  // tampered, moved to another key or version, or sealed under an unknown key).
  uint64_t value_failures = 0;
  bool ok() const {
    return leaf_mismatches == 0 && index_mismatches == 0 && value_failures == 0 &&
           stored_root == rebuilt_root && memory_root == rebuilt_root;
  }
};

// What Replica::ResealValues did.
struct ResealReport {
  uint64_t records = 0;   // stored records looked at, tombstones included
  uint64_t resealed = 0;  // values rewritten under the sealing key
};

// Replica is the sync core's store: it implements SyncStore
// (replica/sync_store.h). The operations only the sync core needs are
// private here and reached through a SyncStore reference; those that are
// also API (LastSeq, KeyCount, ReadRecord, ReadOplog) are public.
class Replica : public SyncStore {
 public:
  // Opens or creates the replica at options.path. A database created by
  // another node id, of an unknown schema version, or held by another process
  // is refused with a message that says so.
  static Result<std::unique_ptr<Replica>> Open(ReplicaOptions options);
  ~Replica() override;
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Local writes. Each returns the version it wrote once it is committed
  // (durably in sync mode).
  Result<Version> Put(std::string_view map, std::string_view key, std::string_view value);
  // A put with options (a TTL). InvalidArgument for a ttl_ms over kTtlMaxMs.
  Result<Version> Put(std::string_view map, std::string_view key, std::string_view value,
                      const PutOptions& options);
  Result<Version> Delete(std::string_view map, std::string_view key);
  // Clears `map`: every record of it whose version is older than the
  // returned version (the clear's) is deleted, here and on every replica the
  // clear reaches, whatever order the clear and the records arrive in; a
  // write newer than it survives. Costs one record: the clear is the map's
  // record at the reserved empty key (a tombstone stamped like any write),
  // which replicates and shows in the Merkle tree like any record. Reads
  // leave the older records out at once; RemoveClearedRecords deletes them.
  // Subscribers get one kClear event. The same errors as Delete.
  Result<Version> ClearMap(std::string_view map);
  // All ops commit together or none does; the versions are in op order.
  Result<std::vector<Version>> Write(const WriteBatch& batch);
  // A Put or Delete that commits only when `condition` holds for the key
  // (a compare-and-set); otherwise nothing is written and `written` is false.
  // The same checks and errors as Put and Delete; `options` as for Put.
  Result<ConditionalWrite> PutIf(std::string_view map, std::string_view key, std::string_view value,
                                 const WriteCondition& condition, const PutOptions& options = {});
  Result<ConditionalWrite> DeleteIf(std::string_view map, std::string_view key,
                                    const WriteCondition& condition);

  // The live value; NotFound when absent, deleted or expired (its expiry at
  // or before the clock's now); Corruption (naming the key)
  // when the stored bytes fail their check: corrupt bytes are never served.
  Result<Record> Get(std::string_view map, std::string_view key) const;

  // Live records of `map` (expired ones left out) whose key starts with `prefix`, in key order,
  // strictly after `after` when given, at most `limit` (1..10,000).
  Result<ScanPage> Scan(std::string_view map, std::string_view prefix,
                        std::optional<std::string_view> after, size_t limit) const;

  // Calls `fn` for every stored key, tombstones included, in (map, key) order,
  // until it returns false.
  Status ForEachKeyMeta(const std::function<bool(const KeyMeta&)>& fn) const;

  // Merges records received from `peer` (a node id; 0 when unknown) by LWW.
  // Each record's timestamp is checked against max_clock_offset first: if any
  // is too far ahead, the whole call is Refused before anything changes, so the
  // sender keeps its data and can retry. Winners get a fresh oplog seq (with
  // their origin kept), so they flow on to other replicas. A record for a key
  // not held here whose version is at or below its bucket's GC watermark is
  // not stored as it is (see ApplyResult, StaleRecords): a purged key never
  // comes back.
  Result<ApplyResult> ApplyRemote(std::span<const KeyedRecord> records, uint64_t peer,
                                  StaleRecords stale = StaleRecords::kRedelete);

  using Callback = std::function<void(const ChangeEvent&)>;
  using SubscriptionId = uint64_t;
  // Calls `callback` after each committed change to `map` (every map when
  // `map` is empty), in seq order, on the committing thread. A callback may
  // read from the replica and unsubscribe; it must not write to it. kQuota
  // events go to every subscriber, on the thread that changed the state.
  SubscriptionId Subscribe(std::string_view map, Callback callback);
  void Unsubscribe(SubscriptionId id);

  // The root digest of the Merkle tree over every key's (map, key, version,
  // tombstone): two replicas have converged when their roots are equal.
  Digest128 MerkleRoot() const;

  // Compares the stored Merkle tree and key-hash index with a full rebuild
  // from the records, and opens every sealed value (its tag is checked).
  // Writes wait while it runs (it reads every record).
  Result<ScrubReport> Scrub();
  // Encryption at rest, the work of a rekey: rewrites every stored value not
  // sealed under the value cipher's sealing key (sealed under another key,
  // or in the clear) so that it is, a page of records at a time, then
  // compacts the whole database so that its files keep no copy of the old
  // bytes. Reads go on throughout; writes wait while a page is rewritten.
  // Versions, the oplog and the tree do not change, so peers see nothing.
  // Idempotent: after a crash, run it again. InvalidArgument without a
  // value cipher; Refused on a read-only replica. `on_page`, when set, is
  // called after each page with the counts so far (on the calling thread,
  // no lock held); returning false stops the reseal before the next page,
  // with Unavailable (run it again to finish).
  Result<ResealReport> ResealValues(
      const std::function<bool(const ResealReport&)>& on_page = nullptr);
  // Runs `fn` while no commit runs: every commit either finished before it
  // or starts after it returns and sees what it changed. For a live rekey's
  // switch of the value cipher's sealing key, so that no value sealed under
  // the old key commits after the reseal passed it. `fn` must not call into
  // this replica's writes. Returns what `fn` returns.
  Status BetweenCommits(const std::function<Status()>& fn);
  // Rewrites every row derived from the records (the key-hash index, the
  // tombstone queue, the Merkle leaf rows) and the tree and counts in memory
  // from the records alone, for `tidemap repair` after LevelDB's repair may
  // have lost any of them. Writes wait while it runs. Close and reopen the
  // replica afterwards: its key filter was built from the old index. Returns
  // the records it found.
  Result<uint64_t> RebuildDerivedRows();

  // The highest seq assigned so far (cheap; no I/O).
  uint64_t LastSeq() const override;
  // Stored keys, tombstones included (cheap; no I/O).
  uint64_t KeyCount() const override;
  // The stored record of (map, key), tombstones included; nullopt when absent.
  Result<std::optional<KeyedRecord>> ReadRecord(std::string_view map,
                                                std::string_view key) const override;

  // ---- the oplog and the peers it is kept for ----

  // The oplog entries with seq > after_seq, at most `entries_max` (1 or
  // more), in seq order: what changed here since after_seq. After a prune
  // the first may be above after_seq + 1 (see OplogPrunedThrough).
  Result<std::vector<OplogEntry>> ReadOplog(uint64_t after_seq, size_t entries_max) const override;
  // Every seq at or below this has been pruned from the oplog (0: none ever was).
  Result<uint64_t> OplogPrunedThrough() const;
  // Registers `peer` (a node id) at cursor 0 if unknown: the oplog keeps its
  // rows for it (up to the retention cap) and tombstones wait for its
  // acknowledgement before they are purged.
  Status AddPeer(uint64_t peer);
  // Forgets `peer` (a node removed from the cluster): its cursor no longer
  // holds back pruning or tombstone GC. A no-op for an unknown peer.
  Status RemovePeer(uint64_t peer);
  // Every known peer's cursor: the seq of our oplog it acknowledged.
  Result<std::map<uint64_t, uint64_t>> PeerAcks() const;

  // Compacts the whole database (e.g. after a large prune or a bulk load), so
  // later reads touch fewer files. Blocks until done; writes may go on meanwhile.
  void Compact();

  // Prunes the oplog (see Oplog::Prune) with this replica's retention,
  // keeping the entries above `hold_after` that only peers' acknowledgements
  // would let go (the retention cap still applies to them).
  Result<PruneStats> PruneOplog(uint64_t hold_after = UINT64_MAX);

  // ---- the storage quota (ReplicaOptions::storage_quota_bytes) ----

  // Cheap (atomic loads): for the status, metrics and a watcher.
  StorageUsage storage_usage() const;
  // Measures the database directory (one listing and a size per file),
  // replaces the estimate with it and returns the usage; a state change is
  // announced (kQuota). The daemon calls it on its maintenance timer.
  StorageUsage MeasureStorage();
  // Sets the quota (0: none) and re-evaluates the state at once.
  void SetStorageQuota(uint64_t quota_bytes);
  // Prunes the oplog through at least `seq` (whole rows, and no further
  // than the last checkpoint), whatever the peers' cursors and the watch
  // hold: for freeing space, after which a peer whose cursor is below the
  // pruned point is repaired by a tree diff.
  Result<PruneStats> PruneOplogThrough(uint64_t seq);

  // Tombstone GC: deletes every tombstone older than tombstone_horizon_ms
  // whose oplog seq every known peer acknowledged (with no known peer, the
  // horizon alone decides: register the configured peers with AddPeer
  // before the first purge), with its key-hash index row, its queue row and
  // its Merkle item, in batches that also raise the GC watermark and
  // checkpoint the tree. Calls `on_purged` (may be empty) for each purged key
  // after its batch committed. Writes wait while it runs. The daemon calls
  // it on a timer; nothing calls it automatically.
  //
  // Expired records go the same way: a live record whose expiry is older
  // than the horizon (expiry_ms + tombstone_horizon_ms <= now) and whose seq
  // every known peer acknowledged is purged with its Merkle item (its
  // expiry index entry is dropped when its bucket's rows are rewritten),
  // raising the watermark to its version, as if it were a tombstone (it is
  // deleted everywhere since its expiry), so an older version of its key
  // never comes back.
  Result<PurgeStats> PurgeTombstones(const std::function<void(const KeyMeta&)>& on_purged = {});
  // Announces every record whose expiry passed (at or before the clock's
  // now) since the last call to subscribers, with one kExpire event each, in
  // expiry order, once per record: the point up to which it announced is
  // persisted. A record that expired before it reached this replica, or
  // before the first call, may not be announced. Cheap when nothing is due
  // (one seek). The daemon calls it on a timer; nothing calls it
  // automatically. Writes wait while it runs.
  Result<ExpireStats> ExpireRecords();
  // Removes records older than their map's clear (see ClearMap) from the
  // store, the key-hash index, the queues and the Merkle tree, in batches
  // that each visit at most `rows_max` (1 or more) record rows, hold the
  // commit lock (writes wait) and persist how far they got, so a restart
  // resumes. Stops after the first batch that reached `rows_max`; call again
  // while maps_pending is not 0. Until a map's removal is done, its trees
  // differ from those of a replica that finished: roots are equal after
  // convergence once every replica ran it through. The daemon calls it on
  // a timer; nothing calls it automatically.
  Result<ClearRemoval> RemoveClearedRecords(size_t rows_max = 10'000);
  // The greatest version of a purged tombstone (zero when none was purged).
  Version gc_watermark() const;
  // The GC watermark of the Merkle bucket of `key_hash` (KeyHash(map, key)):
  // what a remote record for a key not held is compared with.
  Version gc_watermark(uint64_t key_hash) const;
  // This database's incarnation: random and non-zero, drawn when the
  // database was created, never changed. A node whose database was wiped or
  // replaced comes back with another one, even under the same node id.
  uint64_t incarnation() const;

  Result<ReplicaStats> Stats() const;
  // After a storage error: tries now to reopen the store and take writes
  // again (writers also try, at most once per storage_retry_interval_ms).
  // OK when writes are accepted (at once when they were); else the error,
  // and reads go on. Blocks for the reopen (writes wait meanwhile).
  Status RetryStorage();
  // Cheap (no I/O): for a watcher polling it.
  StorageHealth storage_health() const;
  uint64_t node_id() const;
  // The greatest timestamp this replica's clock issued or learned (from a
  // peer's records): every later local write is stamped above it.
  Timestamp LastTimestamp() const;
  const Limits& limits() const;

 private:
  struct Impl;
  friend class ReplicaTestAccess;  // replica/test_access_internal.h
  friend class SnapshotCursor;     // replica/snapshot.h
  friend class SnapshotLoader;
  explicit Replica(std::unique_ptr<Impl> impl);
  // PutIf and DeleteIf: commits the batch's single op under `condition`.
  Result<ConditionalWrite> CommitIf(const WriteBatch& batch, const WriteCondition& condition);

  // The rest of SyncStore (contracts in replica/sync_store.h).
  SyncStoreInfo Info() const override;
  Result<SyncSnapshot> Snapshot() const override;
  Version GcWatermark(std::optional<uint64_t> key_hash) const override;
  Result<std::optional<PeerState>> LoadPeer(uint64_t peer) override;
  Status SavePeerAcked(uint64_t peer, uint64_t seq) override;
  Status SavePeerReceived(uint64_t peer, uint64_t seq) override;
  Status ReplacePeer(uint64_t peer, const PeerState& state) override;
  Result<size_t> RecordsByKeyHash(std::span<const uint64_t> key_hashes, size_t bytes_max,
                                  std::vector<KeyedRecord>* out) const override;
  Result<bool> ScanRecords(const RecordScan& scan, std::string* cursor, size_t page_bytes,
                           std::vector<KeyedRecord>* out) const override;
  Status MerkleChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                            std::vector<uint64_t>* out) const override;
  Status BucketSummaries(const std::vector<uint32_t>& buckets,
                         std::vector<msg::SummaryEntry>* entries,
                         std::vector<uint32_t>* counts) const override;
  Status CheckClockOffset(Timestamp remote, std::string_view peer) const override;
  Status CheckHeldByPeer(uint64_t peer, uint64_t held_incarnation, uint64_t held_seq,
                         uint64_t announced_last_seq) override;
  Result<ApplyResult> ApplyPeerRecords(std::span<const KeyedRecord> records, uint64_t peer,
                                       StaleRecords stale) override;

  std::unique_ptr<Impl> impl_;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_REPLICA_H_
