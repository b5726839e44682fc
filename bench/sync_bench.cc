// Sync macro benchmark: two replicas in one process, N keys, d differences,
// synced over a perfect in-process link by two SyncSessions. Each case prints
//   sync N=… d=… placement=… bytes=A>B/B>A round_trips=… ms=…
// where bytes are of the encoded Cap'n Proto frames (schemas/codec.h) each way,
// round_trips counts sequential exchanges (two one-way hops each), and ms is
// the wall time of the sync alone (no network latency; set-up excluded). A
// case with d ≤ 10k runs three times from fresh set-ups; its line is the run
// of median time, with the three times after it.
//
// placement=uniform: d keys chosen uniformly, d/2 present only on each side.
// placement=newest:  both sides hold the N keys and have synced; then one side
//                    writes d new keys, and the sync catches the other up.
//
// Set-up cost dominates at N=1M, so each node's common base (every key no case
// removes) is built once per N on disk, compacted, and copied for each case;
// the case's own writes follow, then both nodes close and reopen. The sync
// itself runs on a database just opened (cold block cache, warm OS cache).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>

#include "bench/report.h"
#include "tests/support/sync_pump.h"
#include <tidemap/base/random.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/codec.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kNodeA = 0xa;
constexpr uint64_t kNodeB = 0xb;
constexpr uint64_t kWriter = 0x77;               // the origin of every base record
constexpr uint64_t kBaseMs = 1'700'000'000'000;  // 2023: behind any real clock

std::string KeyOf(uint64_t i) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "k%015llu", static_cast<unsigned long long>(i));
  return buf;
}

KeyedRecord RecordOf(uint64_t i) {
  return KeyedRecord{"m", KeyOf(i), "value-" + KeyOf(i).substr(6),
                     Version{Timestamp::FromParts(kBaseMs + i / 1000, i % 1000), kWriter}, false};
}

struct Opened {
  std::unique_ptr<SystemClock> clock;
  std::unique_ptr<Replica> replica;
};

Opened OpenAt(const fs::path& dir, uint64_t node) {
  Opened o;
  o.clock = std::make_unique<SystemClock>();
  ReplicaOptions ro;
  ro.path = dir.string();
  ro.clock = o.clock.get();
  ro.node_id = node;
  ro.durability = Durability::kRelaxed;
  auto r = Replica::Open(std::move(ro));
  TIDEMAP_CHECK_MSG(r.ok(), r.status().ToString().c_str());
  o.replica = std::move(r).value();
  return o;
}

void ApplyIndices(Replica& r, const std::vector<uint64_t>& indices) {
  std::vector<KeyedRecord> batch;
  for (uint64_t i : indices) {
    batch.push_back(RecordOf(i));
    if (batch.size() == 1000) {
      TIDEMAP_CHECK(r.ApplyRemote(batch, kWriter).ok());
      batch.clear();
    }
  }
  if (!batch.empty()) TIDEMAP_CHECK(r.ApplyRemote(batch, kWriter).ok());
}

struct SyncResult {
  uint64_t bytes_a_to_b = 0;
  uint64_t bytes_b_to_a = 0;
  int hops = 0;
  double ms = 0;
};

// Runs fresh sessions between a and b to idle over a perfect link; with
// `diff`, A asks for an anti-entropy tree diff.
SyncResult RunSync(Replica& a, Replica& b, bool diff) {
  SyncOptions opts;
  opts.diff_interval_ms = 0;
  SyncSession sa(&a, kNodeB, opts), sb(&b, kNodeA, opts);
  if (diff) sa.RequestDiff();
  SyncResult res;
  const uint64_t now = kBaseMs;
  const auto start = std::chrono::steady_clock::now();
  testing::SyncPumpOptions pump;
  pump.now_ms = now;
  pump.rounds_max = 10'000;
  pump.deliver = [&res](const msg::Message& m, bool a_to_b) {
    auto bytes = EncodeMessage(m);
    TIDEMAP_CHECK(bytes.ok());
    (a_to_b ? res.bytes_a_to_b : res.bytes_b_to_a) += bytes->size();
  };
  const testing::SyncPumpResult pumped = testing::PumpSync(sa, sb, pump);
  TIDEMAP_CHECK_MSG(pumped.status.ok(), pumped.status.ToString().c_str());
  res.hops = pumped.rounds;
  res.ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return res;
}

struct Bases {
  fs::path root;
  uint64_t n = 0;
  std::vector<uint64_t> perm;  // perm[0, d_max) are the keys cases may remove
};

constexpr uint64_t kDMax = 100'000;

const Bases& BasesFor(uint64_t n) {
  static std::map<uint64_t, Bases> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  Bases& b = cache[n];
  b.n = n;
  b.root = fs::temp_directory_path() / ("tidemap-syncbench-" + std::to_string(n));
  fs::remove_all(b.root);
  fs::create_directories(b.root);
  b.perm.resize(n);
  std::iota(b.perm.begin(), b.perm.end(), 0);
  SeededRandom rng(n);
  for (uint64_t i = n - 1; i > 0; --i) std::swap(b.perm[i], b.perm[rng.Uniform(i + 1)]);
  const std::vector<uint64_t> common(
      b.perm.begin() + static_cast<std::ptrdiff_t>(std::min(n, kDMax)), b.perm.end());
  for (uint64_t node : {kNodeA, kNodeB}) {
    Opened o = OpenAt(b.root / ("base-" + std::to_string(node)), node);
    ApplyIndices(*o.replica, common);
    o.replica->Compact();  // a settled node's database, not a freshly bulk-loaded one
  }
  return b;
}

fs::path CaseDir(const Bases& b, uint64_t node) {
  return b.root / ("case-" + std::to_string(node));
}

// Copies node's base to a fresh case dir and opens it.
Opened CaseReplica(const Bases& b, uint64_t node) {
  const fs::path dir = CaseDir(b, node);
  fs::remove_all(dir);
  fs::copy(b.root / ("base-" + std::to_string(node)), dir);
  return OpenAt(dir, node);
}

// Both nodes of a case, from their bases plus `on_a` / `on_b`, knowing each
// other already (cursors at their log ends), so no first-contact repair runs.
struct CasePair {
  Opened a, b;
};
CasePair OpenCasePair(const Bases& bases, const std::vector<uint64_t>& on_a,
                      const std::vector<uint64_t>& on_b) {
  CasePair p{CaseReplica(bases, kNodeA), CaseReplica(bases, kNodeB)};
  ApplyIndices(*p.a.replica, on_a);
  ApplyIndices(*p.b.replica, on_b);
  // Cursors tagged with the other's incarnation, as a finished sync leaves them.
  TIDEMAP_CHECK(
      static_cast<SyncStore&>(*p.a.replica)
          .ReplacePeer(kNodeB, PeerState{p.a.replica->LastSeq(), p.b.replica->incarnation(),
                                         p.b.replica->LastSeq()})
          .ok());
  TIDEMAP_CHECK(
      static_cast<SyncStore&>(*p.b.replica)
          .ReplacePeer(kNodeA, PeerState{p.b.replica->LastSeq(), p.a.replica->incarnation(),
                                         p.a.replica->LastSeq()})
          .ok());
  // Compacted (as the base is), closed and reopened: the close checkpoints
  // the tree the set-up writes changed, so neither that nor compacting them
  // is charged to the sync, and the block cache starts cold.
  for (auto [node, opened] : {std::pair{kNodeA, &p.a}, std::pair{kNodeB, &p.b}}) {
    opened->replica->Compact();
    opened->replica.reset();
    *opened = OpenAt(CaseDir(bases, node), node);
  }
  return p;
}

// Prints the case's line from `r` (the run of median time), with every run's
// time after it when there was more than one.
void Report(const char* placement, uint64_t n, uint64_t d, const SyncResult& r, double record_bytes,
            const std::vector<double>& all_ms, benchmark::State& state) {
  char line[256];
  std::snprintf(line, sizeof(line),
                "sync N=%llu d=%llu placement=%s bytes=%llu/%llu (total %llu) round_trips=%d "
                "ms=%.1f",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(d), placement,
                static_cast<unsigned long long>(r.bytes_a_to_b),
                static_cast<unsigned long long>(r.bytes_b_to_a),
                static_cast<unsigned long long>(r.bytes_a_to_b + r.bytes_b_to_a), (r.hops + 1) / 2,
                r.ms);
  std::string text = line;
  if (record_bytes > 0) {
    char extra[96];
    std::snprintf(extra, sizeof(extra), " vs_record_bytes=%.2f",
                  static_cast<double>(r.bytes_a_to_b + r.bytes_b_to_a) / record_bytes);
    text += extra;
  }
  if (all_ms.size() > 1) {
    text += " (median of";
    for (size_t i = 0; i < all_ms.size(); ++i) {
      char one[32];
      std::snprintf(one, sizeof(one), "%s %.1f", i == 0 ? "" : ",", all_ms[i]);
      text += one;
    }
    text += " ms)";
  }
  AddReportLine(text);
  state.counters["bytes_total"] = static_cast<double>(r.bytes_a_to_b + r.bytes_b_to_a);
  state.counters["round_trips"] = (r.hops + 1) / 2;
  state.counters["sync_ms"] = r.ms;
}

// RunSync with the benchmark's timer running (it is paused around every
// set-up), then a check that the two replicas converged.
SyncResult TimedSync(benchmark::State& state, Replica& a, Replica& b, bool diff) {
  state.ResumeTiming();
  const SyncResult r = RunSync(a, b, diff);
  state.PauseTiming();
  TIDEMAP_CHECK(a.MerkleRoot() == b.MerkleRoot());
  return r;
}

// A sync of a d ≤ 10k case takes milliseconds, and one slow spell of the
// shared host can double it: such a case runs this many times, each from a
// fresh set-up, and reports the run of median time. A d=100k case runs once.
constexpr int kTriesSmallD = 3;
int TriesFor(uint64_t d) { return d <= 10'000 ? kTriesSmallD : 1; }

// Runs `run_once` (which returns one sync's result) `tries` times and
// returns the result of median time, with every run's time in `all_ms`.
template <typename RunOnce>
SyncResult MedianRun(int tries, RunOnce&& run_once, std::vector<double>* all_ms) {
  std::vector<SyncResult> runs;
  for (int i = 0; i < tries; ++i) runs.push_back(run_once());
  for (const SyncResult& r : runs) all_ms->push_back(r.ms);
  std::sort(runs.begin(), runs.end(),
            [](const SyncResult& x, const SyncResult& y) { return x.ms < y.ms; });
  return runs[runs.size() / 2];
}

void BM_SyncUniform(benchmark::State& state) {
  const auto n = static_cast<uint64_t>(state.range(0));
  const auto d = static_cast<uint64_t>(state.range(1));
  const Bases& b = BasesFor(n);
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<double> all_ms;
    const SyncResult median = MedianRun(
        TriesFor(d),
        [&] {
          // perm[0, d/2): only on A; perm[d/2, d): only on B; perm[d, d_max): both.
          const auto p = [&](uint64_t from, uint64_t to) {
            return std::vector<uint64_t>(b.perm.begin() + static_cast<std::ptrdiff_t>(from),
                                         b.perm.begin() + static_cast<std::ptrdiff_t>(to));
          };
          const uint64_t dmax = std::min(n, kDMax);
          std::vector<uint64_t> only_a = p(0, d / 2), only_b = p(d / 2, d), both = p(d, dmax);
          only_a.insert(only_a.end(), both.begin(), both.end());
          only_b.insert(only_b.end(), both.begin(), both.end());
          // What runs is the anti-entropy diff A asks for.
          CasePair pair = OpenCasePair(b, only_a, only_b);
          Replica& a = *pair.a.replica;
          Replica& bb = *pair.b.replica;
          return TimedSync(state, a, bb, /*diff=*/true);
        },
        &all_ms);
    Report("uniform", n, d, median, 0, all_ms, state);
    state.ResumeTiming();
  }
}

void BM_SyncNewest(benchmark::State& state) {
  const auto n = static_cast<uint64_t>(state.range(0));
  const auto d = static_cast<uint64_t>(state.range(1));
  const Bases& b = BasesFor(n);
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<double> all_ms;
    double record_bytes = 0;
    const SyncResult median = MedianRun(
        TriesFor(d),
        [&] {
          const std::vector<uint64_t> rest(
              b.perm.begin(), b.perm.begin() + static_cast<std::ptrdiff_t>(std::min(n, kDMax)));
          CasePair pair = OpenCasePair(b, rest, rest);
          Replica& a = *pair.a.replica;
          Replica& bb = *pair.b.replica;
          // A writes d new keys while B is away: B catches up through A's oplog.
          record_bytes = 0;  // the same in every run
          WriteBatch wb;
          for (uint64_t i = 0; i < d; ++i) {
            const KeyedRecord r = RecordOf(n + i);
            wb.Put(r.map, r.key, r.value);
            record_bytes += static_cast<double>(r.map.size() + r.key.size() + r.value.size() + 16);
            if (wb.size() == 1000) {
              TIDEMAP_CHECK(a.Write(wb).ok());
              wb = WriteBatch();
            }
          }
          if (wb.size() > 0) TIDEMAP_CHECK(a.Write(wb).ok());
          return TimedSync(state, a, bb, /*diff=*/false);
        },
        &all_ms);
    Report("newest", n, d, median, record_bytes, all_ms, state);
    state.ResumeTiming();
  }
}

void SyncCases(benchmark::internal::Benchmark* b) {
  for (int64_t n : {100'000, 1'000'000}) {
    for (int64_t d : {0, 1, 10, 100, 1'000, 10'000, 100'000}) b->Args({n, d});
  }
}

BENCHMARK(BM_SyncUniform)->Apply(SyncCases)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SyncNewest)->Apply(SyncCases)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tidemap
