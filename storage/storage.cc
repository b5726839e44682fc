#include "storage/storage.h"

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "storage/key_order_sorter_internal.h"

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

StoreIterator::StoreIterator(leveldb::Iterator* it) : it_(it) {}
StoreIterator::~StoreIterator() = default;
void StoreIterator::Seek(std::string_view key) { it_->Seek(ToSlice(key)); }
bool StoreIterator::Valid() const { return it_->Valid(); }
void StoreIterator::Next() { it_->Next(); }
std::string_view StoreIterator::key() const { return ToView(it_->key()); }
std::string_view StoreIterator::value() const { return ToView(it_->value()); }
Status StoreIterator::status() const { return FromLevelDb(it_->status(), "iterator"); }

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  std::unique_ptr<Store> store(new Store());
  store->path_ = options.path;
  store->env_ = options.env != nullptr ? options.env : leveldb::Env::Default();
  store->cache_.reset(leveldb::NewLRUCache(options.block_cache_bytes));
  store->filter_.reset(leveldb::NewBloomFilterPolicy(10));

  leveldb::Options opts;
  opts.create_if_missing = options.create_if_missing;
  opts.paranoid_checks = true;
  opts.env = store->env_;
  opts.block_cache = store->cache_.get();
  opts.filter_policy = store->filter_.get();
  opts.write_buffer_size = options.write_buffer_bytes;
  opts.info_log = nullptr;

  leveldb::DB* db = nullptr;
  const leveldb::Status s = leveldb::DB::Open(opts, options.path, &db);
  if (!s.ok()) {
    const std::string reason = s.ToString();
    // LevelDB reports a held LOCK file as an IO error; it is the "in use" case.
    if (reason.find("/LOCK") != std::string::npos &&
        (reason.find("already held") != std::string::npos ||
         reason.find("temporarily unavailable") != std::string::npos ||
         reason.find("lock ") != std::string::npos)) {
      return Status::Unavailable("database " + options.path +
                                 " is in use by another process (its LOCK is held)");
    }
    if (s.IsInvalidArgument() && reason.find("does not exist") != std::string::npos) {
      return Status::NotFound("no database at " + options.path);
    }
    return FromLevelDb(s, "open " + options.path);
  }
  store->db_.reset(db);
  return store;
}

Store::~Store() = default;

Status Store::Write(Batch* batch, bool sync) {
  {
    std::lock_guard<std::mutex> l(write_error_mu_);
    if (!write_error_.ok()) return write_error_;
  }
  leveldb::WriteOptions wo;
  wo.sync = sync;
  Status s = FromLevelDb(db_->Write(wo, batch->rep_.get()), "write to " + path_);
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(write_error_mu_);
    if (write_error_.ok()) {
      write_error_ =
          Status::IOError(s.message() + " (writes are refused until the database is reopened)");
    }
    return write_error_;
  }
  return s;
}

Result<std::string> Store::Get(std::string_view key) const {
  std::string value;
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  const leveldb::Status s = db_->Get(ro, ToSlice(key), &value);
  if (s.IsNotFound()) return Status::NotFound("not found");
  if (!s.ok()) return FromLevelDb(s, "read from " + path_);
  return value;
}

std::unique_ptr<StoreIterator> Store::NewIterator() const {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  return std::unique_ptr<StoreIterator>(new StoreIterator(db_->NewIterator(ro)));
}

uint64_t Store::ApproximateBytes(std::string_view begin, std::string_view end) const {
  leveldb::Range range(ToSlice(begin), ToSlice(end));
  uint64_t size = 0;
  db_->GetApproximateSizes(&range, 1, &size);
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
  db_->CompactRange(&b, &e);
}

}  // namespace tidemap
