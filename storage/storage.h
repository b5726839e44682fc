// Store: the one LevelDB database of a replica, behind our own types.
//
// Key families are kept apart by a one-byte prefix (see storage/rows_internal.h):
// records, oplog rows, Merkle rows and meta. Every logical write is one Batch,
// committed atomically by Write(). Nothing outside storage/ sees LevelDB types
// except the Env seam, which tests use to inject an in-memory or faulty file system.
//
// Thread-safety: a Store may be used from several threads at once (LevelDB is);
// ordering between writers is the caller's business (see replica/).
#ifndef TIDEMAP_STORAGE_STORAGE_H_
#define TIDEMAP_STORAGE_STORAGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"

namespace leveldb {
class Cache;
class DB;
class FilterPolicy;
class Env;
class Iterator;
class WriteBatch;
}  // namespace leveldb

namespace tidemap {

// How a commit reaches the disk.
enum class Durability {
  kSync,     // fsync before a write is acknowledged (group commit amortizes it)
  kRelaxed,  // OS buffers: a process crash loses nothing, a machine crash the last moments
};

std::string_view DurabilityName(Durability d);
Result<Durability> ParseDurability(std::string_view text);

struct StoreOptions {
  std::string path;             // the LevelDB directory
  leveldb::Env* env = nullptr;  // nullptr: the real file system. Must outlive the Store.
  // Create the directory and an empty database when `path` holds none; else
  // a missing database is NotFound. Either way a directory that holds
  // LevelDB files but no CURRENT is refused (see Store::Open).
  bool create_if_missing = true;
  size_t block_cache_bytes = size_t{32} << 20;
  size_t write_buffer_bytes = size_t{4} << 20;
};

class KeyOrderSorter;  // storage/key_order_sorter_internal.h

// A set of changes that commit together or not at all.
class Batch {
 public:
  Batch();
  ~Batch();
  Batch(Batch&&) noexcept;
  Batch& operator=(Batch&&) noexcept;

  void Put(std::string_view key, std::string_view value);
  void Delete(std::string_view key);
  void Clear();
  // Bytes of the encoded batch, for bounding group commits.
  size_t ApproximateBytes() const;
  // Appends the contents of `other`.
  void Append(const Batch& other);
  bool empty() const;
  // Reorders the changes by key (KeyOrderSorter): the batch commits exactly
  // what it did before, faster when it is large.
  void SortByKey();

 private:
  friend class Store;
  std::unique_ptr<leveldb::WriteBatch> rep_;
  // SortByKey's sorter and spare batch, kept between calls.
  std::unique_ptr<KeyOrderSorter> sorter_;
  std::unique_ptr<leveldb::WriteBatch> spare_;
};

// A forward iterator over a key range of a consistent snapshot. Not thread-safe.
class StoreIterator {
 public:
  ~StoreIterator();
  void Seek(std::string_view key);
  bool Valid() const;
  void Next();
  std::string_view key() const;
  std::string_view value() const;
  // Non-OK when the underlying read failed (including block checksum mismatches).
  Status status() const;

 private:
  friend class Store;
  explicit StoreIterator(leveldb::Iterator* it);
  std::unique_ptr<leveldb::Iterator> it_;
};

// What Store::Repair did.
inline constexpr size_t kRepairProblemLinesMax = 20;
struct StoreRepairReport {
  uint64_t tables_after = 0;  // tables of the repaired database
  // Tables with unreadable blocks: their readable entries were copied into a
  // new table and the originals moved to `path`/lost.
  uint64_t tables_lost = 0;
  uint64_t problems = 0;                   // log records and table entries it dropped or ignored
  std::vector<std::string> problem_lines;  // LevelDB's words for the first of them
};

class DirLock;

class Store {
 public:
  // Opens (or, with create_if_missing, creates) the database. On the real
  // file system (env nullptr or Env::Default()) it first takes a DirLock on
  // the directory, held until the Store is destroyed; a custom Env (memory,
  // fault injection) is this process's own and is not locked. Errors:
  //   Unavailable  another process (or Store) holds the directory: "... is in
  //                use by pid N";
  //   NotFound     no database and !create_if_missing (nothing is created);
  //   Corruption   CURRENT is missing while table, log or manifest files are
  //                there (LevelDB would start a new database over them and
  //                delete them), or LevelDB reports corruption;
  //   IOError      anything else (an unreadable CURRENT or MANIFEST, say).
  // Every message names the path, and the file where LevelDB names one.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);

  // LevelDB's RepairDB on a database no process holds: it rebuilds CURRENT
  // and the manifest from whatever table and log files it can read and moves
  // the files it cannot into `path`/lost. Takes the same DirLock as Open.
  static Result<StoreRepairReport> Repair(const std::string& path);
  ~Store();

  // Commits `batch`. After the first failed write every later write fails with
  // the same error until the store is reopened: LevelDB's log writer keeps
  // going after a failed append, and writes acknowledged after it could be
  // lost at recovery, so a failed write poisons the handle.
  Status Write(Batch* batch, bool sync);
  // NotFound when absent.
  Result<std::string> Get(std::string_view key) const;
  // Iterators must be destroyed before the Store.
  std::unique_ptr<StoreIterator> NewIterator() const;
  // Approximate on-disk bytes of keys in [begin, end).
  uint64_t ApproximateBytes(std::string_view begin, std::string_view end) const;
  // Bytes of every file in the database directory (tables, logs, manifest),
  // through the Env, so a memory Env reports its own files. Best effort: a
  // file that vanishes meanwhile (a compaction) counts 0.
  uint64_t DiskBytes() const;
  // Compacts [begin, end) (e.g. after a prune).
  void CompactRange(std::string_view begin, std::string_view end);

  const std::string& path() const { return path_; }

 private:
  Store() = default;

  std::string path_;
  leveldb::Env* env_ = nullptr;
  // Declaration order matters: the DB is destroyed before the cache and filter
  // it uses, and before the directory lock is released.
  std::unique_ptr<DirLock> dir_lock_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::DB> db_;

  Mutex write_error_mu_;
  Status write_error_ TIDEMAP_GUARDED_BY(write_error_mu_);  // OK until a write fails
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_STORAGE_H_
