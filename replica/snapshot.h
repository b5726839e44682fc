// Snapshots of a replica: reading a consistent point-in-time copy of every
// stored record (SnapshotCursor), and loading one into a new, empty replica
// (SnapshotLoader). The file format is not the replica's business: see
// schemas/snapshot_file.h (the replica links no Cap'n Proto).
//
// A snapshot holds every stored record (live, expired not yet purged, and
// tombstones not yet purged, a map's clear among them), with its version,
// expiry and value in the clear (a sealed value is opened with the source's
// ValueCipher, and sealed again under the loading replica's), and the GC
// watermark of every bucket that purged; the derived rows (key-hash index,
// queues, Merkle leaves) are rebuilt by the loader, so the loaded replica's
// Merkle root equals the source's at the snapshot.
//
// Thread-safety: a cursor or a loader is used by one thread at a time; other
// threads may use the replica meanwhile. Lifetime: the replica must outlive
// both.
#ifndef TIDEMAP_REPLICA_SNAPSHOT_H_
#define TIDEMAP_REPLICA_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/base/huge_page_allocator.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/schemas/messages.h>
#include <tidemap/schemas/snapshot.h>

namespace tidemap {

class PrefixIterator;
class StoreIterator;
class ValueCipher;
struct TreeRebuild;
class ExpiryRowWriter;

// Reads one snapshot. Opening it takes the replica's commit lock for a
// moment (no group is half committed then), so the header's seq and record
// count are exactly those of the LevelDB snapshot the reads see; after that
// it holds no lock and writes go on. Memory is one page of records.
//
// The cursor holds a LevelDB iterator: while it lives, Replica::RetryStorage
// (a reopen after a storage error) waits for it, up to its timeout.
class SnapshotCursor {
 public:
  // `created_ms` goes into the header as is.
  static Result<std::unique_ptr<SnapshotCursor>> Open(const Replica& replica, uint64_t created_ms);
  ~SnapshotCursor();
  SnapshotCursor(const SnapshotCursor&) = delete;
  SnapshotCursor& operator=(const SnapshotCursor&) = delete;

  const SnapshotHeader& header() const { return header_; }
  // Appends the next records, in (map, key) order, until they hold about
  // `page_bytes` (map, key and value bytes) or `records_max`. Returns false
  // once every record was returned (then `out` may hold the last ones).
  // Corruption, naming the key, for a record whose bytes fail their check.
  Result<bool> Next(size_t page_bytes, size_t records_max, std::vector<KeyedRecord>* out);
  // The same page, without copies: calls `fn` with each record as views into
  // the cursor's current row (or its buffer of an opened sealed value),
  // valid during the call only. An error of `fn` stops the page and is
  // returned.
  using RecordFn = std::function<Status(const SnapshotRecordView&)>;
  Result<bool> Visit(size_t page_bytes, size_t records_max, const RecordFn& fn);
  // The bucket GC watermarks of the same snapshot, in bucket order (at most
  // one per Merkle leaf). REQUIRES: Next returned false.
  Result<std::vector<SnapshotWatermark>> Watermarks();

 private:
  SnapshotCursor() = default;
  SnapshotHeader header_;
  const ValueCipher* cipher_ = nullptr;  // the replica's (encryption at rest)
  std::unique_ptr<StoreIterator> it_;
  std::unique_ptr<PrefixIterator> records_;
  std::string opened_;  // the current record's value, when it was sealed
  bool done_ = false;
};

// Loads a snapshot's records into a replica that holds none, keeping their
// versions and expiries, so peers that hold the same versions find equal
// Merkle digests and a tree diff ships only what differs. Nothing is
// assigned an oplog seq (the records are the source's, not changes here).
class SnapshotLoader {
 public:
  // The bytes of key-hash index rows buffered before a sorted run is written.
  static constexpr size_t kIndexRunBytesMax = size_t{64} << 20;

  // Refused unless `replica` has no record and no oplog entry. The replica
  // must not be written to until Finish returned, and must be closed and
  // opened again afterwards (its key filter and counts are built at open).
  // `index_run_bytes_max` bounds the key-hash index rows buffered before a
  // sorted run of them is written (see Add).
  static Result<std::unique_ptr<SnapshotLoader>> Begin(
      Replica* replica, size_t index_run_bytes_max = kIndexRunBytesMax);
  ~SnapshotLoader();
  SnapshotLoader(const SnapshotLoader&) = delete;
  SnapshotLoader& operator=(const SnapshotLoader&) = delete;

  // Stores `records` with the rows derived from them (key-hash index,
  // tombstone queue, expiry index rows, a map's clear row) and adds them to the Merkle tree being
  // built. They must follow the ones before in strictly rising (map, key)
  // order (else InvalidArgument) and respect the replica's limits (else
  // Refused). Written unsynced, in batches: the record rows as they come,
  // the key-hash index rows buffered (at most kIndexRunBytesMax) and written
  // in key-hash order, so LevelDB receives long sorted runs of both.
  Status Add(std::span<const KeyedRecord> records);
  // The same for one record given as views (copied before it returns).
  Status Add(const SnapshotRecordView& record);
  // Stores the watermarks and the HLC bound above every loaded version,
  // checkpoints the Merkle tree built from the records and syncs. Returns
  // the records loaded.
  Result<uint64_t> Finish(std::span<const SnapshotWatermark> watermarks);

 private:
  // A buffered key-hash index row: its key's hash (the row key's first
  // bytes after the prefix, compared first) and where the row key and value
  // lie in index_bytes_.
  struct IndexRow {
    uint64_t hash;
    uint32_t at;
    uint32_t key_bytes;
    uint32_t value_bytes;
  };

  SnapshotLoader(Replica* replica, TreeRebuild tree, size_t index_run_bytes_max);
  Status Flush();
  // Sorts the buffered index rows and writes them, adding each row's record
  // to the tree's leaves and counts as it goes: in hash order the leaves are
  // visited in bucket order, not at random. The buffer is then empty.
  Status WriteIndexRun();
  // Adds the record of a buffered index row (`row_key` and `value` as this
  // loader encoded them, `hash` its key hash) to leaves_ and the counts.
  void AddToTree(uint64_t hash, std::string_view row_key, std::string_view value);
  Replica* replica_;
  std::unique_ptr<Batch> batch_;
  std::unique_ptr<TreeRebuild> rebuilt_;  // the counts of the records added
  // The tree's leaves, set once at Finish: a record is added to its leaf
  // and its bucket's count when its index row is written.
  std::vector<Digest128> leaves_;
  size_t index_run_bytes_max_;
  std::unique_ptr<ExpiryRowWriter> expiry_rows_;  // the expiry index rows, into batch_
  // The buffered index rows and their bytes, their capacity reserved for a
  // whole run (address space; memory as rows are added) in huge pages.
  std::vector<IndexRow, HugePageAllocator<IndexRow>> index_;
  std::vector<char, HugePageAllocator<char>> index_bytes_;
  std::string last_row_key_;
  std::string row_key_, value_bytes_;  // reused encoding buffers
  uint64_t records_ = 0;
  uint64_t max_physical_ms_ = 0;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_SNAPSHOT_H_
