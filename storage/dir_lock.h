// DirLock: one process per database directory, whatever happens to the files in it.
//
// LevelDB's own lock is an fcntl lock on DIR/LOCK: delete that file while a
// process holds it and the next opener creates a new LOCK, locks it, and opens
// the same database a second time (each process then rewrites the other's
// manifest and logs, and writes one of them acknowledged are lost). A DirLock
// is an flock(2) on the directory itself: no file inside it can be removed to
// defeat it, and the kernel releases it when the process dies, so a crash never
// leaves a stale lock behind.
//
// flock locks belong to an open file description, so a second DirLock on the
// same directory conflicts even inside one process. The descriptor is opened
// close-on-exec: a child the holder spawns does not inherit the lock.
//
// Thread-safety: Acquire and HolderPid may be called from any thread.
#ifndef TIDEMAP_STORAGE_DIR_LOCK_H_
#define TIDEMAP_STORAGE_DIR_LOCK_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <tidemap/base/status.h>

namespace tidemap {

class DirLock {
 public:
  // Locks the existing directory `dir` without waiting. Errors:
  //   Unavailable  another open description holds it: "DIR is in use by pid N"
  //                (or "by another process" when the holder cannot be named);
  //   NotFound     `dir` does not exist;
  //   IOError      `dir` cannot be opened or locked for another reason.
  static Result<std::unique_ptr<DirLock>> Acquire(const std::string& dir);

  // The pid of the process holding an flock on `dir`, read from /proc/locks
  // (Linux); nullopt when nobody holds one or it cannot be told.
  static std::optional<int64_t> HolderPid(const std::string& dir);

  // Releases the lock.
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_DIR_LOCK_H_
