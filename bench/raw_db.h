// RawDb: the raw-LevelDB anchor of the benchmarks, a database opened with the
// options a replica's store uses (storage/leveldb_options_internal.h: its
// Bloom filter, block cache and memtable size), so a ratio to it measures
// what tidemap adds to LevelDB configured as tidemap configures it.
#ifndef TIDEMAP_BENCH_RAW_DB_H_
#define TIDEMAP_BENCH_RAW_DB_H_

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>

#include <memory>
#include <string>

#include <tidemap/storage/leveldb_options_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap::bench {

class RawDb {
 public:
  // The database at `path` (made when missing) through `env` (nullptr: the
  // real file system); nullptr with LevelDB's error in *error when it does
  // not open.
  static std::unique_ptr<RawDb> Open(const std::string& path, leveldb::Env* env,
                                     std::string* error) {
    std::unique_ptr<RawDb> raw(new RawDb());
    StoreOptions store_options;
    store_options.path = path;
    store_options.env = env;
    const leveldb::Options opts = LevelDbOptions(store_options, &raw->cache_, &raw->filter_);
    leveldb::DB* db = nullptr;
    const leveldb::Status s = leveldb::DB::Open(opts, path, &db);
    if (!s.ok()) {
      *error = s.ToString();
      return nullptr;
    }
    raw->db_.reset(db);
    return raw;
  }

  leveldb::DB* db() { return db_.get(); }

 private:
  RawDb() = default;
  // The DB goes before the cache and filter it uses.
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::DB> db_;
};

}  // namespace tidemap::bench

#endif  // TIDEMAP_BENCH_RAW_DB_H_
