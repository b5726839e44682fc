// Replica benchmarks against the raw limit beneath them: LevelDB alone, opened
// with the options storage/storage.cc uses, writing rows of the same shape.
//
// Every logical write is a 16-byte key and a 100-byte value. The raw writer
// puts, per logical write, one record row and one oplog row of exactly the
// sizes rows::EncodeRecord and Oplog::EncodeRow produce for it (filler bytes,
// no encoding or hashing; the oplog row is a packed row holding that one
// entry), so a ratio shows what the replica costs on top of the two rows per
// logical write the baseline defines: read-before-write, stamping, checksums,
// the key-hash index row, Merkle checkpoints and the commit pipeline. (The
// replica packs the oplog entries of one commit into rows of up to
// Oplog::kRowEntriesMax, so a batched replica write puts fewer oplog rows
// than the raw baseline does; the baseline stays one of each per write.)
// Items are logical writes (or records read); bytes are key + value payload
// (116 per item) on both sides, so bytes/s ratios equal items/s ratios.
//
// Each benchmark run opens a fresh database in its own directory under /tmp,
// on a real disk (fsync cost is the point), and removes it afterwards.
#include <benchmark/benchmark.h>
#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>
#include <leveldb/write_batch.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/coding.h"
#include "base/random.h"
#include "bench/cpu.h"
#include "bench/own_env.h"
#include "bench/workload.h"
#include "merkle/merkle.h"
#include "oplog/oplog.h"
#include "replica/replica.h"
#include "storage/key_order_sorter_internal.h"
#include "storage/rows_internal.h"
#include "storage/storage.h"

namespace tidemap {
namespace {

using bench::KeyAt;
using bench::KeyString;
using bench::kKeyBytes;
using bench::kMap;
using bench::kPayloadBytes;
using bench::kValueBytes;
using bench::OwnCompactionThreadEnv;
using bench::TempDir;
using bench::TheValues;
constexpr uint64_t kNodeId = 0x7469'6465'6d61'7001;  // any non-zero id
constexpr uint64_t kSeed = 20'240'601;               // fixed: every run reads the same keys
// Preloaded keys for the read benchmarks.
constexpr uint64_t kPreloadKeys = 100'000;
constexpr int64_t kPreloadBatchOps = 1000;
static_assert(kPreloadKeys % kPreloadBatchOps == 0, "the preloads write whole batches");

// Work per repetition, fixed so that a run does a bounded, identical amount of
// work and both sides of a ratio write the same number of rows.
//
// A repetition of a put benchmark makes kPutWrites logical writes into a fresh
// database (the batched ones in batches of 1000, rounded down). The default
// 100k (about 20 MB) fits in a few memtables, so LevelDB flushes them and
// barely starts compacting between levels. TIDEMAP_BENCH_PUT_WRITES measures
// longer runs: at 1M the databases grow past 100 MB and compactions set the
// pace (README, "Sustained writes").
constexpr uint64_t kPutWritesDefault = 100'000;
constexpr uint64_t kPutWritesMax = 10'000'000;
const int64_t kPutWrites = static_cast<int64_t>(
    bench::CountFromEnv("TIDEMAP_BENCH_PUT_WRITES", kPutWritesDefault, 1000, kPutWritesMax));
const int64_t kBatchIterations = kPutWrites / 1000;  // x 1000 logical writes
constexpr int64_t kSyncIterations = 1'000;           // per thread
constexpr int64_t kGetIterations = 200'000;
constexpr int64_t kScanIterations = 5'000;  // pages of 100
// The machine may be shared and noisy: each benchmark runs this many times and
// bench/main.cc takes its ratios from the medians. One fsync here takes from
// tens of microseconds to milliseconds as the disk's neighbours come and go,
// so the durable writes get more, shorter repetitions (scripts/run-bench.sh
// interleaves them with the others).
constexpr int kRepetitions = 7;
constexpr int kSyncRepetitions = 11;
constexpr int kIndexRowCostRepetitions = 15;

// Settings shared by every benchmark here. They measure wall time: waiting for
// the disk and the work of LevelDB's background compaction thread are part of
// the cost.
void Common(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Repetitions(kRepetitions)->DisplayAggregatesOnly();
}
void CommonSync(benchmark::internal::Benchmark* b) {
  b->Iterations(kSyncIterations)
      ->UseRealTime()
      ->Repetitions(kSyncRepetitions)
      ->DisplayAggregatesOnly();
}

// Row sizes, taken from the real encoders so they follow format changes.
struct RowSizes {
  size_t record_value;
  size_t oplog_value;
};

RowSizes TheRowSizes() {
  const std::string key = KeyString(0);
  const std::string row_key = rows::RecordKey(kMap, key);
  rows::RecordValue rec;
  rec.version = Version{Timestamp::FromParts(1'795'313'720'123, 7), kNodeId};
  rec.value.assign(TheValues().At(0));
  const OplogEntry entry{1, std::string(kMap), key, rec.version, false};
  return RowSizes{rows::EncodeRecord(row_key, rec).size(),
                  Oplog::EncodeRow(std::span<const OplogEntry>(&entry, 1)).size()};
}

// ---- raw LevelDB ----

// A LevelDB database with storage/storage.cc's options, on LevelDB's default
// Env or, with `own_compaction_thread`, on an OwnCompactionThreadEnv.
class RawDb {
 public:
  static std::unique_ptr<RawDb> Open(const std::string& path, std::string* error,
                                     bool own_compaction_thread = false) {
    std::unique_ptr<RawDb> raw(new RawDb());
    if (own_compaction_thread) raw->env_ = std::make_unique<OwnCompactionThreadEnv>();
    raw->cache_.reset(leveldb::NewLRUCache(StoreOptions{}.block_cache_bytes));
    raw->filter_.reset(leveldb::NewBloomFilterPolicy(10));
    leveldb::Options opts;
    opts.create_if_missing = true;
    opts.paranoid_checks = true;
    opts.env = raw->env_ != nullptr ? raw->env_.get() : leveldb::Env::Default();
    opts.block_cache = raw->cache_.get();
    opts.filter_policy = raw->filter_.get();
    opts.write_buffer_size = StoreOptions{}.write_buffer_bytes;  // the same as ours
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
  // The DB goes before the Env, cache and filter it uses.
  std::unique_ptr<leveldb::Env> env_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::DB> db_;
};

// A third row a raw write may put beside its record and oplog rows.
enum class ThirdRow {
  kNone,
  // The key's key-hash index row (real key, filler value of the real size):
  // the row the Merkle tree costs every write.
  kIndexRow,
  // 9 bytes of key and no value: 'h' and 8 bytes of the key's hash (random
  // places, as the index row lands) or of the seq (appended, as the oplog
  // row lands). What a row costs LevelDB whatever its size, for comparison.
  kTinyRandomRow,
  kTinySequentialRow,
  // The index row deferred: gathered, and written as one batch in key order
  // every kDeferredIndexRows writes, as a replica that wrote its index rows
  // with its leaf checkpoints would. Whether the row's cost is in the put
  // path (a random memtable insert per put) or in LevelDB's flushes and
  // compactions, which a deferred row pays all the same.
  kIndexRowDeferred,
  // The same rows packed kPackedIndexEntries to a LevelDB row (each batch a
  // sorted run, keyed by run number and first entry): what an index of our
  // own, kept in sorted runs above LevelDB, would pay to write them. Only a
  // lower bound: such an index would also merge its runs now and then.
  kIndexPackedDeferred,
  // The packed runs merged as such an index would merge them, tiered: once
  // kMergeFanIn runs of one level exist, they are read back and merged into
  // one run of the next level (25k, 100k, 400k... entries), and their rows
  // deleted. The whole write cost of that index, merges included; its reads
  // (a seek per run per bucket) are not measured here.
  kIndexPackedMerged,
};
constexpr size_t kPackedIndexEntries = 64;
constexpr size_t kMergeFanIn = 4;
// Divides the default 100,000 writes and the long runs' 1M, so every row is
// written inside the timed loop.
constexpr size_t kDeferredIndexRows = 25'000;

// Builds the two rows of logical write `index` (oplog seq index + 1): the
// record row under the real record key, the oplog row under the real key of
// a one-entry row (RowKey of its seq), both values filler of the real sizes;
// and `third`, if any.
class RawRowMaker {
 public:
  explicit RawRowMaker(ThirdRow third = ThirdRow::kNone)
      : sizes_(TheRowSizes()), record_key_(rows::RecordMapPrefix(kMap)), third_(third) {
    prefix_bytes_ = record_key_.size();
    record_key_.resize(prefix_bytes_ + kKeyBytes);
    record_value_.assign(sizes_.record_value - kValueBytes, '\x01');
    header_bytes_ = record_value_.size();
    record_value_.resize(sizes_.record_value);
    oplog_value_.assign(sizes_.oplog_value, '\x02');
  }

  void Add(uint64_t index, leveldb::WriteBatch* batch) {
    KeyAt(index, record_key_.data() + prefix_bytes_);
    const std::string_view value = TheValues().At(index);
    std::memcpy(record_value_.data() + header_bytes_, value.data(), value.size());
    batch->Put(record_key_, record_value_);
    oplog_key_ = Oplog::RowKey(index + 1);
    batch->Put(oplog_key_, oplog_value_);
    const std::string_view key(record_key_.data() + prefix_bytes_, kKeyBytes);
    switch (third_) {
      case ThirdRow::kNone:
        break;
      case ThirdRow::kIndexRow:
        rows::HashIndexKeyInto(&index_key_, KeyHash(kMap, key), kMap, key);
        batch->Put(index_key_, index_value_);
        break;
      case ThirdRow::kTinyRandomRow:
        PutTinyRow(KeyHash(kMap, key), batch);
        break;
      case ThirdRow::kTinySequentialRow:
        PutTinyRow(index + 1, batch);
        break;
      case ThirdRow::kIndexRowDeferred:
      case ThirdRow::kIndexPackedDeferred:
      case ThirdRow::kIndexPackedMerged:
        rows::HashIndexKeyInto(&index_key_, KeyHash(kMap, key), kMap, key);
        deferred_.push_back(index_key_);
        break;
    }
  }

  // With a deferred third row, once kDeferredIndexRows rows are gathered:
  // puts them into `*batch` (cleared first) in key order, a row each or
  // packed, and returns true.
  bool TakeDeferred(leveldb::WriteBatch* batch) {
    if (deferred_.size() < kDeferredIndexRows) return false;
    std::sort(deferred_.begin(), deferred_.end());
    batch->Clear();
    if (third_ == ThirdRow::kIndexRowDeferred) {
      for (const std::string& row_key : deferred_) batch->Put(row_key, index_value_);
    } else {
      ++runs_;
      entry_bytes_ = deferred_.front().size() + index_value_.size();
      std::string packed;
      for (size_t first = 0; first < deferred_.size(); first += kPackedIndexEntries) {
        const size_t end = std::min(deferred_.size(), first + kPackedIndexEntries);
        packed.clear();
        for (size_t i = first; i < end; ++i) packed.append(deferred_[i]).append(index_value_);
        batch->Put(RunRowKey(runs_, packed), packed);
      }
      if (third_ == ThirdRow::kIndexPackedMerged)
        runs_kept_.push_back({runs_, 0, deferred_.size()});
    }
    deferred_.clear();
    return true;
  }

  // With kIndexPackedMerged: merges runs, kMergeFanIn of one level into one of
  // the next, as long as a level has that many (see ThirdRow).
  leveldb::Status MergeRuns(leveldb::DB* db) {
    if (third_ != ThirdRow::kIndexPackedMerged) return leveldb::Status::OK();
    for (int level = 0;; ++level) {
      std::vector<uint64_t> sources;
      size_t entries = 0;
      for (const Run& run : runs_kept_) {
        if (run.level == level && sources.size() < kMergeFanIn) {
          sources.push_back(run.id);
          entries += run.entries;
        }
      }
      if (sources.size() < kMergeFanIn) return leveldb::Status::OK();
      size_t merged = 0;
      const leveldb::Status s = Merge(db, sources, ++runs_, &merged);
      if (!s.ok()) return s;
      // The benchmark's own check that it merged what it claims to.
      if (merged != entries) {
        return leveldb::Status::Corruption("merged " + std::to_string(merged) + " entries of " +
                                           std::to_string(entries));
      }
      std::erase_if(runs_kept_, [&](const Run& run) {
        return std::find(sources.begin(), sources.end(), run.id) != sources.end();
      });
      runs_kept_.push_back({runs_, level + 1, merged});
    }
  }

 private:
  // The keys of run `run`'s packed rows start with 'h' and the run.
  static std::string RunPrefix(uint64_t run) {
    std::string prefix(1, rows::kHashIndexPrefix);
    PutFixed64BE(&prefix, run);
    return prefix;
  }

  // A packed row's key: the run's prefix, then the first entry's key hash.
  static std::string RunRowKey(uint64_t run, std::string_view packed) {
    return RunPrefix(run).append(packed.substr(1, 8));
  }

  // One run being read back by a merge: its rows in order, an entry at a time
  // (entries are all entry_bytes_ long: one map, keys of one length).
  struct RunReader {
    std::unique_ptr<leveldb::Iterator> it;
    std::string prefix;
    std::string row;
    size_t offset = 0;
    bool done = false;

    void Load() {
      done = !it->Valid() || !it->key().starts_with(prefix);
      if (!done) row.assign(it->value().data(), it->value().size());
      offset = 0;
    }
    // The entry at `offset`.
    std::string_view Entry(size_t entry_bytes) const {
      return std::string_view(row).substr(offset, entry_bytes);
    }
  };

  // Merges `sources` (sorted runs of distinct keys) into run `target`,
  // streaming: each source's rows are deleted as the merge passes them, and
  // the output goes out about a megabyte at a time. Counts the entries in
  // `*merged`; an entry out of order is an error.
  leveldb::Status Merge(leveldb::DB* db, const std::vector<uint64_t>& sources, uint64_t target,
                        size_t* merged) {
    leveldb::ReadOptions ro;
    ro.fill_cache = false;
    std::vector<RunReader> readers(sources.size());
    for (size_t i = 0; i < sources.size(); ++i) {
      readers[i].it.reset(db->NewIterator(ro));
      readers[i].prefix = RunPrefix(sources[i]);
      readers[i].it->Seek(readers[i].prefix);
      readers[i].Load();
    }
    leveldb::WriteBatch out;
    std::string packed;
    size_t in_row = 0;
    std::string last;  // the entry written last
    auto flush_row = [&] {
      out.Put(RunRowKey(target, packed), packed);
      packed.clear();
      in_row = 0;
    };
    for (;;) {
      RunReader* least = nullptr;
      for (RunReader& r : readers) {
        if (r.done) continue;
        if (least == nullptr || r.Entry(entry_bytes_) < least->Entry(entry_bytes_)) least = &r;
      }
      if (least == nullptr) break;
      const std::string_view entry = least->Entry(entry_bytes_);
      if (!last.empty() && entry <= last) return leveldb::Status::Corruption("merge out of order");
      last.assign(entry);
      ++*merged;
      packed.append(entry);
      if (++in_row == kPackedIndexEntries) flush_row();
      least->offset += entry_bytes_;
      if (least->offset >= least->row.size()) {
        out.Delete(least->it->key());
        least->it->Next();
        least->Load();
      }
      if (out.ApproximateSize() >= (1u << 20)) {
        const leveldb::Status s = db->Write(leveldb::WriteOptions(), &out);
        if (!s.ok()) return s;
        out.Clear();
      }
    }
    if (in_row > 0) flush_row();
    for (const RunReader& r : readers) {
      if (!r.it->status().ok()) return r.it->status();
    }
    return db->Write(leveldb::WriteOptions(), &out);
  }

  // 'h' and `n` big-endian, with no value.
  void PutTinyRow(uint64_t n, leveldb::WriteBatch* batch) {
    tiny_key_.assign(1, rows::kHashIndexPrefix);
    PutFixed64BE(&tiny_key_, n);
    batch->Put(tiny_key_, leveldb::Slice());
  }

  RowSizes sizes_;
  std::string record_key_;
  size_t prefix_bytes_;
  std::string record_value_;
  size_t header_bytes_;
  std::string oplog_key_;
  std::string oplog_value_;
  const ThirdRow third_;
  std::string index_key_;
  std::string tiny_key_;
  std::vector<std::string> deferred_;
  uint64_t runs_ = 0;       // packed: runs written
  size_t entry_bytes_ = 0;  // packed: the bytes of one entry
  // kIndexPackedMerged: the runs there are.
  struct Run {
    uint64_t id;
    int level;
    size_t entries;
  };
  std::vector<Run> runs_kept_;
  // A real index value (its bytes do not matter, its size does).
  const std::string index_value_ = rows::EncodeHashIndexValue(rows::RecordMeta{});
};

// One raw write: logical writes [first, first + count) in one WriteBatch,
// copied in key order by the replica's own sorter first with `key_order`.
// What RawPut times per iteration, the raw side of every pair, and the
// preload of the raw read benchmarks.
class RawWriter {
 public:
  RawWriter(RawDb* raw, ThirdRow third, bool key_order, bool sync = false)
      : raw_(raw), maker_(third), key_order_(key_order) {
    wo_.sync = sync;
  }

  leveldb::Status Write(uint64_t first, int64_t count) {
    batch_.Clear();
    for (int64_t i = 0; i < count; ++i) maker_.Add(first + static_cast<uint64_t>(i), &batch_);
    leveldb::Status s;
    if (key_order_) {
      sorter_.Sort(batch_, &sorted_);
      s = raw_->db()->Write(wo_, &sorted_);
    } else {
      s = raw_->db()->Write(wo_, &batch_);
    }
    if (s.ok() && maker_.TakeDeferred(&batch_)) {
      s = raw_->db()->Write(wo_, &batch_);
      if (s.ok()) s = maker_.MergeRuns(raw_->db());
    }
    return s;
  }

 private:
  RawDb* raw_;
  RawRowMaker maker_;
  const bool key_order_;
  leveldb::WriteOptions wo_;
  leveldb::WriteBatch batch_, sorted_;
  KeyOrderSorter sorter_;
};

void SetRates(benchmark::State& state, int64_t items) {
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * kPayloadBytes);
}

// Raw puts, `per_batch` logical writes (2 rows each, 3 with a `third`) per
// WriteBatch; with `key_order`, each batch's rows copied in key order by the
// replica's own sorter before the write (the copy is timed).
void RawPut(benchmark::State& state, int64_t per_batch, bool sync, ThirdRow third = ThirdRow::kNone,
            bool key_order = false) {
  TempDir dir;
  std::string error = "cannot create a directory under /tmp";
  std::unique_ptr<RawDb> raw = dir.ok() ? RawDb::Open(dir.db(), &error) : nullptr;
  if (raw == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  RawWriter writer(raw.get(), third, key_order, sync);
  uint64_t index = 0;
  const double cpu_before = bench::ProcessCpuSeconds();
  const double writer_cpu_before = bench::ThisThreadCpuSeconds();
  for (auto _ : state) {
    const leveldb::Status s = writer.Write(index, per_batch);
    index += static_cast<uint64_t>(per_batch);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  const int64_t items = state.iterations() * per_batch;
  SetRates(state, items);
  bench::SetCpuPerItem(state, cpu_before, items);
  // The writing thread's share of cpu_us; the rest is LevelDB's background
  // thread (its flushes and compactions).
  state.counters["writer_cpu_us"] =
      bench::MicrosPerItem(bench::ThisThreadCpuSeconds() - writer_cpu_before, items);
}

void BM_RawLevelDbPut(benchmark::State& state, int64_t per_batch, ThirdRow third, bool key_order) {
  RawPut(state, per_batch, /*sync=*/false, third, key_order);
}
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched, 1, ThirdRow::kNone, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
// The same with each write's key-hash index row: the difference from
// `unbatched` is the row's cost measured by two separate benchmarks, which
// bench/main.cc prints beside the paired measurement below. The pairs are
// steadier in short runs; in long ones (TIDEMAP_BENCH_PUT_WRITES) they are
// not what a single database sees, since each of the two takes a write half
// as often and its compactions keep up better.
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_index_row, 1, ThirdRow::kIndexRow, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
// The same with a 9-byte row of no value in place of the index row, at random
// places and appended: whether the index row's cost is its bytes or its being
// a row at all. bench/main.cc prints their differences beside the index row's.
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_tiny_random_row, 1, ThirdRow::kTinyRandomRow,
                  false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_tiny_sequential_row, 1,
                  ThirdRow::kTinySequentialRow, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
// The index row written later, in batches in key order (ThirdRow::kIndexRowDeferred).
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_index_row_deferred, 1,
                  ThirdRow::kIndexRowDeferred, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
// ...and packed into sorted runs (ThirdRow::kIndexPackedDeferred).
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_index_packed_deferred, 1,
                  ThirdRow::kIndexPackedDeferred, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
// ...and the runs merged (ThirdRow::kIndexPackedMerged).
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched_with_index_packed_merged, 1,
                  ThirdRow::kIndexPackedMerged, false)
    ->Iterations(kPutWrites)
    ->Apply(Common);
BENCHMARK_CAPTURE(BM_RawLevelDbPut, batched_1000, 1000, ThirdRow::kNone, false)
    ->Iterations(kBatchIterations)
    ->Apply(Common);
// The batched baseline with each batch's rows put in key order first, by the
// sorter the replica uses on its commits (storage/storage.h): the issue's
// baseline puts them in the order it builds them, and the sort speeds
// LevelDB's memtable inserts for it too. bench/main.cc prints the batch put
// against both.
BENCHMARK_CAPTURE(BM_RawLevelDbPut, batched_1000_in_key_order, 1000, ThirdRow::kNone, true)
    ->Iterations(kBatchIterations)
    ->Apply(Common);

// What the key-hash index row adds to a raw unbatched put, measured in pairs:
// two databases take the same sequence of logical writes, one with the index
// row and one without, a write to each in turn (the order alternating), each
// write timed alone. A slow spell of a shared machine falls on both sides of
// every pair, where two separate benchmarks (minutes apart) saw it on one
// side only and their difference even came out negative. Each write's time
// includes building its rows. Reports the mean time of each kind of write
// and `index_row_ns`, their difference;
// bench/main.cc takes the Merkle tree's share of a local put from it.
void BM_RawLevelDbIndexRowCost(benchmark::State& state) {
  TempDir plain_dir, indexed_dir;
  std::string error = "cannot create a directory under /tmp";
  // Each on its own compaction thread: on LevelDB's shared one, the plain
  // database's writes waited behind the indexed one's compactions, which
  // hid part of the row's cost.
  std::unique_ptr<RawDb> plain =
      plain_dir.ok() ? RawDb::Open(plain_dir.db(), &error, /*own_compaction_thread=*/true)
                     : nullptr;
  std::unique_ptr<RawDb> indexed =
      plain != nullptr && indexed_dir.ok()
          ? RawDb::Open(indexed_dir.db(), &error, /*own_compaction_thread=*/true)
          : nullptr;
  if (indexed == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  RawWriter plain_writer(plain.get(), ThirdRow::kNone, /*key_order=*/false);
  RawWriter indexed_writer(indexed.get(), ThirdRow::kIndexRow, /*key_order=*/false);
  uint64_t index = 0;
  std::chrono::nanoseconds plain_time{0}, indexed_time{0};
  struct Side {
    RawWriter* writer;
    std::chrono::nanoseconds* time;
  };
  const Side sides[2] = {{&plain_writer, &plain_time}, {&indexed_writer, &indexed_time}};
  // One logical write into a side, timed; false (and the benchmark skipped) on error.
  const auto timed_put = [&](const Side& side) {
    const auto start = std::chrono::steady_clock::now();
    // Encoding the rows (and hashing the key) counts.
    const leveldb::Status s = side.writer->Write(index, 1);
    *side.time += std::chrono::steady_clock::now() - start;
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    return s.ok();
  };
  for (auto _ : state) {
    const size_t first = index % 2;  // the plain side first on even writes
    if (!timed_put(sides[first]) || !timed_put(sides[1 - first])) break;
    ++index;
  }
  if (index == 0) return;
  const double n = static_cast<double>(index);
  const double plain_ns = static_cast<double>(plain_time.count()) / n;
  const double indexed_ns = static_cast<double>(indexed_time.count()) / n;
  state.counters["plain_ns"] = plain_ns;
  state.counters["indexed_ns"] = indexed_ns;
  state.counters["index_row_ns"] = indexed_ns - plain_ns;
  SetRates(state, state.iterations() * 2);
}
// The difference of two means swings with compactions: more repetitions.
BENCHMARK(BM_RawLevelDbIndexRowCost)
    ->Iterations(kPutWrites)
    ->Apply(Common)
    ->Repetitions(kIndexRowCostRepetitions);

// The durable limit: one fsync per logical write, one writer.
void BM_RawLevelDbPutSync(benchmark::State& state) { RawPut(state, 1, /*sync=*/true); }
BENCHMARK(BM_RawLevelDbPutSync)->Apply(CommonSync);

// ---- replica ----

// A replica in a fresh directory, on the system clock.
struct ReplicaFixture {
  TempDir dir;
  SystemClock clock;
  leveldb::Env* env;
  std::unique_ptr<Replica> replica;
  std::string error;

  // On `env` (nullptr: LevelDB's default), which must outlive the fixture.
  explicit ReplicaFixture(Durability durability, leveldb::Env* on_env = nullptr) : env(on_env) {
    if (!dir.ok()) {
      error = "cannot create a directory under /tmp";
      return;
    }
    error = Open(durability);
  }
  // Reopens the replica (its writes so far must be done).
  std::string Open(Durability durability) {
    replica.reset();
    ReplicaOptions o;
    o.path = dir.db();
    o.clock = &clock;
    o.node_id = kNodeId;
    o.durability = durability;
    o.env = env;
    bench::WriteBufferFromEnv(&o.write_buffer_bytes);
    auto r = Replica::Open(std::move(o));
    if (!r.ok()) return r.status().ToString();
    replica = std::move(*r);
    return {};
  }
  ~ReplicaFixture() { replica.reset(); }  // closed before the directory goes
};

// Logical writes [first, first + count) into `replica`: one Put when
// `count` is 1, else one Write of a batch. Empty, or the error. What the
// replica put benchmarks time per iteration, the replica side of each put
// pair, and the preload of the replica read benchmarks.
std::string ReplicaWrite(Replica* replica, uint64_t first, int64_t count) {
  char key[kKeyBytes];
  if (count == 1) {
    KeyAt(first, key);
    auto v = replica->Put(kMap, std::string_view(key, kKeyBytes), TheValues().At(first));
    return v.ok() ? std::string() : v.status().ToString();
  }
  WriteBatch batch;
  for (uint64_t index = first; index < first + static_cast<uint64_t>(count); ++index) {
    KeyAt(index, key);
    batch.Put(kMap, std::string_view(key, kKeyBytes), TheValues().At(index));
  }
  auto v = replica->Write(batch);
  return v.ok() ? std::string() : v.status().ToString();
}

void BM_ReplicaPut(benchmark::State& state, Durability durability) {
  ReplicaFixture f(durability);
  if (f.replica == nullptr) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  uint64_t index = 0;
  for (auto _ : state) {
    const std::string failure = ReplicaWrite(f.replica.get(), index++, 1);
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
  }
  SetRates(state, state.iterations());
}
BENCHMARK_CAPTURE(BM_ReplicaPut, relaxed, Durability::kRelaxed)
    ->Iterations(kPutWrites)
    ->Apply(Common);

// Durable puts from several threads into one replica: group commit should let
// concurrent writers share each fsync. Thread 0 opens the replica before the
// timed loop and closes it after; Google Benchmark's start and stop barriers
// order that against the other threads. Google Benchmark 1.7.1 prints these as
// "BM_ReplicaPutSync/iterations:1000/repeats:11/real_time/threads:N" (settings
// go before threads:N); bench/main.cc matches them as "BM_ReplicaPutSync/threads:N".
void BM_ReplicaPutSync(benchmark::State& state) {
  static std::unique_ptr<ReplicaFixture> shared;
  if (state.thread_index() == 0) {
    shared = std::make_unique<ReplicaFixture>(Durability::kSync);
    if (shared->replica == nullptr) state.SkipWithError(shared->error.c_str());
  }
  // Each thread writes its own range of indexes, so all keys are distinct.
  uint64_t index = static_cast<uint64_t>(state.thread_index()) << 40;
  char key[kKeyBytes];
  bool failed = false;
  for (auto _ : state) {
    // A failed thread keeps iterating without work so the stop barrier is reached.
    if (failed || shared->replica == nullptr) continue;
    KeyAt(index, key);
    auto v = shared->replica->Put(kMap, std::string_view(key, kKeyBytes), TheValues().At(index));
    ++index;
    if (!v.ok()) {
      state.SkipWithError(v.status().ToString().c_str());
      failed = true;
    }
  }
  SetRates(state, state.iterations());
  if (state.thread_index() == 0) shared.reset();
}
BENCHMARK(BM_ReplicaPutSync)->Threads(1)->Apply(CommonSync);
BENCHMARK(BM_ReplicaPutSync)->Threads(8)->Apply(CommonSync);

void BM_ReplicaBatchPut1000(benchmark::State& state) {
  constexpr int64_t kOps = 1000;
  ReplicaFixture f(Durability::kRelaxed);
  if (f.replica == nullptr) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  uint64_t index = 0;
  const double cpu_before = bench::ProcessCpuSeconds();
  for (auto _ : state) {
    const std::string failure = ReplicaWrite(f.replica.get(), index, kOps);
    index += kOps;
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
  }
  SetRates(state, state.iterations() * kOps);
  bench::SetCpuPerItem(state, cpu_before, state.iterations() * kOps);
}
BENCHMARK(BM_ReplicaBatchPut1000)->Iterations(kBatchIterations)->Apply(Common);

// The local and batch put ratios measured in pairs: a raw database and a
// replica take the same logical writes, a block of 1000 into one and then
// the same block into the other (the order alternating), each block timed.
// The ratio lines of bench/main.cc divide the medians of two benchmarks run
// minutes apart, and a slow spell of a shared host that falls on one of them
// moves the ratio (0.37 in one run where the replica put took 5.4 us against
// its usual 3.7); here it falls on both sides of the blocks it overlaps.
// `per_batch` 1: a raw unbatched write against Replica::Put; 1000: one raw
// batch against one Replica::Write. Each database has a compaction thread of
// its own, so neither waits behind the other's; on 2 cores they still share
// the core the writer leaves, so each side's writes also meet the other's
// background work (small in default runs: a few memtable flushes). In long
// runs (TIDEMAP_BENCH_PUT_WRITES) the pairs do not hold: each database takes
// a write half as often as one alone and its compactions keep up, so the raw
// side runs far faster than alone and the ratio comes out low. Reports
// `raw_ns` and `replica_ns` per logical write and `ratio`, the replica's rate
// over the raw one; items count the writes of both sides.
void BM_PutPairs(benchmark::State& state, int64_t per_batch) {
  constexpr int64_t kBlock = 1000;
  TempDir raw_dir;
  std::string error = "cannot create a directory under /tmp";
  std::unique_ptr<RawDb> raw =
      raw_dir.ok() ? RawDb::Open(raw_dir.db(), &error, /*own_compaction_thread=*/true) : nullptr;
  if (raw == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  OwnCompactionThreadEnv replica_env;
  ReplicaFixture f(Durability::kRelaxed, &replica_env);
  if (f.replica == nullptr) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  RawWriter raw_writer(raw.get(), ThirdRow::kNone, /*key_order=*/false);
  uint64_t block_start = 0;
  std::chrono::nanoseconds raw_time{0}, replica_time{0};
  // One side's block of writes, from logical write `block_start`; an error
  // message, or empty.
  const auto raw_block = [&]() -> std::string {
    for (int64_t done = 0; done < kBlock; done += per_batch) {
      const leveldb::Status s =
          raw_writer.Write(block_start + static_cast<uint64_t>(done), per_batch);
      if (!s.ok()) return s.ToString();
    }
    return {};
  };
  const auto replica_block = [&]() -> std::string {
    for (int64_t done = 0; done < kBlock; done += per_batch) {
      const std::string failure =
          ReplicaWrite(f.replica.get(), block_start + static_cast<uint64_t>(done), per_batch);
      if (!failure.empty()) return failure;
    }
    return {};
  };
  const auto timed = [&](const auto& block, std::chrono::nanoseconds* time) {
    const auto start = std::chrono::steady_clock::now();
    std::string failure = block();
    *time += std::chrono::steady_clock::now() - start;
    if (!failure.empty()) state.SkipWithError(failure.c_str());
    return failure.empty();
  };
  uint64_t blocks = 0;
  for (auto _ : state) {
    const bool raw_first = blocks % 2 == 0;
    const bool ok = raw_first ? timed(raw_block, &raw_time) && timed(replica_block, &replica_time)
                              : timed(replica_block, &replica_time) && timed(raw_block, &raw_time);
    if (!ok) break;
    block_start += kBlock;
    ++blocks;
  }
  if (blocks == 0) return;
  const double writes = static_cast<double>(blocks * kBlock);
  const double raw_ns = static_cast<double>(raw_time.count()) / writes;
  const double replica_ns = static_cast<double>(replica_time.count()) / writes;
  state.counters["raw_ns"] = raw_ns;
  state.counters["replica_ns"] = replica_ns;
  state.counters["ratio"] = raw_ns / replica_ns;
  SetRates(state, static_cast<int64_t>(blocks) * kBlock * 2);
}
BENCHMARK_CAPTURE(BM_PutPairs, unbatched, 1)->Iterations(kBatchIterations)->Apply(Common);
BENCHMARK_CAPTURE(BM_PutPairs, batched_1000, 1000)->Iterations(kBatchIterations)->Apply(Common);

// What a receiver does with a peer's stream: ApplyRemote of batches of 1000
// new keys from another origin (stamped up to 100 s behind this clock, so
// no clock check refuses them), against the same raw baseline as a batch
// put. The records are built before timing; every one of them must win.
void BM_ReplicaApplyRemote1000(benchmark::State& state) {
  constexpr int64_t kOps = 1000;
  constexpr uint64_t kRemoteOrigin = kNodeId + 1;
  ReplicaFixture f(Durability::kRelaxed);
  if (f.replica == nullptr) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  const uint64_t now_ms = f.clock.NowMillis();
  std::vector<std::vector<KeyedRecord>> batches(static_cast<size_t>(kBatchIterations));
  uint64_t index = 0;
  for (auto& batch : batches) {
    batch.reserve(kOps);
    for (int64_t i = 0; i < kOps; ++i, ++index) {
      const auto value = TheValues().At(index);
      batch.push_back(
          KeyedRecord{std::string(kMap), KeyString(index), std::string(value.data(), value.size()),
                      Version{Timestamp::FromParts(now_ms - 100'000 + index / 1000, index % 1000),
                              kRemoteOrigin},
                      false});
    }
  }
  size_t next = 0;
  const double cpu_before = bench::ProcessCpuSeconds();
  for (auto _ : state) {
    auto v = f.replica->ApplyRemote(batches.at(next++), kRemoteOrigin);
    if (!v.ok() || v->applied != static_cast<size_t>(kOps)) {
      state.SkipWithError(v.ok() ? "a remote record did not win" : v.status().ToString().c_str());
      break;
    }
  }
  SetRates(state, state.iterations() * kOps);
  bench::SetCpuPerItem(state, cpu_before, state.iterations() * kOps);
}
BENCHMARK(BM_ReplicaApplyRemote1000)->Iterations(kBatchIterations)->Apply(Common);

// ---- reads over kPreloadKeys keys ----
//
// Both sides preload in batches, then compact the whole database, so that the
// reads see the same settled layout (all tables, no memtable, no compaction
// running) whatever the timing of the preload was.

void CompactAll(leveldb::DB* db) { db->CompactRange(nullptr, nullptr); }

// Preloads a replica, then compacts its database with LevelDB directly.
std::string PreloadReplica(ReplicaFixture* f) {
  for (uint64_t start = 0; start < kPreloadKeys; start += uint64_t{kPreloadBatchOps}) {
    const std::string failure = ReplicaWrite(f->replica.get(), start, kPreloadBatchOps);
    if (!failure.empty()) return failure;
  }
  f->replica.reset();
  {
    std::string error;
    std::unique_ptr<RawDb> raw = RawDb::Open(f->dir.db(), &error);
    if (raw == nullptr) return error;
    CompactAll(raw->db());
  }
  return f->Open(Durability::kRelaxed);
}

std::string PreloadRaw(RawDb* raw) {
  RawWriter writer(raw, ThirdRow::kNone, /*key_order=*/false);
  for (uint64_t start = 0; start < kPreloadKeys; start += uint64_t{kPreloadBatchOps}) {
    const leveldb::Status s = writer.Write(start, kPreloadBatchOps);
    if (!s.ok()) return s.ToString();
  }
  CompactAll(raw->db());
  return {};
}

void BM_ReplicaGet(benchmark::State& state) {
  ReplicaFixture f(Durability::kRelaxed);
  if (f.replica != nullptr) f.error = PreloadReplica(&f);
  if (f.replica == nullptr || !f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  SeededRandom rng(kSeed);
  char key[kKeyBytes];
  for (auto _ : state) {
    KeyAt(rng.Uniform(kPreloadKeys), key);
    auto r = f.replica->Get(kMap, std::string_view(key, kKeyBytes));
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  SetRates(state, state.iterations());
}
BENCHMARK(BM_ReplicaGet)->Iterations(kGetIterations)->Apply(Common);

// Raw gets of the record rows, with the read options storage/storage.cc uses.
void BM_RawLevelDbGet(benchmark::State& state) {
  TempDir dir;
  std::string error = "cannot create a directory under /tmp";
  std::unique_ptr<RawDb> raw = dir.ok() ? RawDb::Open(dir.db(), &error) : nullptr;
  if (raw != nullptr) error = PreloadRaw(raw.get());
  if (raw == nullptr || !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  SeededRandom rng(kSeed);
  std::string row_key = rows::RecordMapPrefix(kMap);
  const size_t prefix_bytes = row_key.size();
  row_key.resize(prefix_bytes + kKeyBytes);
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string value;
  for (auto _ : state) {
    KeyAt(rng.Uniform(kPreloadKeys), row_key.data() + prefix_bytes);
    const leveldb::Status s = raw->db()->Get(ro, row_key, &value);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(value);
  }
  SetRates(state, state.iterations());
}
BENCHMARK(BM_RawLevelDbGet)->Iterations(kGetIterations)->Apply(Common);

// Pages of 100 through the whole map, starting over at the end.
void BM_ReplicaScan100(benchmark::State& state) {
  constexpr size_t kPage = 100;
  ReplicaFixture f(Durability::kRelaxed);
  if (f.replica != nullptr) f.error = PreloadReplica(&f);
  if (f.replica == nullptr || !f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  std::optional<std::string> after;
  int64_t records = 0;
  for (auto _ : state) {
    auto page = f.replica->Scan(kMap, "", after, kPage);
    if (!page.ok()) {
      state.SkipWithError(page.status().ToString().c_str());
      break;
    }
    records += static_cast<int64_t>(page->items.size());
    after = std::move(page->next);
  }
  SetRates(state, records);
}
BENCHMARK(BM_ReplicaScan100)->Iterations(kScanIterations)->Apply(Common);

}  // namespace
}  // namespace tidemap
