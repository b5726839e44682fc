#include <tidemap/storage/storage.h>

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tidemap/storage/dir_lock.h>
#include <tidemap/storage/key_order_sorter_internal.h>
#include <tidemap/storage/leveldb_options_internal.h>
#include <tidemap/storage/read_only_env_internal.h>

namespace tidemap {

namespace {

leveldb::Slice ToSlice(std::string_view s) { return leveldb::Slice(s.data(), s.size()); }
std::string_view ToView(const leveldb::Slice& s) { return std::string_view(s.data(), s.size()); }

Status FromLevelDb(const leveldb::Status& s, std::string_view context) {
  if (s.ok()) return Status::Ok();
  std::string msg(context);
  msg += ": ";
  msg += s.ToString();
  if (s.IsNotFound()) return Status::NotFound(std::move(msg));
  if (s.IsCorruption()) return Status::Corruption(std::move(msg));
  if (s.IsInvalidArgument()) return Status::InvalidArgument(std::move(msg));
  return Status::IOError(std::move(msg));
}

Status ClosedError(const std::string& path) {
  return Status::IOError("database " + path +
                         " is closed: it could not be opened again after a storage error");
}

}  // namespace

std::string_view DurabilityName(Durability d) {
  return d == Durability::kSync ? "sync" : "relaxed";
}

Result<Durability> ParseDurability(std::string_view text) {
  if (text == "sync") return Durability::kSync;
  if (text == "relaxed") return Durability::kRelaxed;
  return Status::InvalidArgument("durability must be \"sync\" or \"relaxed\", not \"" +
                                 std::string(text) + "\"");
}

Batch::Batch() : rep_(std::make_unique<leveldb::WriteBatch>()) {}
Batch::~Batch() = default;
Batch::Batch(Batch&&) noexcept = default;
Batch& Batch::operator=(Batch&&) noexcept = default;

void Batch::Put(std::string_view key, std::string_view value) {
  rep_->Put(ToSlice(key), ToSlice(value));
}
void Batch::Delete(std::string_view key) { rep_->Delete(ToSlice(key)); }
void Batch::Clear() { rep_->Clear(); }
size_t Batch::ApproximateBytes() const { return rep_->ApproximateSize(); }
void Batch::Append(const Batch& other) { rep_->Append(*other.rep_); }
// An empty WriteBatch is exactly its 12-byte header (sequence + count).
bool Batch::empty() const { return rep_->ApproximateSize() <= 12; }

void Batch::SortByKey() {
  if (sorter_ == nullptr) sorter_ = std::make_unique<KeyOrderSorter>();
  if (spare_ == nullptr) spare_ = std::make_unique<leveldb::WriteBatch>();
  sorter_->Sort(*rep_, spare_.get());
  std::swap(rep_, spare_);
}

StoreIterator::StoreIterator(leveldb::Iterator* it, std::atomic<int>* open_count)
    : it_(it), open_count_(open_count) {
  open_count_->fetch_add(1, std::memory_order_relaxed);
}
StoreIterator::~StoreIterator() {
  it_.reset();
  open_count_->fetch_sub(1, std::memory_order_release);  // Reopen may close the DB now
}
void StoreIterator::Seek(std::string_view key) { it_->Seek(ToSlice(key)); }
bool StoreIterator::Valid() const { return it_->Valid(); }
void StoreIterator::Next() { it_->Next(); }
std::string_view StoreIterator::key() const { return ToView(it_->key()); }
std::string_view StoreIterator::value() const { return ToView(it_->value()); }
Status StoreIterator::status() const { return FromLevelDb(it_->status(), "iterator"); }

namespace {

bool IsRealFileSystem(const leveldb::Env* env) {
  return env == nullptr || env == leveldb::Env::Default();
}

// A file that holds data of a LevelDB database: a table, a write-ahead log or
// a manifest (not LOCK, LOG or LOG.old, which LevelDB recreates freely).
bool IsLevelDbDataFile(std::string_view name) {
  const auto ends_with = [&](std::string_view suffix) {
    return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  return name.substr(0, 9) == "MANIFEST-" || ends_with(".ldb") || ends_with(".sst") ||
         ends_with(".log");
}

std::vector<std::string> DataFilesIn(leveldb::Env* env, const std::string& path) {
  std::vector<std::string> children, data;
  if (!env->GetChildren(path, &children).ok()) return data;
  for (std::string& child : children) {
    if (IsLevelDbDataFile(child)) data.push_back(std::move(child));
  }
  std::sort(data.begin(), data.end());
  return data;
}

// Asked to create a missing database, LevelDB takes a directory without
// CURRENT for an empty one: it writes a new manifest and then deletes every
// table and log file that manifest does not list, which is all of them. So a
// directory with data files and no CURRENT is refused whatever
// create_if_missing says, and nothing is created when it is false.
Status CheckCurrent(leveldb::Env* env, const std::string& path, bool create_if_missing) {
  const std::string current = path + "/CURRENT";
  if (env->FileExists(current)) return Status::Ok();
  const std::vector<std::string> data = DataFilesIn(env, path);
  if (!data.empty()) {
    return Status::Corruption(current + " is missing, but the database holds " +
                              std::to_string(data.size()) + " data files (" + data.front() +
                              ", ...): refusing to open it, which would start a new database "
                              "and delete them");
  }
  if (!create_if_missing) return Status::NotFound("no database at " + path);
  return Status::Ok();
}

// Takes the DirLock on `path` (creating the directory first when asked).
Result<std::unique_ptr<DirLock>> LockDirectory(leveldb::Env* env, const std::string& path,
                                               bool create_if_missing) {
  if (create_if_missing) (void)env->CreateDir(path);  // exists already: fine
  auto lock = DirLock::Acquire(path);
  if (lock.status().IsNotFound()) return Status::NotFound("no database at " + path);
  if (lock.status().IsUnavailable()) {
    return Status::Unavailable("database " + lock.status().message());
  }
  return lock;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  std::unique_ptr<Store> store(new Store());
  store->path_ = options.path;
  store->env_ = options.env != nullptr ? options.env : leveldb::Env::Default();
  store->read_only_ = options.read_only;
  store->write_buffer_bytes_ = options.write_buffer_bytes;
  const bool create = options.create_if_missing && !options.read_only;
  if (IsRealFileSystem(options.env)) {
    TIDEMAP_ASSIGN_OR_RETURN(store->dir_lock_, LockDirectory(store->env_, options.path, create));
  }
  TIDEMAP_RETURN_IF_ERROR(CheckCurrent(store->env_, options.path, create));
  StoreOptions db_options = options;
  db_options.create_if_missing = create;
  store->db_options_ = std::make_unique<leveldb::Options>(
      LevelDbOptions(db_options, &store->cache_, &store->filter_));
  leveldb::Env* env = store->env_;
  if (options.read_only) {
    store->overlay_env_ = std::make_unique<ReadOnlyEnv>(store->env_);
    env = store->overlay_env_.get();
  }
  TIDEMAP_ASSIGN_OR_RETURN(store->db_, store->OpenDb(env));
  return store;
}

Result<std::unique_ptr<leveldb::DB>> Store::OpenDb(leveldb::Env* env) const {
  leveldb::Options opts = *db_options_;
  opts.env = env;
  leveldb::DB* db = nullptr;
  const leveldb::Status s = leveldb::DB::Open(opts, path_, &db);
  if (s.ok()) return std::unique_ptr<leveldb::DB>(db);
  const std::string reason = s.ToString();
  // LevelDB reports a held LOCK file as an IO error; it is the "in use" case
  // (another process on a custom Env, which takes no DirLock).
  if (reason.find("/LOCK") != std::string::npos &&
      (reason.find("already held") != std::string::npos ||
       reason.find("temporarily unavailable") != std::string::npos ||
       reason.find("lock ") != std::string::npos)) {
    return Status::Unavailable("database " + path_ +
                               " is in use by another process (its LOCK is held)");
  }
  if (s.IsInvalidArgument() && reason.find("does not exist") != std::string::npos) {
    return Status::NotFound("no database at " + path_);
  }
  return FromLevelDb(s, "open " + path_);
}

namespace {

// Keeps the lines of RepairDB's log that say it dropped or ignored something
// (a corrupt log record, a table entry it could not read), for the report.
class RepairLog : public leveldb::Logger {
 public:
  explicit RepairLog(StoreRepairReport* report) : report_(report) {}
  void Logv(const char* format, std::va_list ap) override {
    char line[512];
    std::vsnprintf(line, sizeof(line), format, ap);
    const std::string_view text(line);
    if (text.find("dropping") == text.npos && text.find("ignoring") == text.npos) return;
    ++report_->problems;
    if (report_->problem_lines.size() < kRepairProblemLinesMax) {
      report_->problem_lines.emplace_back(text);
    }
  }

 private:
  StoreRepairReport* report_;
};

size_t TablesIn(leveldb::Env* env, const std::string& path) {
  size_t n = 0;
  for (const std::string& f : DataFilesIn(env, path)) {
    n += f.find(".ldb") != f.npos || f.find(".sst") != f.npos;
  }
  return n;
}

}  // namespace

Result<StoreRepairReport> Store::Repair(const std::string& path) {
  leveldb::Env* env = leveldb::Env::Default();
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DirLock> lock,
                           LockDirectory(env, path, /*create_if_missing=*/false));
  StoreRepairReport report;
  // RepairDB moves every file it is done with to lost/ (logs it converted,
  // old manifests); of those, only tables mean data it could not read.
  const std::string lost_dir = path + "/lost";
  const size_t lost_tables_before = TablesIn(env, lost_dir);
  RepairLog log(&report);
  leveldb::Options opts;
  opts.env = env;
  // Checksums verified, so that a damaged block is dropped (and its table
  // rewritten without it) rather than kept for every later read to trip on.
  opts.paranoid_checks = true;
  opts.info_log = &log;
  TIDEMAP_RETURN_IF_ERROR(FromLevelDb(leveldb::RepairDB(path, opts), "repair " + path));
  report.tables_lost = TablesIn(env, lost_dir) - lost_tables_before;
  report.tables_after = TablesIn(env, path);
  return report;
}

Store::~Store() {
  std::unique_lock gate(gate_);
  db_.reset();  // before the Env it may have been opened through
}

// The probe is as large as the logs a reopen turns into a table, so that a
// reopen that starts is likely to finish.
constexpr uint64_t kProbeBytesMin = uint64_t{1} << 20;
constexpr size_t kProbeChunkBytes = 64 << 10;
constexpr const char* kProbeName = "/write-probe.tmp";  // not a name LevelDB owns

Status Store::ProbeWritable() const {
  uint64_t log_bytes = 0;
  for (const std::string& f : DataFilesIn(env_, path_)) {
    uint64_t size = 0;
    if (f.find(".log") != f.npos && env_->GetFileSize(path_ + "/" + f, &size).ok()) {
      log_bytes += size;
    }
  }
  const uint64_t bytes = std::max<uint64_t>(kProbeBytesMin, log_bytes + write_buffer_bytes_);
  const std::string probe = path_ + kProbeName;
  leveldb::WritableFile* file = nullptr;
  leveldb::Status s = env_->NewWritableFile(probe, &file);
  const std::string chunk(kProbeChunkBytes, '\0');
  for (uint64_t done = 0; s.ok() && done < bytes; done += chunk.size()) s = file->Append(chunk);
  if (s.ok()) s = file->Sync();
  if (file != nullptr) {
    const leveldb::Status closed = file->Close();
    if (s.ok()) s = closed;
    delete file;
  }
  (void)env_->RemoveFile(probe);
  return FromLevelDb(s, "the storage of " + path_ + " still fails");
}

Status Store::Reopen(uint64_t wait_ms) {
  if (read_only_) return Status::Refused("database " + path_ + " is open read-only");
  TIDEMAP_RETURN_IF_ERROR(ProbeWritable());
  std::unique_lock gate(gate_);
  // No iterator can be created while the gate is held: the count only falls.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (open_iterators_.load(std::memory_order_acquire) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::Unavailable("database " + path_ +
                                 ": reopen waited for the open iterators; try again");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ReopenLocked();
}

Status Store::ReopenLocked() {
  db_.reset();
  overlay_env_.reset();
  auto opened = OpenDb(env_);
  if (opened.ok()) {
    db_ = std::move(*opened);
    MutexLock l(&write_error_mu_);
    SetWriteError(Status::Ok());
    return Status::Ok();
  }
  // Reads go on from a read-only open, which writes nothing to the disk.
  overlay_env_ = std::make_unique<ReadOnlyEnv>(env_);
  auto read_only = OpenDb(overlay_env_.get());
  if (read_only.ok()) {
    db_ = std::move(*read_only);
  } else {
    overlay_env_.reset();
  }
  MutexLock l(&write_error_mu_);
  SetWriteError(Status::IOError(opened.status().message()));
  return write_error_;
}

Status Store::Write(Batch* batch, bool sync) {
  if (read_only_) return Status::Refused("database " + path_ + " is open read-only");
  TIDEMAP_RETURN_IF_ERROR(write_error());
  leveldb::WriteOptions wo;
  wo.sync = sync;
  Status s;
  {
    std::shared_lock gate(gate_);
    if (db_ == nullptr) return ClosedError(path_);
    s = FromLevelDb(db_->Write(wo, batch->rep_.get()), "write to " + path_);
  }
  if (s.ok()) return s;
  MutexLock l(&write_error_mu_);
  if (write_error_.ok()) SetWriteError(Status::IOError(s.message()));  // the first one stays
  return write_error_;
}

Status Store::write_error() const {
  // Every commit asks: while writes succeed, no lock is taken.
  if (!write_failed_.load(std::memory_order_acquire)) return Status::Ok();
  MutexLock l(&write_error_mu_);
  return write_error_;
}

void Store::SetWriteError(Status error) {
  write_error_ = std::move(error);
  write_failed_.store(!write_error_.ok(), std::memory_order_release);
}

Result<std::string> Store::Get(std::string_view key) const {
  std::string value;
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::shared_lock gate(gate_);
  if (db_ == nullptr) return ClosedError(path_);
  const leveldb::Status s = db_->Get(ro, ToSlice(key), &value);
  if (s.IsNotFound()) return Status::NotFound("not found");
  if (!s.ok()) return FromLevelDb(s, "read from " + path_);
  return value;
}

std::unique_ptr<StoreIterator> Store::NewIterator() const {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::shared_lock gate(gate_);
  leveldb::Iterator* it =
      db_ != nullptr
          ? db_->NewIterator(ro)
          : leveldb::NewErrorIterator(leveldb::Status::IOError(ClosedError(path_).message()));
  return std::unique_ptr<StoreIterator>(new StoreIterator(it, &open_iterators_));
}

uint64_t Store::ApproximateBytes(std::string_view begin, std::string_view end) const {
  leveldb::Range range(ToSlice(begin), ToSlice(end));
  uint64_t size = 0;
  std::shared_lock gate(gate_);
  if (db_ != nullptr) db_->GetApproximateSizes(&range, 1, &size);
  return size;
}

uint64_t Store::DiskBytes() const {
  std::vector<std::string> children;
  if (!env_->GetChildren(path_, &children).ok()) return 0;
  uint64_t total = 0;
  for (const std::string& child : children) {
    if (child == "." || child == "..") continue;  // POSIX readdir lists them
    uint64_t size = 0;
    if (env_->GetFileSize(path_ + "/" + child, &size).ok()) total += size;
  }
  return total;
}

void Store::CompactRange(std::string_view begin, std::string_view end) {
  const leveldb::Slice b = ToSlice(begin), e = ToSlice(end);
  std::shared_lock gate(gate_);
  if (db_ != nullptr) db_->CompactRange(&b, &e);
}

}  // namespace tidemap
