#include <tidemap/storage/leveldb_options_internal.h>

#include <leveldb/cache.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>

namespace tidemap {

namespace {
// Bloom filter bits per key: LevelDB's recommended setting, about 1% false
// positives, so a point read of an absent key rarely touches a data block.
constexpr int kBloomBitsPerKey = 10;
}  // namespace

leveldb::Options LevelDbOptions(const StoreOptions& options, std::unique_ptr<leveldb::Cache>* cache,
                                std::unique_ptr<const leveldb::FilterPolicy>* filter) {
  cache->reset(leveldb::NewLRUCache(options.block_cache_bytes));
  filter->reset(leveldb::NewBloomFilterPolicy(kBloomBitsPerKey));
  leveldb::Options opts;
  opts.create_if_missing = options.create_if_missing;
  // Every block read from a table is checked; our own rows carry their own
  // checksums on top (storage/rows.cc).
  opts.paranoid_checks = true;
  opts.env = options.env != nullptr ? options.env : leveldb::Env::Default();
  opts.block_cache = cache->get();
  opts.filter_policy = filter->get();
  opts.write_buffer_size = options.write_buffer_bytes;
  opts.info_log = nullptr;
  return opts;
}

}  // namespace tidemap
