// The LevelDB options a replica's database is opened with, in one place:
// Store::Open uses them, and so does the benchmarks' raw-LevelDB anchor
// (bench/replica_bench.cc), which must measure LevelDB configured exactly as
// the replica configures it. Internal to storage/ and bench/: not installed.
#ifndef TIDEMAP_STORAGE_LEVELDB_OPTIONS_INTERNAL_H_
#define TIDEMAP_STORAGE_LEVELDB_OPTIONS_INTERNAL_H_

#include <leveldb/options.h>

#include <memory>

#include <tidemap/storage/storage.h>

namespace tidemap {

// Returns the options for a database opened from `options`: paranoid checks
// on, `options.create_if_missing`, the memtable size
// `options.write_buffer_bytes`, no info log, and `options.env` (LevelDB's
// default Env when null).
//
// Ownership: LevelDB borrows the block cache and the filter policy its
// options point to. This creates both (an LRU cache of
// `options.block_cache_bytes` and a 10-bit-per-key Bloom filter), hands them
// to `*cache` and `*filter` (replacing what they held), and points the
// returned options at them. The caller must keep `*cache`, `*filter` and
// `options.env` alive until every DB opened with the returned options is
// destroyed; declaring the DB after them in the same object does that.
leveldb::Options LevelDbOptions(const StoreOptions& options, std::unique_ptr<leveldb::Cache>* cache,
                                std::unique_ptr<const leveldb::FilterPolicy>* filter);

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_LEVELDB_OPTIONS_INTERNAL_H_
