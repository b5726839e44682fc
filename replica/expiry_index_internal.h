// The expiry index: which live records have an expiry, found by expiry
// without a full scan (for ExpireRecords, the GC and the next expiry), at no
// LevelDB row per TTL'd write.
//
// Design. A commit adds the entry of each TTL'd record it stores to a
// pending list in memory, not to a row. The pending entries are written
// with the Merkle tree's checkpoint, in the same batch, as packed rows (one
// or more per expiry bucket, storage/expiry_rows_internal.h), so every entry
// of a seq at or below the checkpoint is in a row, and after a crash the
// entries of the seqs after it are rebuilt from the oplog tail (Recover),
// as the tree's buckets are. Nothing deletes an entry with its record: an
// entry is valid while the record's key-hash index row holds the entry's
// version and expiry (Valid); readers skip the others and dedupe equal
// entries, and the GC rewrites the rows of the buckets it purges.
//
// Thread-safety: every method may be called from any thread; the pending
// entries and the row id are guarded by mu_, a leaf lock. Changes (Add,
// AppendFlush, Flushed, AppendRows, Load, Recover) are ordered with the
// commits they describe by the replica's commit_mu. Readers copy the
// pending entries before they open their store iterator, so an entry being
// flushed is seen twice at worst, never missed.
#ifndef TIDEMAP_REPLICA_EXPIRY_INDEX_INTERNAL_H_
#define TIDEMAP_REPLICA_EXPIRY_INDEX_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/storage/expiry_rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// Entries held in memory, their names in one arena (an append per TTL'd
// write, no allocation of its own). Not thread-safe.
class ExpiryPending {
 public:
  void Add(const rows::ExpiryEntryRef& e);
  void Append(const ExpiryPending& other);
  void Clear();
  bool empty() const { return fixed_.empty(); }
  size_t size() const { return fixed_.size(); }
  // Entry `i`; its views live until the next change.
  rows::ExpiryEntryRef at(size_t i) const;

 private:
  struct Fixed {
    uint64_t expiry_ms;
    Version version;
    uint64_t seq;
    size_t names_at;
    uint32_t map_bytes, key_bytes;
  };
  std::vector<Fixed> fixed_;
  std::string names_;
};

// The entries of one expiry bucket a reader visits: those in its rows (with
// the row keys) and those pending, each sorted (rows::ExpiryEntryLess) and
// without duplicates; not checked for validity.
struct ExpiryBucket {
  uint64_t bucket = 0;
  std::vector<std::string> row_keys;
  std::vector<rows::ExpiryEntry> stored;
  std::vector<rows::ExpiryEntry> pending;
  // Both lists merged, sorted, without duplicates.
  std::vector<rows::ExpiryEntry> Merged() const;
};

class ExpiryIndex;

// Writes entries as packed rows into the batches of a bulk writer (a
// rebuild, a snapshot load, the migration), a bounded number buffered.
// Borrows the index, which must outlive it.
class ExpiryRowWriter {
 public:
  explicit ExpiryRowWriter(ExpiryIndex* index) : index_(*index) {}
  // Buffers `e`; once kBufferedMax are buffered, puts their rows into `batch`.
  void Add(const rows::ExpiryEntryRef& e, Batch* batch);
  // Puts the rows of what is buffered into `batch`.
  void Finish(Batch* batch);

  static constexpr size_t kBufferedMax = 10'000;

 private:
  ExpiryIndex& index_;
  ExpiryPending buffered_;
};

class ExpiryIndex {
 public:
  // ---- open (under commit_mu) ----
  // Loads the next row id and forgets every pending entry.
  Status Load(const Store& store) TIDEMAP_EXCLUDES(mu_);
  // Adds the entries of the oplog entries after `checkpoint_seq` whose record
  // is still the live, expiring version they wrote.
  Status Recover(const Store& store, const Oplog& oplog, uint64_t checkpoint_seq)
      TIDEMAP_EXCLUDES(mu_);

  // ---- changes (under commit_mu) ----
  // After a commit without a checkpoint: its entries become pending.
  void Add(const ExpiryPending& committed) TIDEMAP_EXCLUDES(mu_);
  bool HasPending() const TIDEMAP_EXCLUDES(mu_);
  // Puts the rows of every pending entry and of `more` (the entries the
  // same batch adds; may be null) into `batch`, for a checkpoint. Flushed
  // must follow once the batch committed; if it failed, nothing.
  void AppendFlush(Batch* batch, const ExpiryPending* more) TIDEMAP_EXCLUDES(mu_);
  // The batch of the last AppendFlush committed: nothing is pending.
  void Flushed() TIDEMAP_EXCLUDES(mu_);
  // Puts rows holding `entries` (any order) into `batch`, with the next row
  // id, drawing their ids.
  void AppendRows(Batch* batch, const ExpiryPending& entries) TIDEMAP_EXCLUDES(mu_);

  // ---- reads ----
  // Calls fn for each expiry bucket in [first, last] that holds entries,
  // stored or pending, in bucket order, until it returns false or an error.
  Status ForEachBucket(const Store& store, uint64_t first, uint64_t last,
                       const std::function<Result<bool>(const ExpiryBucket&)>& fn) const
      TIDEMAP_EXCLUDES(mu_);
  // Whether `e` names the record's current state: live, at e's version and expiry.
  static Result<bool> Valid(const Store& store, const rows::ExpiryEntry& e);
  // The earliest expiry after `after_ms` of a valid entry (0: none).
  Result<uint64_t> NextExpiry(const Store& store, uint64_t after_ms) const TIDEMAP_EXCLUDES(mu_);

 private:
  void AppendRowsLocked(Batch* batch, std::vector<rows::ExpiryEntryRef>* refs)
      TIDEMAP_REQUIRES(mu_);
  // The pending entries of buckets [first, last], sorted.
  std::vector<rows::ExpiryEntry> PendingIn(uint64_t first, uint64_t last) const
      TIDEMAP_EXCLUDES(mu_);

  mutable Mutex mu_;
  ExpiryPending pending_ TIDEMAP_GUARDED_BY(mu_);
  uint64_t next_row_id_ TIDEMAP_GUARDED_BY(mu_) = 1;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_EXPIRY_INDEX_INTERNAL_H_
