// Clearing a map (Replica::ClearMap): the issuing call's time against the
// map's size, the bytes of the one sync frame that carries the clear, the
// background removal's time, and reads of the cleared map afterwards against
// the same reads of a map never written (ratios measured in this one run).
//
// Prints one summary line:
//   clear keys=N issue_ms=… frame_bytes=… removal_ms=… get_cleared_vs_empty=…
//   scan_cleared_vs_empty=…
// (the ratios are time per read, cleared over empty: 1.0 is no dearer).
// TIDEMAP_BENCH_CLEAR_KEYS sets N (default 100,000; the issue's figure is
// for 1,000,000).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/report.h"
#include "bench/workload.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/random.h>
#include <tidemap/net/frame.h>
#include <tidemap/replica/replica.h>
#include <tidemap/schemas/codec.h>

namespace tidemap {
namespace {

using bench::KeyString;
using bench::TempDir;
using bench::TheValues;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kNodeId = 0x7469'6465'6d61'7002;
constexpr uint64_t kClearKeysDefault = 100'000;
constexpr uint64_t kClearKeysMax = 10'000'000;
constexpr uint64_t kLoadBatchOps = 1000;
constexpr int kReads = 100'000;  // gets per side
constexpr int kScans = 20'000;   // first pages per side
constexpr std::string_view kCleared = "cleared";
constexpr std::string_view kEmpty = "never-written";

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Seconds for `reads` gets of random loaded keys in `map`.
double GetSeconds(const Replica& r, std::string_view map, uint64_t keys) {
  SeededRandom rng(7);
  const auto start = Clock::now();
  for (int i = 0; i < kReads; ++i) {
    auto got = r.Get(map, KeyString(rng.Uniform(keys)));
    benchmark::DoNotOptimize(got);
  }
  return MsSince(start) / 1000;
}

double ScanSeconds(const Replica& r, std::string_view map) {
  const auto start = Clock::now();
  for (int i = 0; i < kScans; ++i) {
    auto page = r.Scan(map, "", std::nullopt, 100);
    benchmark::DoNotOptimize(page);
  }
  return MsSince(start) / 1000;
}

std::string Load(Replica* r, uint64_t keys) {
  for (uint64_t start = 0; start < keys; start += kLoadBatchOps) {
    WriteBatch batch;
    for (uint64_t i = start; i < keys && i < start + kLoadBatchOps; ++i) {
      batch.Put(kCleared, KeyString(i), TheValues().At(i));
    }
    auto v = r->Write(batch);
    if (!v.ok()) return v.status().ToString();
  }
  return {};
}

// The frame that streams the clear: its record in a RecordBatch, as the
// session sends it, plus the channel's length prefix and AEAD overhead.
Result<size_t> FrameBytes(const Replica& r) {
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<KeyedRecord> clear, r.ReadRecord(kCleared, ""));
  if (!clear.has_value()) return Status::Internal("the clear's record is missing");
  msg::RecordBatch batch;
  batch.first_seq = batch.last_seq = r.LastSeq();
  batch.records.push_back(std::move(*clear));
  TIDEMAP_ASSIGN_OR_RETURN(std::string bytes, EncodeMessage(msg::Message{1, std::move(batch)}));
  return bytes.size() + net::SecureChannel::kFrameOverheadBytes;
}

void BM_ClearMap(benchmark::State& state) {
  const uint64_t keys =
      bench::CountFromEnv("TIDEMAP_BENCH_CLEAR_KEYS", kClearKeysDefault, 1000, kClearKeysMax);
  for (auto _ : state) {
    TempDir dir;
    SystemClock clock;
    ReplicaOptions o;
    o.path = dir.db();
    o.clock = &clock;
    o.node_id = kNodeId;
    o.durability = Durability::kRelaxed;
    auto opened = Replica::Open(std::move(o));
    if (!opened.ok()) return state.SkipWithError(opened.status().ToString().c_str());
    std::unique_ptr<Replica> r = std::move(opened).value();
    if (const std::string error = Load(r.get(), keys); !error.empty()) {
      return state.SkipWithError(error.c_str());
    }
    r->Compact();
    const auto issue_start = Clock::now();
    auto cleared = r->ClearMap(kCleared);
    const double issue_ms = MsSince(issue_start);
    if (!cleared.ok()) return state.SkipWithError(cleared.status().ToString().c_str());
    auto frame_bytes = FrameBytes(*r);
    if (!frame_bytes.ok()) return state.SkipWithError(frame_bytes.status().ToString().c_str());
    const auto removal_start = Clock::now();
    for (;;) {
      auto removal = r->RemoveClearedRecords();
      if (!removal.ok()) return state.SkipWithError(removal.status().ToString().c_str());
      if (removal->maps_pending == 0) break;
    }
    const double removal_ms = MsSince(removal_start);
    // Each side twice, alternating, the second pass counted: warm caches.
    GetSeconds(*r, kCleared, keys);
    GetSeconds(*r, kEmpty, keys);
    const double get_ratio = GetSeconds(*r, kCleared, keys) / GetSeconds(*r, kEmpty, keys);
    ScanSeconds(*r, kCleared);
    ScanSeconds(*r, kEmpty);
    const double scan_ratio = ScanSeconds(*r, kCleared) / ScanSeconds(*r, kEmpty);
    state.counters["issue_ms"] = issue_ms;
    state.counters["frame_bytes"] = static_cast<double>(*frame_bytes);
    state.counters["removal_ms"] = removal_ms;
    char line[256];
    std::snprintf(line, sizeof(line),
                  "clear keys=%llu issue_ms=%.3f frame_bytes=%zu removal_ms=%.0f "
                  "get_cleared_vs_empty=%.2f scan_cleared_vs_empty=%.2f",
                  static_cast<unsigned long long>(keys), issue_ms, *frame_bytes, removal_ms,
                  get_ratio, scan_ratio);
    AddReportLine(line);
  }
}
BENCHMARK(BM_ClearMap)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tidemap
