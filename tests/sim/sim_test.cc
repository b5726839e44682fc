// Proves that a tidemap cluster converges to the LWW maximum of every accepted
// write, loses no acknowledged write, never brings a purged key back, and
// keeps its per-node invariants, whatever the seeded simulator
// (tests/sim/sim.h) does to its network, disks and clocks (a third of its
// nodes sealing their values at rest, the others not), with tombstone GC
// on or off; and that a seed replays exactly (same trace hash).
//
// Environment: TIDEMAP_SIM_SEEDS (how many seeds; default 300, 30 in
// sanitizer builds), TIDEMAP_SIM_FIRST_SEED (default 1), TIDEMAP_SIM_SEED
// (replay one seed, with a longer event log: TIDEMAP_SIM_LOG_EVENTS events,
// default 400), TIDEMAP_SIM_SCALE (run length and op count, default 1),
// TIDEMAP_SIM_PERIODIC_DIFFS=0 (no periodic anti-entropy: shows which
// histories only the periodic diff repairs).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/sim/sim.h"
#include "tests/support/test_util.h"

// Seeds a plain ctest run takes: 300 in CI (Release); sanitizer builds,
// roughly ten times slower, set fewer (tests/sim/CMakeLists.txt).
#ifndef TIDEMAP_SIM_DEFAULT_SEEDS
#define TIDEMAP_SIM_DEFAULT_SEEDS 300
#endif

namespace tidemap::sim {
namespace {

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

SimParams ParamsFromEnv() {
  SimParams p;
  if (EnvSet("TIDEMAP_SIM_SCALE")) p.scale = std::atof(std::getenv("TIDEMAP_SIM_SCALE"));
  p.periodic_diffs = testing::IntFromEnv("TIDEMAP_SIM_PERIODIC_DIFFS", 1) != 0;
  return p;
}

TEST(Sim, SeededClusterHistoriesKeepEveryInvariant) {
  const bool replay = EnvSet("TIDEMAP_SIM_SEED");
  const uint64_t first = replay ? testing::IntFromEnv("TIDEMAP_SIM_SEED", 0)
                                : testing::IntFromEnv("TIDEMAP_SIM_FIRST_SEED", 1);
  const uint64_t count =
      replay ? 1 : testing::IntFromEnv("TIDEMAP_SIM_SEEDS", TIDEMAP_SIM_DEFAULT_SEEDS);
  SimParams params = ParamsFromEnv();
  if (replay) params.log_tail_events = testing::IntFromEnv("TIDEMAP_SIM_LOG_EVENTS", 400);

  std::array<uint64_t, static_cast<int>(Counter::kCount)> totals{};
  std::string failing;
  uint64_t events = 0;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + count; ++seed) {
    const SimResult r = RunSeed(seed, params);
    events += r.events;
    for (int c = 0; c < static_cast<int>(Counter::kCount); ++c) {
      if (static_cast<Counter>(c) == Counter::kHealMsMax) {
        totals[c] = std::max(totals[c], r.counters[c]);
      } else {
        totals[c] += r.counters[c];
      }
    }
    if (!r.ok()) {
      ADD_FAILURE() << r.Report();
      failing += " " + std::to_string(seed);
    } else if (replay) {
      std::printf("%s", r.Report().c_str());
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("sim: %llu seeds from %llu in %.1f s, %llu events\n",
              static_cast<unsigned long long>(count), static_cast<unsigned long long>(first), secs,
              static_cast<unsigned long long>(events));
  for (int c = 0; c < static_cast<int>(Counter::kCount); ++c) {
    std::printf("  %-34s %llu\n", CounterName(static_cast<Counter>(c)),
                static_cast<unsigned long long>(totals[c]));
  }
  if (!failing.empty()) std::printf("failing seeds:%s\n", failing.c_str());
  EXPECT_TRUE(failing.empty()) << "failing seeds:" << failing;

  // Over a CI-sized run every kind of fault must actually have struck.
  if (count >= 100) {
    for (Counter c : {Counter::kCuts,           Counter::kMsgDropped,
                      Counter::kMsgDuplicated,  Counter::kMsgReordered,
                      Counter::kFaultsDetected, Counter::kPartitionsSym,
                      Counter::kPartitionsAsym, Counter::kPartitionCuts,
                      Counter::kCrashKeep,      Counter::kCrashDrop,
                      Counter::kWipes,          Counter::kLateJoins,
                      Counter::kClockJumps,     Counter::kClockBeyond,
                      Counter::kBatchRefused,   Counter::kDiffRecordsRefused,
                      Counter::kPrunedRows,     Counter::kTombstonesPurged,
                      Counter::kPeerResets,     Counter::kDiffsCompleted}) {
      EXPECT_GT(totals[static_cast<int>(c)], 0u) << CounterName(c) << " never happened";
    }
  }
}

TEST(Sim, SameSeedGivesTheSameTraceHash) {
  const uint64_t seed = testing::IntFromEnv("TIDEMAP_SIM_SEED", 20'260'101);
  const SimParams params = ParamsFromEnv();
  const SimResult a = RunSeed(seed, params);
  const SimResult b = RunSeed(seed, params);
  EXPECT_TRUE(a.ok()) << a.Report();
  EXPECT_EQ(a.trace_hash, b.trace_hash) << "seed " << seed << " did not replay exactly";
  EXPECT_EQ(a.events, b.events);
  EXPECT_EQ(a.counters, b.counters);
  const SimResult other = RunSeed(seed + 1, params);
  EXPECT_NE(a.trace_hash, other.trace_hash) << "the trace hash ignores the seed";
  std::printf("seed %llu twice: trace hash %016llx both times (%llu events)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(a.trace_hash),
              static_cast<unsigned long long>(a.events));
}

}  // namespace
}  // namespace tidemap::sim
