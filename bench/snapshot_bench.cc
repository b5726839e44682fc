// Snapshot export, import and bootstrap, each against the limit underneath,
// measured in one run on LevelDB's memory Env (no disk noise):
//   export  vs LevelDB's full scan of the same database (raw iterator over
//           every row of the record family);
//   import  vs LevelDB's raw batched writes of the same rows (1000 per batch,
//           unsynced);
//   bootstrap of an empty node: import + catch-up (a tree diff with the
//           source after 1% of the keys changed) vs a tree diff alone.
// Keys: 100,000 (TIDEMAP_BENCH_SNAPSHOT_KEYS=1000000 for the 1M figures),
// 100-byte values. One iteration: the figures are report lines. Rates and
// times are of the process's CPU time, so that other work on the machine
// does not skew a ratio.
#include <benchmark/benchmark.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <leveldb/write_batch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/cpu.h"
#include "bench/report.h"
#include "tests/support/sync_pump.h"
#include <tidemap/base/check.h>
#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/snapshot.h>
#include <tidemap/replica/sync.h>
#include <tidemap/server/snapshot.h>

namespace tidemap {
namespace {

constexpr uint64_t kBaseMs = 1'800'000'000'000;
constexpr size_t kValueBytes = 100;

uint64_t SnapshotKeys() {
  const char* env = std::getenv("TIDEMAP_BENCH_SNAPSHOT_KEYS");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 100'000;
}

// The process's CPU seconds (every thread, LevelDB's compactions included)
// since `start`, a bench::ProcessCpuSeconds(): on a shared machine, wall time
// counts other programs' turns, CPU time only this work.
double Seconds(double start) { return bench::ProcessCpuSeconds() - start; }
double Now() { return bench::ProcessCpuSeconds(); }

std::string Key(uint64_t i) {
  char key[24];
  std::snprintf(key, sizeof(key), "key%012llu", static_cast<unsigned long long>(i));
  return key;
}

struct Bench {
  std::unique_ptr<leveldb::Env> env{leveldb::NewMemEnv(leveldb::Env::Default())};
  ManualClock clock{kBaseMs};

  std::unique_ptr<Replica> Open(uint64_t id, const std::string& path) {
    ReplicaOptions o;
    o.path = path;
    o.env = env.get();
    o.clock = &clock;
    o.node_id = id;
    o.durability = Durability::kRelaxed;
    auto r = Replica::Open(std::move(o));
    TIDEMAP_CHECK_MSG(r.ok(), r.status().ToString().c_str());
    return std::move(r).value();
  }

  void Fill(Replica& r, uint64_t keys) {
    const std::string value(kValueBytes, 'v');
    for (uint64_t i = 0; i < keys; i += 1000) {
      WriteBatch b;
      for (uint64_t j = i; j < std::min(keys, i + 1000); ++j) b.Put("m", Key(j), value);
      TIDEMAP_CHECK(r.Write(b).ok());
    }
  }

  // Keys per second of a raw LevelDB scan of every row of the database at `path`.
  double RawScanRate(const std::string& path) {
    leveldb::Options o;
    o.env = env.get();
    leveldb::DB* raw = nullptr;
    TIDEMAP_CHECK(leveldb::DB::Open(o, path, &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    const double start = Now();
    uint64_t rows = 0, bytes = 0;
    std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
    for (it->Seek("r"); it->Valid() && it->key()[0] == 'r'; it->Next()) {
      ++rows;
      bytes += it->value().size();
    }
    benchmark::DoNotOptimize(bytes);
    return static_cast<double>(rows) / Seconds(start);
  }

  // Keys per second of raw batched LevelDB writes of rows like the records'.
  double RawWriteRate(uint64_t keys) {
    leveldb::Options o;
    o.env = env.get();
    o.create_if_missing = true;
    leveldb::DB* raw = nullptr;
    TIDEMAP_CHECK(leveldb::DB::Open(o, "/raw-write", &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    const std::string value(kValueBytes + 24, 'v');  // the record header's bytes too
    const double start = Now();
    for (uint64_t i = 0; i < keys; i += 1000) {
      leveldb::WriteBatch b;
      for (uint64_t j = i; j < std::min(keys, i + 1000); ++j) b.Put("rm\0" + Key(j), value);
      TIDEMAP_CHECK(db->Write(leveldb::WriteOptions(), &b).ok());
    }
    return static_cast<double>(keys) / Seconds(start);
  }
};

// Imports `file` into a new replica at `path`; closes it.
void Import(Bench& b, const std::string& file, uint64_t id, const std::string& path) {
  size_t at = 0;
  SnapshotFileReader reader([&](char* buf, size_t n) -> Result<size_t> {
    const size_t got = std::min(n, file.size() - at);
    std::memcpy(buf, file.data() + at, got);
    at += got;
    return got;
  });
  TIDEMAP_CHECK(reader.ReadHeader().ok());
  auto r = b.Open(id, path);
  auto loader = SnapshotLoader::Begin(r.get());
  TIDEMAP_CHECK(loader.ok());
  std::vector<KeyedRecord> records;
  std::vector<SnapshotWatermark> marks;
  for (;;) {
    records.clear();
    auto part = reader.Next(&records, &marks);
    TIDEMAP_CHECK_MSG(part.ok(), part.status().ToString().c_str());
    if (*part == SnapshotPart::kEnd) break;
    TIDEMAP_CHECK((*loader)->Add(records).ok());
  }
  TIDEMAP_CHECK((*loader)->Finish(marks).ok());
}

// A tree diff between `a` and `b` (nodes 1 and id_b) until both are idle; seconds.
double Catchup(Replica& a, Replica& b, uint64_t id_b) {
  SyncOptions opts;
  opts.diff_interval_ms = 0;
  SyncSession sa(&a, id_b, opts), sb(&b, 1, opts);
  testing::SyncPumpOptions pump;
  pump.now_ms = kBaseMs;
  pump.rounds_max = 100'000;
  const double start = Now();
  const testing::SyncPumpResult pumped = testing::PumpSync(sa, sb, pump);
  TIDEMAP_CHECK_MSG(pumped.status.ok(), pumped.status.ToString().c_str());
  const double s = Seconds(start);
  TIDEMAP_CHECK(a.MerkleRoot() == b.MerkleRoot());
  return s;
}

// What one scenario measured.
struct Figures {
  uint64_t keys;
  size_t file_bytes;
  double scan_rate, export_rate, write_rate, import_rate;
  double import_s, catchup_s, diff_s;
};

void ReportFigures(const Figures& f) {
  const auto keys = static_cast<unsigned long long>(f.keys);
  char line[512];
  std::snprintf(line, sizeof(line),
                "snapshot export keys=%llu keys_per_s=%.0f bytes=%llu (leveldb full scan "
                "keys_per_s=%.0f, ratio %.2f)",
                keys, f.export_rate, static_cast<unsigned long long>(f.file_bytes), f.scan_rate,
                f.export_rate / f.scan_rate);
  AddReportLine(line);
  std::snprintf(line, sizeof(line),
                "snapshot import keys=%llu keys_per_s=%.0f (leveldb batched writes "
                "keys_per_s=%.0f, ratio %.2f)",
                keys, f.import_rate, f.write_rate, f.import_rate / f.write_rate);
  AddReportLine(line);
  std::snprintf(line, sizeof(line),
                "snapshot bootstrap keys=%llu import+catchup_s=%.2f (%.2f + %.2f) "
                "tree_diff_alone_s=%.2f speedup=%.2f",
                keys, f.import_s + f.catchup_s, f.import_s, f.catchup_s, f.diff_s,
                f.diff_s / (f.import_s + f.catchup_s));
  AddReportLine(line);
}

void BM_SnapshotScenario(benchmark::State& state) {
  const uint64_t keys = SnapshotKeys();
  for (auto _ : state) {
    Bench b;
    auto a = b.Open(1, "/a");
    b.Fill(*a, keys);
    a->Compact();
    a.reset();
    const double scan_rate = b.RawScanRate("/a");
    a = b.Open(1, "/a");
    std::string file;
    double start = Now();
    auto counts = ExportSnapshot(*a, kBaseMs, [&](std::string_view bytes) {
      file.append(bytes);
      return Status::Ok();
    });
    const double export_rate = static_cast<double>(keys) / Seconds(start);
    TIDEMAP_CHECK(counts.ok() && counts->records == keys);
    const double write_rate = b.RawWriteRate(keys);
    start = Now();
    Import(b, file, 2, "/imported");
    const double import_s = Seconds(start);
    const double import_rate = static_cast<double>(keys) / import_s;
    // 1% of the keys change after the snapshot.
    const std::string changed(kValueBytes, 'w');
    for (uint64_t i = 0; i < keys; i += 100) TIDEMAP_CHECK(a->Put("m", Key(i), changed).ok());
    auto c = b.Open(2, "/imported");
    const double catchup_s = Catchup(*a, *c, 2);
    c.reset();
    auto d = b.Open(3, "/empty");
    const double diff_s = Catchup(*a, *d, 3);
    const Figures f{keys,        file.size(), scan_rate, export_rate, write_rate,
                    import_rate, import_s,    catchup_s, diff_s};
    ReportFigures(f);
    state.counters["export_vs_scan"] = export_rate / scan_rate;
    state.counters["import_vs_write"] = import_rate / write_rate;
    state.counters["bootstrap_speedup"] = diff_s / (import_s + catchup_s);
  }
}
BENCHMARK(BM_SnapshotScenario)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tidemap
