// FaultEnv: a LevelDB Env for crash tests. It models a machine crash that
// loses whatever was written to a file but not yet synced, and can make writes
// fail to test how errors propagate.
//
// Usage:
//   std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
//   FaultEnv env(mem.get());
//   ... open a DB with options.env = &env, write, delete the DB ...
//   ASSERT_TRUE(env.DropUnsyncedData().ok());   // the "crash"
//   ... reopen and check what survived ...
//
// The crash model: each file written through NewWritableFile/NewAppendableFile
// keeps the prefix that WritableFile::Sync had covered when the crash happens;
// a file created and never synced survives empty. RenameFile carries a file's
// synced length to its new name; RemoveFile forgets it. Directory operations
// (create, rename, remove) are taken as durable as soon as they return: the
// model does not lose names, only bytes, which is the weakest guarantee
// LevelDB's recovery has to cope with on a journaling file system.
// Files the Env did not write (present before it was created, or written
// before the last DropUnsyncedData/ResetState) count as fully synced.
#ifndef TIDEMAP_TESTS_SUPPORT_FAULT_ENV_H_
#define TIDEMAP_TESTS_SUPPORT_FAULT_ENV_H_

#include <leveldb/env.h>
#include <leveldb/status.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include <tidemap/base/mutex.h>

namespace tidemap::testing {

// Thread-safe: LevelDB calls it from its own threads (background compaction).
// `base` must outlive this Env, and this Env every file it opened.
class FaultEnv : public leveldb::EnvWrapper {
 public:
  explicit FaultEnv(leveldb::Env* base);
  ~FaultEnv() override;

  FaultEnv(const FaultEnv&) = delete;
  FaultEnv& operator=(const FaultEnv&) = delete;

  leveldb::Status NewWritableFile(const std::string& fname,
                                  leveldb::WritableFile** result) override;
  leveldb::Status NewAppendableFile(const std::string& fname,
                                    leveldb::WritableFile** result) override;
  leveldb::Status RemoveFile(const std::string& fname) override;
  leveldb::Status RenameFile(const std::string& src, const std::string& target) override;

  // The crash: truncates every tracked file to its synced length, through the
  // base Env, then forgets the tracking (what is left is now all durable).
  // REQUIRES: no file written through this Env is still open, i.e. the DB was
  // deleted. Returns the first error of the base Env, if any.
  leveldb::Status DropUnsyncedData();

  // While `fail` is true, WritableFile::Append and Sync on files of this Env
  // write nothing and return an IOError.
  void SetWriteError(bool fail);
  // While `full` is true, Append and Sync fail as on a full file system:
  // an IOError whose message is strerror(ENOSPC), "No space left on device".
  void SetNoSpace(bool full);
  // While `fail` is true, WritableFile::Sync fails with an IOError after the
  // bytes appended so far reached the base Env (a failed fsync: the data may
  // be there or not).
  void SetSyncError(bool fail);

  // Calls `hook` with the file's name at the start of every WritableFile::Sync
  // (to count syncs, or make them slow). Set it before the Env is in use.
  void SetSyncHook(std::function<void(const std::string& fname)> hook) {
    sync_hook_ = std::move(hook);
  }

  // Forgets the tracking (everything written so far counts as synced) and
  // clears the write error.
  void ResetState();

  // The number of files that would lose bytes in DropUnsyncedData now.
  int UnsyncedFileCount();

 private:
  class File;

  struct Tracked {
    std::string name;
    uint64_t written_bytes = 0;
    uint64_t synced_bytes = 0;
  };

  // Starts tracking `fname` under a new id, replacing any previous tracking of it.
  uint64_t Track(const std::string& fname, uint64_t written_bytes, uint64_t synced_bytes)
      TIDEMAP_REQUIRES(mu_);
  void Untrack(const std::string& fname) TIDEMAP_REQUIRES(mu_);
  // Called by File after a successful Append or Sync. An id that is no longer
  // tracked (file removed, replaced, or state dropped) is ignored.
  void OnAppend(uint64_t id, uint64_t bytes) TIDEMAP_EXCLUDES(mu_);
  void OnSync(uint64_t id) TIDEMAP_EXCLUDES(mu_);
  bool write_error() const { return write_error_.load(std::memory_order_relaxed) || no_space(); }
  bool no_space() const { return no_space_.load(std::memory_order_relaxed); }
  // The message of an injected error: ENOSPC's when SetNoSpace is on.
  std::string ErrorText(const char* injected) const;
  bool sync_error() const { return sync_error_.load(std::memory_order_relaxed); }
  // Rewrites `fname` in the base Env with only its first `length` bytes.
  leveldb::Status Truncate(const std::string& fname, uint64_t length);

  Mutex mu_;
  uint64_t next_id_ TIDEMAP_GUARDED_BY(mu_) = 1;
  // Tracked files by id; an open File refers to its entry by id, so a rename
  // moves the entry's name and a removal simply orphans the File.
  std::map<uint64_t, Tracked> files_ TIDEMAP_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> ids_by_name_ TIDEMAP_GUARDED_BY(mu_);
  std::atomic<bool> write_error_{false};
  std::atomic<bool> sync_error_{false};
  std::atomic<bool> no_space_{false};
  std::function<void(const std::string&)> sync_hook_;
};

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_FAULT_ENV_H_
