#include <tidemap/storage/read_only_env_internal.h>

#include <leveldb/helpers/memenv.h>

#include <algorithm>
#include <cstdarg>
#include <utility>

namespace tidemap {

namespace {

// LevelDB's info log of a read-only open goes nowhere.
class DiscardLogger : public leveldb::Logger {
 public:
  void Logv(const char* /*format*/, std::va_list /*ap*/) override {}
};

}  // namespace

ReadOnlyEnv::ReadOnlyEnv(leveldb::Env* base)
    : leveldb::EnvWrapper(base), overlay_(leveldb::NewMemEnv(base)) {}

ReadOnlyEnv::~ReadOnlyEnv() = default;

bool ReadOnlyEnv::OnBase(const std::string& f) {
  if (overlay_->FileExists(f)) return false;
  {
    MutexLock l(&mu_);
    if (hidden_.count(f) != 0) return false;
  }
  return target()->FileExists(f);
}

void ReadOnlyEnv::Hide(const std::string& f) {
  MutexLock l(&mu_);
  hidden_.insert(f);
}

void ReadOnlyEnv::Unhide(const std::string& f) {
  MutexLock l(&mu_);
  hidden_.erase(f);
}

leveldb::Status ReadOnlyEnv::CopyUp(const std::string& f) {
  std::string bytes;
  leveldb::Status s = leveldb::ReadFileToString(target(), f, &bytes);
  if (s.ok()) s = leveldb::WriteStringToFile(overlay_.get(), bytes, f);
  return s;
}

leveldb::Status ReadOnlyEnv::NewSequentialFile(const std::string& f, leveldb::SequentialFile** r) {
  if (OnBase(f)) return target()->NewSequentialFile(f, r);
  return overlay_->NewSequentialFile(f, r);
}

leveldb::Status ReadOnlyEnv::NewRandomAccessFile(const std::string& f,
                                                 leveldb::RandomAccessFile** r) {
  if (OnBase(f)) return target()->NewRandomAccessFile(f, r);
  return overlay_->NewRandomAccessFile(f, r);
}

leveldb::Status ReadOnlyEnv::NewWritableFile(const std::string& f, leveldb::WritableFile** r) {
  Unhide(f);  // the overlay's new file shadows the base's from now on
  return overlay_->NewWritableFile(f, r);
}

leveldb::Status ReadOnlyEnv::NewAppendableFile(const std::string& f, leveldb::WritableFile** r) {
  if (OnBase(f)) {
    leveldb::Status s = CopyUp(f);
    if (!s.ok()) return s;
  }
  return overlay_->NewAppendableFile(f, r);
}

bool ReadOnlyEnv::FileExists(const std::string& f) { return overlay_->FileExists(f) || OnBase(f); }

leveldb::Status ReadOnlyEnv::GetChildren(const std::string& dir, std::vector<std::string>* r) {
  r->clear();
  std::vector<std::string> base, written;
  const leveldb::Status s = target()->GetChildren(dir, &base);
  (void)overlay_->GetChildren(dir, &written);
  if (!s.ok() && written.empty()) return s;
  for (std::string& name : base) {
    if (OnBase(dir + "/" + name)) r->push_back(std::move(name));
  }
  for (std::string& name : written) {
    if (std::find(r->begin(), r->end(), name) == r->end()) r->push_back(std::move(name));
  }
  return leveldb::Status::OK();
}

leveldb::Status ReadOnlyEnv::RemoveFile(const std::string& f) {
  const bool written = overlay_->FileExists(f);
  if (written) (void)overlay_->RemoveFile(f);
  if (target()->FileExists(f)) {
    Hide(f);
  } else if (!written) {
    return leveldb::Status::NotFound(f);
  }
  return leveldb::Status::OK();
}

leveldb::Status ReadOnlyEnv::CreateDir(const std::string& /*d*/) { return leveldb::Status::OK(); }

leveldb::Status ReadOnlyEnv::RemoveDir(const std::string& /*d*/) { return leveldb::Status::OK(); }

leveldb::Status ReadOnlyEnv::GetFileSize(const std::string& f, uint64_t* s) {
  if (OnBase(f)) return target()->GetFileSize(f, s);
  return overlay_->GetFileSize(f, s);
}

leveldb::Status ReadOnlyEnv::RenameFile(const std::string& src, const std::string& target_name) {
  if (OnBase(src)) {
    leveldb::Status s = CopyUp(src);
    if (!s.ok()) return s;
  }
  leveldb::Status s = overlay_->RenameFile(src, target_name);
  if (!s.ok()) return s;
  if (target()->FileExists(src)) Hide(src);
  Unhide(target_name);
  return s;
}

leveldb::Status ReadOnlyEnv::LockFile(const std::string& f, leveldb::FileLock** l) {
  return overlay_->LockFile(f, l);
}

leveldb::Status ReadOnlyEnv::UnlockFile(leveldb::FileLock* l) { return overlay_->UnlockFile(l); }

leveldb::Status ReadOnlyEnv::NewLogger(const std::string& /*f*/, leveldb::Logger** r) {
  *r = new DiscardLogger;
  return leveldb::Status::OK();
}

}  // namespace tidemap
