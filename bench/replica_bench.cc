// Replica benchmarks against the raw limit beneath them: LevelDB alone, opened
// with the options Store::Open uses (storage/leveldb_options_internal.h),
// writing rows of the same shape.
//
// Every logical write is a 16-byte key and a 100-byte value. The raw writer
// puts, per logical write, one record row and one oplog row of exactly the
// sizes rows::EncodeRecord and Oplog::EncodeRow produce for it (filler bytes,
// no encoding or hashing; the oplog row is a packed row holding that one
// entry), so a ratio shows what the replica costs on top of the two rows per
// logical write the anchor defines: read-before-write, stamping, checksums,
// the key-hash index row, Merkle checkpoints and the commit pipeline. (The
// replica packs the oplog entries of one commit into rows of up to
// Oplog::kRowEntriesMax, so a batched replica write puts fewer oplog rows
// than the raw anchor does; the anchor stays one of each per write.)
// Items are logical writes (or records read); bytes are key + value payload
// (116 per item) on both sides, so bytes/s ratios equal items/s ratios.
//
// Each benchmark run opens a fresh database in its own directory under /tmp,
// on a real disk (fsync cost is the point), and removes it afterwards.
#include <benchmark/benchmark.h>
#include <leveldb/db.h>
#include <leveldb/options.h>
#include <leveldb/write_batch.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/cpu.h"
#include "bench/raw_db.h"
#include "bench/workload.h"
#include <tidemap/base/aead.h>
#include <tidemap/base/clock.h>
#include <tidemap/base/random.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/key_order_sorter_internal.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap {
namespace {

using bench::KeyAt;
using bench::KeyString;
using bench::kKeyBytes;
using bench::kMap;
using bench::kPayloadBytes;
using bench::kValueBytes;
using bench::RawDb;
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
// pace (docs/benchmarks.md, "Long runs").
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

// Builds the two rows of logical write `index` (oplog seq index + 1): the
// record row under the real record key, the oplog row under the real key of
// a one-entry row (RowKey of its seq), both values filler of the real sizes.
class RawRowMaker {
 public:
  RawRowMaker() : sizes_(TheRowSizes()), record_key_(rows::RecordMapPrefix(kMap)) {
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
  }

 private:
  RowSizes sizes_;
  std::string record_key_;
  size_t prefix_bytes_;
  std::string record_value_;
  size_t header_bytes_;
  std::string oplog_key_;
  std::string oplog_value_;
};

// One raw write: logical writes [first, first + count) in one WriteBatch,
// copied in key order by the replica's own sorter first with `key_order`.
// What RawPut times per iteration, and the preload of the raw read
// benchmarks.
class RawWriter {
 public:
  RawWriter(RawDb* raw, bool key_order, bool sync = false) : raw_(raw), key_order_(key_order) {
    wo_.sync = sync;
  }

  leveldb::Status Write(uint64_t first, int64_t count) {
    batch_.Clear();
    for (int64_t i = 0; i < count; ++i) maker_.Add(first + static_cast<uint64_t>(i), &batch_);
    if (!key_order_) return raw_->db()->Write(wo_, &batch_);
    sorter_.Sort(batch_, &sorted_);
    return raw_->db()->Write(wo_, &sorted_);
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

// Raw puts, `per_batch` logical writes (2 rows each) per WriteBatch; with
// `key_order`, each batch's rows copied in key order by the replica's own
// sorter before the write (the copy is timed).
void RawPut(benchmark::State& state, int64_t per_batch, bool sync, bool key_order = false) {
  TempDir dir;
  std::string error = "cannot create a directory under /tmp";
  std::unique_ptr<RawDb> raw = dir.ok() ? RawDb::Open(dir.db(), nullptr, &error) : nullptr;
  if (raw == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  RawWriter writer(raw.get(), key_order, sync);
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

void BM_RawLevelDbPut(benchmark::State& state, int64_t per_batch, bool key_order) {
  RawPut(state, per_batch, /*sync=*/false, key_order);
}
BENCHMARK_CAPTURE(BM_RawLevelDbPut, unbatched, 1, false)->Iterations(kPutWrites)->Apply(Common);
BENCHMARK_CAPTURE(BM_RawLevelDbPut, batched_1000, 1000, false)
    ->Iterations(kBatchIterations)
    ->Apply(Common);
// The batched anchor with each batch's rows put in key order first, by the
// sorter the replica uses on its commits (storage/storage.h): the plain
// anchor puts them in the order it builds them, and the sort speeds
// LevelDB's memtable inserts for it too. bench/main.cc prints the batch put
// against both.
BENCHMARK_CAPTURE(BM_RawLevelDbPut, batched_1000_in_key_order, 1000, true)
    ->Iterations(kBatchIterations)
    ->Apply(Common);

// The durable limit: one fsync per logical write, one writer.
void BM_RawLevelDbPutSync(benchmark::State& state) { RawPut(state, 1, /*sync=*/true); }
BENCHMARK(BM_RawLevelDbPutSync)->Apply(CommonSync);

// ---- replica ----

// How a benchmark's replica differs from a plain one.
struct FixtureOptions {
  uint64_t storage_quota_bytes = 0;  // 0: no quota
  // Values sealed at rest (the data dir's preferred suite, a fixed test key).
  bool encrypted = false;
};

// A replica in a fresh directory, on the system clock, with `options`.
struct ReplicaFixture {
  FixtureOptions options;
  TempDir dir;
  SystemClock clock;
  std::unique_ptr<ValueCipher> cipher;
  std::unique_ptr<Replica> replica;
  std::string error;

  explicit ReplicaFixture(Durability durability, FixtureOptions fixture_options = {})
      : options(fixture_options) {
    if (!dir.ok()) {
      error = "cannot create a directory under /tmp";
      return;
    }
    if (options.encrypted) {
      auto key = crypto::AeadKey::Create(crypto::PreferredAeadSuite(),
                                         crypto::SymmetricKey::FromBytesForTesting("bench key"));
      if (!key.ok()) {
        error = key.status().ToString();
        return;
      }
      cipher = std::make_unique<ValueCipher>(1, std::move(key).value());
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
    o.storage_quota_bytes = options.storage_quota_bytes;
    o.value_cipher = cipher.get();
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

// `ttl_ms` > 0: every put carries that TTL (per-record expiry), the TTL'd
// variant of the same put that the ratio ttl_put_vs_put compares.
// `extra`: a storage quota far above what the run writes, so it stays `ok`
// (the ratio quota_put_vs_put: what the quota's accounting costs a put), or
// values sealed at rest (the ratio encrypted_put_vs_put).
void BM_ReplicaPut(benchmark::State& state, Durability durability, uint64_t ttl_ms,
                   FixtureOptions extra = {}) {
  ReplicaFixture f(durability, extra);
  if (f.replica == nullptr) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  uint64_t index = 0;
  char key[kKeyBytes];
  for (auto _ : state) {
    std::string failure;
    if (ttl_ms == 0) {
      failure = ReplicaWrite(f.replica.get(), index++, 1);
    } else {
      KeyAt(index, key);
      auto v = f.replica->Put(kMap, std::string_view(key, kKeyBytes), TheValues().At(index),
                              PutOptions{ttl_ms});
      ++index;
      if (!v.ok()) failure = v.status().ToString();
    }
    if (!failure.empty()) {
      state.SkipWithError(failure.c_str());
      break;
    }
  }
  SetRates(state, state.iterations());
}
BENCHMARK_CAPTURE(BM_ReplicaPut, relaxed, Durability::kRelaxed, 0)
    ->Iterations(kPutWrites)
    ->Apply(Common);
BENCHMARK_CAPTURE(BM_ReplicaPut, relaxed_ttl, Durability::kRelaxed, uint64_t{3'600'000})
    ->Iterations(kPutWrites)
    ->Apply(Common);
BENCHMARK_CAPTURE(BM_ReplicaPut, relaxed_quota, Durability::kRelaxed, 0,
                  FixtureOptions{.storage_quota_bytes = uint64_t{1} << 50})
    ->Iterations(kPutWrites)
    ->Apply(Common);
BENCHMARK_CAPTURE(BM_ReplicaPut, relaxed_encrypted, Durability::kRelaxed, 0,
                  FixtureOptions{.encrypted = true})
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
    std::unique_ptr<RawDb> raw = RawDb::Open(f->dir.db(), nullptr, &error);
    if (raw == nullptr) return error;
    CompactAll(raw->db());
  }
  return f->Open(Durability::kRelaxed);
}

std::string PreloadRaw(RawDb* raw) {
  RawWriter writer(raw, /*key_order=*/false);
  for (uint64_t start = 0; start < kPreloadKeys; start += uint64_t{kPreloadBatchOps}) {
    const leveldb::Status s = writer.Write(start, kPreloadBatchOps);
    if (!s.ok()) return s.ToString();
  }
  CompactAll(raw->db());
  return {};
}

// `encrypted`: values sealed at rest, opened by every get (the ratio
// encrypted_get_vs_get against the plain get).
void ReplicaGet(benchmark::State& state, bool encrypted) {
  ReplicaFixture f(Durability::kRelaxed, FixtureOptions{.encrypted = encrypted});
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
void BM_ReplicaGet(benchmark::State& state) { ReplicaGet(state, false); }
BENCHMARK(BM_ReplicaGet)->Iterations(kGetIterations)->Apply(Common);
void BM_ReplicaGetEncrypted(benchmark::State& state) { ReplicaGet(state, true); }
BENCHMARK(BM_ReplicaGetEncrypted)->Iterations(kGetIterations)->Apply(Common);

// Raw gets of the record rows, with the read options storage/storage.cc uses.
void BM_RawLevelDbGet(benchmark::State& state) {
  TempDir dir;
  std::string error = "cannot create a directory under /tmp";
  std::unique_ptr<RawDb> raw = dir.ok() ? RawDb::Open(dir.db(), nullptr, &error) : nullptr;
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
