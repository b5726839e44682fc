// ReadOnlyEnv: a LevelDB Env that lets a database be opened without writing
// anything to its directory. Reads fall through to the base Env; everything
// LevelDB writes while it runs (the new log and manifest of an open, the
// table its log recovery flushes, CURRENT, its info log) goes to an
// in-memory overlay instead, and files it removes or renames away are only
// hidden. The database on disk is left exactly as it was, so a read-only
// command works on a full disk and never changes what the next writer opens.
//
// Used by Store for StoreOptions::read_only; internal to storage/.
//
// Thread-safety: safe for LevelDB's concurrent calls (it is an Env).
// Lifetimes: `base` must outlive this Env, and this Env every DB and file
// opened through it.
#ifndef TIDEMAP_STORAGE_READ_ONLY_ENV_INTERNAL_H_
#define TIDEMAP_STORAGE_READ_ONLY_ENV_INTERNAL_H_

#include <leveldb/env.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <tidemap/base/mutex.h>

namespace tidemap {

class ReadOnlyEnv : public leveldb::EnvWrapper {
 public:
  explicit ReadOnlyEnv(leveldb::Env* base);
  ~ReadOnlyEnv() override;

  leveldb::Status NewSequentialFile(const std::string& f, leveldb::SequentialFile** r) override;
  leveldb::Status NewRandomAccessFile(const std::string& f, leveldb::RandomAccessFile** r) override;
  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override;
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override;
  bool FileExists(const std::string& f) override;
  leveldb::Status GetChildren(const std::string& dir, std::vector<std::string>* r) override;
  leveldb::Status RemoveFile(const std::string& f) override;
  leveldb::Status CreateDir(const std::string& d) override;
  leveldb::Status RemoveDir(const std::string& d) override;
  leveldb::Status GetFileSize(const std::string& f, uint64_t* s) override;
  leveldb::Status RenameFile(const std::string& src, const std::string& target) override;
  leveldb::Status LockFile(const std::string& f, leveldb::FileLock** l) override;
  leveldb::Status UnlockFile(leveldb::FileLock* l) override;
  leveldb::Status NewLogger(const std::string& f, leveldb::Logger** r) override;

 private:
  // True when `f` is served by the base Env: not written here, not hidden.
  bool OnBase(const std::string& f) TIDEMAP_EXCLUDES(mu_);
  // Moves `f` into the overlay (its bytes copied from the base), so that it
  // can be appended to or renamed.
  leveldb::Status CopyUp(const std::string& f) TIDEMAP_EXCLUDES(mu_);
  void Hide(const std::string& f) TIDEMAP_EXCLUDES(mu_);
  void Unhide(const std::string& f) TIDEMAP_EXCLUDES(mu_);

  std::unique_ptr<leveldb::Env> overlay_;  // leveldb::NewMemEnv: the files written here
  Mutex mu_;
  std::set<std::string> hidden_ TIDEMAP_GUARDED_BY(mu_);  // base files removed or renamed away
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_READ_ONLY_ENV_INTERNAL_H_
