#include "tests/support/fault_env.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace tidemap::testing {

// Forwards to the base Env's file and reports appended and synced bytes to the
// FaultEnv by id (never by name: LevelDB may rename a file it still has open).
class FaultEnv::File : public leveldb::WritableFile {
 public:
  File(FaultEnv* env, uint64_t id, std::string fname, leveldb::WritableFile* base)
      : env_(env), id_(id), fname_(std::move(fname)), base_(base) {}

  leveldb::Status Append(const leveldb::Slice& data) override {
    if (env_->write_error()) {
      return leveldb::Status::IOError(fname_, env_->ErrorText("injected append error"));
    }
    leveldb::Status s = base_->Append(data);
    if (s.ok()) env_->OnAppend(id_, data.size());
    return s;
  }

  leveldb::Status Close() override { return base_->Close(); }

  // Flush hands data to the OS; it survives a process crash but not a machine
  // crash, so it does not count as synced.
  leveldb::Status Flush() override { return base_->Flush(); }

  leveldb::Status Sync() override {
    if (env_->sync_hook_) env_->sync_hook_(fname_);
    if (env_->write_error() || env_->sync_error()) {
      return leveldb::Status::IOError(fname_, env_->ErrorText("injected sync error"));
    }
    leveldb::Status s = base_->Sync();
    if (s.ok()) env_->OnSync(id_);
    return s;
  }

 private:
  FaultEnv* const env_;
  const uint64_t id_;
  const std::string fname_;
  const std::unique_ptr<leveldb::WritableFile> base_;
};

FaultEnv::FaultEnv(leveldb::Env* base) : EnvWrapper(base) {}

FaultEnv::~FaultEnv() = default;

leveldb::Status FaultEnv::NewWritableFile(const std::string& fname,
                                          leveldb::WritableFile** result) {
  *result = nullptr;
  leveldb::WritableFile* base_file = nullptr;
  leveldb::Status s = target()->NewWritableFile(fname, &base_file);
  if (!s.ok()) return s;
  uint64_t id;
  {
    MutexLock lock(&mu_);
    // A new writable file starts empty: even a previously durable one is gone.
    id = Track(fname, 0, 0);
  }
  *result = new File(this, id, fname, base_file);
  return s;
}

leveldb::Status FaultEnv::NewAppendableFile(const std::string& fname,
                                            leveldb::WritableFile** result) {
  *result = nullptr;
  leveldb::WritableFile* base_file = nullptr;
  leveldb::Status s = target()->NewAppendableFile(fname, &base_file);
  if (!s.ok()) return s;
  uint64_t id;
  {
    MutexLock lock(&mu_);
    auto it = ids_by_name_.find(fname);
    if (it != ids_by_name_.end()) {
      id = it->second;  // still has unsynced bytes from an earlier writer
    } else {
      // Whatever the file held before this Env wrote to it is durable.
      uint64_t size = 0;
      s = target()->GetFileSize(fname, &size);
      if (!s.ok()) {
        delete base_file;
        return s;
      }
      id = Track(fname, size, size);
    }
  }
  *result = new File(this, id, fname, base_file);
  return s;
}

leveldb::Status FaultEnv::RemoveFile(const std::string& fname) {
  leveldb::Status s = target()->RemoveFile(fname);
  if (s.ok()) {
    MutexLock lock(&mu_);
    Untrack(fname);
  }
  return s;
}

leveldb::Status FaultEnv::RenameFile(const std::string& src, const std::string& target_name) {
  leveldb::Status s = target()->RenameFile(src, target_name);
  if (!s.ok()) return s;
  MutexLock lock(&mu_);
  // The target's old contents are gone whatever they were.
  Untrack(target_name);
  auto it = ids_by_name_.find(src);
  if (it != ids_by_name_.end()) {
    const uint64_t id = it->second;
    ids_by_name_.erase(it);
    ids_by_name_[target_name] = id;
    files_[id].name = target_name;
  }
  return s;
}

leveldb::Status FaultEnv::DropUnsyncedData() {
  MutexLock lock(&mu_);
  leveldb::Status result;
  for (const auto& [id, file] : files_) {
    if (file.written_bytes == file.synced_bytes) continue;
    leveldb::Status s = Truncate(file.name, file.synced_bytes);
    if (result.ok() && !s.ok()) result = s;
  }
  files_.clear();
  ids_by_name_.clear();
  return result;
}

void FaultEnv::SetWriteError(bool fail) { write_error_.store(fail, std::memory_order_relaxed); }
void FaultEnv::SetSyncError(bool fail) { sync_error_.store(fail, std::memory_order_relaxed); }
void FaultEnv::SetNoSpace(bool full) { no_space_.store(full, std::memory_order_relaxed); }

std::string FaultEnv::ErrorText(const char* injected) const {
  return no_space() ? std::string(std::strerror(ENOSPC)) : std::string(injected);
}

void FaultEnv::ResetState() {
  MutexLock lock(&mu_);
  files_.clear();
  ids_by_name_.clear();
  write_error_.store(false, std::memory_order_relaxed);
  sync_error_.store(false, std::memory_order_relaxed);
}

int FaultEnv::UnsyncedFileCount() {
  MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [id, file] : files_) {
    if (file.written_bytes != file.synced_bytes) ++n;
  }
  return n;
}

uint64_t FaultEnv::Track(const std::string& fname, uint64_t written_bytes, uint64_t synced_bytes) {
  Untrack(fname);
  const uint64_t id = next_id_++;
  files_[id] = Tracked{fname, written_bytes, synced_bytes};
  ids_by_name_[fname] = id;
  return id;
}

void FaultEnv::Untrack(const std::string& fname) {
  auto it = ids_by_name_.find(fname);
  if (it == ids_by_name_.end()) return;
  files_.erase(it->second);
  ids_by_name_.erase(it);
}

void FaultEnv::OnAppend(uint64_t id, uint64_t bytes) {
  MutexLock lock(&mu_);
  auto it = files_.find(id);
  if (it != files_.end()) it->second.written_bytes += bytes;
}

void FaultEnv::OnSync(uint64_t id) {
  MutexLock lock(&mu_);
  auto it = files_.find(id);
  if (it != files_.end()) it->second.synced_bytes = it->second.written_bytes;
}

leveldb::Status FaultEnv::Truncate(const std::string& fname, uint64_t length) {
  // MemEnv has no truncate: read the prefix, then write it back as a new file.
  std::string prefix;
  {
    leveldb::SequentialFile* raw = nullptr;
    leveldb::Status s = target()->NewSequentialFile(fname, &raw);
    if (!s.ok()) return s;
    std::unique_ptr<leveldb::SequentialFile> in(raw);
    std::vector<char> scratch(64 << 10);
    while (prefix.size() < length) {
      leveldb::Slice chunk;
      const size_t want = static_cast<size_t>(
          std::min<uint64_t>(length - prefix.size(), static_cast<uint64_t>(scratch.size())));
      s = in->Read(want, &chunk, scratch.data());
      if (!s.ok()) return s;
      if (chunk.empty()) break;  // the file is shorter than its synced length
      prefix.append(chunk.data(), chunk.size());
    }
  }
  leveldb::WritableFile* raw = nullptr;
  leveldb::Status s = target()->NewWritableFile(fname, &raw);
  if (!s.ok()) return s;
  std::unique_ptr<leveldb::WritableFile> out(raw);
  s = out->Append(prefix);
  if (s.ok()) s = out->Sync();
  if (s.ok()) s = out->Close();
  return s;
}

}  // namespace tidemap::testing
