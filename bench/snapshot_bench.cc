// Snapshot export, import and bootstrap, each against the limit underneath,
// measured in one run on LevelDB's memory Env (no disk noise):
//   export  vs LevelDB's full scan of the same database (raw iterator over
//           every row of the record family);
//   import  vs LevelDB's raw batched writes of the same rows (1000 per batch,
//           unsynced, the last memtable written out as the import's is);
//   bootstrap of an empty node: import + open + catch-up (a tree diff with
//           the source after 1% of the keys changed) vs a tree diff alone.
// Both LevelDB anchors open the database with the replica's own options
// (bench/raw_db.h).
// Keys: 100,000 (TIDEMAP_BENCH_SNAPSHOT_KEYS=1000000 for the 1M figures),
// 100-byte values. One iteration of kRuns runs, the two sides of each pair
// in alternating order from run to run; the report lines give each ratio's
// median over the runs and its least and greatest. Rates and times are of
// the process's CPU time, so that other work on the machine does not skew a
// ratio.
#include <benchmark/benchmark.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/cpu.h"
#include "bench/raw_db.h"
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
// Runs of the whole scenario in one invocation; the ratios are their medians.
constexpr int kRuns = 5;

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

  // Frees the memory of the database at `path`.
  void Destroy(const std::string& path) {
    leveldb::Options o;
    o.env = env.get();
    TIDEMAP_CHECK(leveldb::DestroyDB(path, o).ok());
  }

  // Keys per second of a raw LevelDB scan of every row of the database at `path`.
  double RawScanRate(const std::string& path) {
    std::string error;
    const std::unique_ptr<bench::RawDb> db = bench::RawDb::Open(path, env.get(), &error);
    TIDEMAP_CHECK(db != nullptr);
    const double start = Now();
    uint64_t rows = 0, bytes = 0;
    leveldb::ReadOptions ro;
    ro.verify_checksums = true;  // as the store reads every block
    std::unique_ptr<leveldb::Iterator> it(db->db()->NewIterator(ro));
    for (it->Seek("r"); it->Valid() && it->key()[0] == 'r'; it->Next()) {
      ++rows;
      bytes += it->value().size();
    }
    benchmark::DoNotOptimize(bytes);
    return static_cast<double>(rows) / Seconds(start);
  }

  // Keys per second of raw batched LevelDB writes of rows like the records'.
  // The last memtable is written out inside the timing, as an import's is.
  double RawWriteRate(uint64_t keys, const std::string& path) {
    std::string error;
    const std::unique_ptr<bench::RawDb> db = bench::RawDb::Open(path, env.get(), &error);
    TIDEMAP_CHECK(db != nullptr);
    const std::string value(kValueBytes + 24, 'v');  // the record header's bytes too
    const double start = Now();
    for (uint64_t i = 0; i < keys; i += 1000) {
      leveldb::WriteBatch b;
      for (uint64_t j = i; j < std::min(keys, i + 1000); ++j) b.Put("rm\0" + Key(j), value);
      TIDEMAP_CHECK(db->db()->Write(leveldb::WriteOptions(), &b).ok());
    }
    const leveldb::Slice beyond_lo("\xff"), beyond_hi("\xff\xff");
    db->db()->CompactRange(&beyond_lo, &beyond_hi);
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
  const RecordViewFn add = [&](const SnapshotRecordView& v) { return (*loader)->Add(v); };
  std::vector<SnapshotWatermark> marks;
  for (;;) {
    auto part = reader.Next(add, &marks);
    TIDEMAP_CHECK_MSG(part.ok(), part.status().ToString().c_str());
    if (*part == SnapshotPart::kEnd) break;
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

// What one run measured.
struct Figures {
  double scan_rate = 0, export_rate = 0, write_rate = 0, import_rate = 0;
  double import_s = 0, open_s = 0, catchup_s = 0, diff_s = 0;
  double export_ratio() const { return export_rate / scan_rate; }
  double import_ratio() const { return import_rate / write_rate; }
  double bootstrap_s() const { return import_s + open_s + catchup_s; }
  double speedup() const { return diff_s / bootstrap_s(); }
};

// The median of `v` (odd sizes: the middle one), and its least and greatest.
struct Spread {
  double median, min, max;
};
template <typename F>
Spread SpreadOf(const std::vector<Figures>& runs, F f) {
  std::vector<double> v;
  for (const Figures& r : runs) v.push_back(f(r));
  std::sort(v.begin(), v.end());
  return Spread{v[v.size() / 2], v.front(), v.back()};
}

void ReportFigures(uint64_t keys, size_t file_bytes, const std::vector<Figures>& runs) {
  const auto k = static_cast<unsigned long long>(keys);
  const auto n = static_cast<int>(runs.size());
  const Spread exp = SpreadOf(runs, [](const Figures& f) { return f.export_ratio(); });
  const Spread imp = SpreadOf(runs, [](const Figures& f) { return f.import_ratio(); });
  const Spread boot = SpreadOf(runs, [](const Figures& f) { return f.speedup(); });
  auto median = [&](double Figures::*field) {
    return SpreadOf(runs, [field](const Figures& f) { return f.*field; }).median;
  };
  char line[512];
  std::snprintf(line, sizeof(line),
                "snapshot export keys=%llu keys_per_s=%.0f bytes=%llu (leveldb full scan "
                "keys_per_s=%.0f, ratio %.2f, %.2f to %.2f in %d runs)",
                k, median(&Figures::export_rate), static_cast<unsigned long long>(file_bytes),
                median(&Figures::scan_rate), exp.median, exp.min, exp.max, n);
  AddReportLine(line);
  std::snprintf(line, sizeof(line),
                "snapshot import keys=%llu keys_per_s=%.0f (leveldb batched writes "
                "keys_per_s=%.0f, ratio %.2f, %.2f to %.2f in %d runs)",
                k, median(&Figures::import_rate), median(&Figures::write_rate), imp.median, imp.min,
                imp.max, n);
  AddReportLine(line);
  std::snprintf(line, sizeof(line),
                "snapshot bootstrap keys=%llu import+open+catchup_s=%.2f (%.2f + %.2f + %.2f) "
                "tree_diff_alone_s=%.2f speedup=%.2f, %.2f to %.2f in %d runs",
                k, SpreadOf(runs, [](const Figures& f) { return f.bootstrap_s(); }).median,
                median(&Figures::import_s), median(&Figures::open_s), median(&Figures::catchup_s),
                median(&Figures::diff_s), boot.median, boot.min, boot.max, n);
  AddReportLine(line);
}

// One run, its sides in the order `flip` picks (each pair alternates from
// run to run): a scan of the source's records and an export of it, raw
// writes and an import of the export, then 1% of the keys change and an
// empty node bootstraps by the import + catch-up and by a tree diff alone.
Figures OneRun(Bench& b, std::unique_ptr<Replica>* a, int run, std::string* file) {
  const uint64_t keys = SnapshotKeys();
  const bool flip = run % 2 == 1;
  const std::string n = std::to_string(run);
  // Each run's new nodes are new to the source, as a restored node is.
  const uint64_t imported_id = 2 + 2 * static_cast<uint64_t>(run);
  const uint64_t empty_id = imported_id + 1;
  Figures f;
  for (int side = 0; side < 2; ++side) {
    if ((side == 0) != flip) {
      a->reset();
      f.scan_rate = b.RawScanRate("/a");
      *a = b.Open(1, "/a");
      continue;
    }
    file->clear();
    const double start = Now();
    auto counts = ExportSnapshot(**a, kBaseMs, [&](std::string_view bytes) {
      file->append(bytes);
      return Status::Ok();
    });
    f.export_rate = static_cast<double>(keys) / Seconds(start);
    TIDEMAP_CHECK(counts.ok() && counts->records == keys);
  }
  for (int side = 0; side < 2; ++side) {
    if ((side == 0) != flip) {
      f.write_rate = b.RawWriteRate(keys, "/raw-write" + n);
      continue;
    }
    const double start = Now();
    Import(b, *file, imported_id, "/imported" + n);
    f.import_s = Seconds(start);
    f.import_rate = static_cast<double>(keys) / f.import_s;
  }
  // 1% of the keys change after the snapshot.
  const std::string changed(kValueBytes, static_cast<char>('a' + run));
  for (uint64_t i = 0; i < keys; i += 100) TIDEMAP_CHECK((*a)->Put("m", Key(i), changed).ok());
  for (int side = 0; side < 2; ++side) {
    if ((side == 0) != flip) {
      auto d = b.Open(empty_id, "/empty" + n);
      f.diff_s = Catchup(**a, *d, empty_id);
      continue;
    }
    const double start = Now();
    auto c = b.Open(imported_id, "/imported" + n);
    f.open_s = Seconds(start);
    f.catchup_s = Catchup(**a, *c, imported_id);
  }
  for (const char* path : {"/raw-write", "/imported", "/empty"}) b.Destroy(path + n);
  return f;
}

void BM_SnapshotScenario(benchmark::State& state) {
  const uint64_t keys = SnapshotKeys();
  for (auto _ : state) {
    Bench b;
    auto a = b.Open(1, "/a");
    b.Fill(*a, keys);
    a->Compact();
    // The file's buffer is allocated and touched once, before any run, so
    // that no export pays for growing it.
    std::string file(keys * (kValueBytes + 64), '\0');
    std::vector<Figures> runs;
    for (int run = 0; run < kRuns; ++run) runs.push_back(OneRun(b, &a, run, &file));
    ReportFigures(keys, file.size(), runs);
    state.counters["export_vs_scan"] =
        SpreadOf(runs, [](auto& f) { return f.export_ratio(); }).median;
    state.counters["import_vs_write"] =
        SpreadOf(runs, [](auto& f) { return f.import_ratio(); }).median;
    state.counters["bootstrap_speedup"] =
        SpreadOf(runs, [](auto& f) { return f.speedup(); }).median;
  }
}
BENCHMARK(BM_SnapshotScenario)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tidemap
