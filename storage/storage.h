// Store: the one LevelDB database of a replica, behind our own types.
//
// Key families are kept apart by a one-byte prefix (see storage/rows_internal.h):
// records, oplog rows, Merkle rows and meta. Every logical write is one Batch,
// committed atomically by Write(). Nothing outside storage/ sees LevelDB types
// except the Env seam, which tests use to inject an in-memory or faulty file system.
//
// Thread-safety: a Store may be used from several threads at once (LevelDB is);
// ordering between writers is the caller's business (see replica/). Reopen is
// the exception: it must not run alongside Write (the replica calls both from
// its commit path), and it waits for the reads in flight and the iterators.
#ifndef TIDEMAP_STORAGE_STORAGE_H_
#define TIDEMAP_STORAGE_STORAGE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>

namespace leveldb {
class Cache;
class DB;
class FilterPolicy;
class Env;
class Iterator;
struct Options;
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
  // Open without writing anything to `path`: whatever LevelDB writes while
  // the database is open (recovering its log, a new manifest) stays in
  // memory, so a read-only open works on a full disk and leaves the files as
  // they were. Write() is then refused. Needs an existing database.
  bool read_only = false;
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
// It keeps its Store from reopening (Store::Reopen waits for it): hold it for
// one scan, not across calls that may wait.
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
  StoreIterator(leveldb::Iterator* it, std::atomic<int>* open_count);
  std::unique_ptr<leveldb::Iterator> it_;
  std::atomic<int>* open_count_;  // the Store's count of live iterators
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
  // the same error until Reopen succeeds: LevelDB's log writer keeps going
  // after a failed append, and writes acknowledged after it could be lost at
  // recovery, so a failed write poisons the handle. Reads go on meanwhile.
  // Refused on a read-only store.
  Status Write(Batch* batch, bool sync);
  // OK, or the error that poisoned writes.
  Status write_error() const;

  // After a failed write: checks that the file system takes writes again (a
  // probe file as large as the write-ahead logs a reopen converts, at least
  // 1 MiB, written, synced and removed), then closes the database and opens
  // it again, which starts a new log after the last complete record. On
  // success writes are accepted again. If the reopen itself fails, the
  // database is opened read-only so reads go on, writes stay refused, and
  // the error is returned; a later call tries again. Waits up to `wait_ms`
  // for the reads in flight and the iterators to finish (Unavailable
  // otherwise, nothing changed). REQUIRES: no concurrent Write.
  Status Reopen(uint64_t wait_ms);
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
  bool read_only() const { return read_only_; }

 private:
  Store() = default;
  // Opens the database at path_ through `env` with the options of Open.
  Result<std::unique_ptr<leveldb::DB>> OpenDb(leveldb::Env* env) const;
  Status ProbeWritable() const;
  // Closes db_ and opens it again (writable, else read-only); REQUIRES the
  // gate held exclusively and no iterator open.
  Status ReopenLocked();
  // Sets write_error_ and write_failed_ together.
  void SetWriteError(Status error) TIDEMAP_REQUIRES(write_error_mu_);

  std::string path_;
  leveldb::Env* env_ = nullptr;  // the base Env (the real file system unless a test's)
  bool read_only_ = false;
  size_t write_buffer_bytes_ = 0;
  // Declaration order matters: the DB is destroyed before the cache, filter
  // and Env it uses, and before the directory lock is released.
  std::unique_ptr<DirLock> dir_lock_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::Env> overlay_env_;  // a ReadOnlyEnv while opened read-only
  std::unique_ptr<leveldb::Options> db_options_;
  // Every use of db_ holds the gate shared; Reopen holds it exclusively.
  // db_ is null only after a Reopen whose two opens both failed.
  mutable std::shared_mutex gate_;
  std::unique_ptr<leveldb::DB> db_;
  mutable std::atomic<int> open_iterators_{0};

  mutable Mutex write_error_mu_;
  Status write_error_ TIDEMAP_GUARDED_BY(write_error_mu_);  // OK until a write fails
  std::atomic<bool> write_failed_{false};                   // !write_error_.ok()
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_STORAGE_H_
