// The deterministic cluster simulator: one seed, one identical run of a whole
// tidemap cluster in one thread.
//
// RunSeed(seed) derives a cluster from the seed (2-5 replicas plus late
// joiners, a full mesh or a random connected topology, sync options, fault
// rates), then runs it in simulated time: each replica lives on its own
// memory-backed LevelDB (a MemEnv under a FaultEnv) with its own ManualClock
// (global simulated time plus a per-node offset); SyncSessions talk over
// simulated connections (two FIFO queues with per-message delays). A Zipf
// workload of puts and deletes runs on random live nodes while faults strike:
// connection cuts, message drop / duplication / reordering inside a
// connection, symmetric and asymmetric partitions, crashes that keep or drop
// unsynced data, wiped nodes, late joiners, clock offsets and jumps (beyond
// max_clock_offset in some seeds), and tombstone GC (in some seeds, with a
// horizon of seconds and clocks kept within a few seconds of each other, as
// the horizon must exceed skew plus delivery delays). A final heal phase turns
// every fault off and must converge within a bound; with GC, a last round
// then purges every tombstone everywhere and the roots must still agree.
//
// In some seeds puts carry a TTL (per-record expiry): reads are checked
// never to serve a value past its expiry by more than the node's clock
// offset, replicas announce expiries (ExpireRecords), the GC purges expired
// records like tombstones, and after the final purge no expired value is
// held or comes back.
//
// In some seeds the workload clears maps (Replica::ClearMap) among its writes,
// with every fault above; each step runs a bounded batch of every node's
// removal of cleared records. Invariants as for deletes: no node stores a
// record older than a clear it holds, reads never serve one, the final
// state holds no key whose LWW maximum is older than its map's clear, and
// the roots agree after heal and after the final purge (a clear is kept).
//
// Every event (write result, delivery, fault) is folded into a 64-bit trace
// hash; the same seed gives the same hash. Invariants are checked as the run
// goes (HLC monotonic per node, seqs never reused, nothing committed lost by a
// crash, stored Merkle tree equal to a rebuild after each restart, no
// replica ever live again on a version older than a tombstone it held or
// purged) and at the end (equal roots and full scans on every replica, every
// key at the LWW maximum of the accepted writes or, when that is a purged
// tombstone, absent, quiescence, cursors caught up).
//
// Everything here is single-threaded; LevelDB's own background thread only
// compacts, which changes no observable content.
#ifndef TIDEMAP_TESTS_SIM_SIM_H_
#define TIDEMAP_TESTS_SIM_SIM_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace tidemap::sim {

// What happened in a run, by kind. Summed over seeds for the report.
enum class Counter : int {
  kPuts,
  kDeletes,
  kBatchWrites,  // multi-op WriteBatch writes
  kMessages,     // messages delivered to a session
  kConnects,
  kConnectBlocked,  // a connection attempt failed because of a partition
  kCuts,            // random connection drops
  kMsgDropped,      // in-connection faults injected...
  kMsgDuplicated,
  kMsgReordered,
  kFaultsDetected,     // ...each one then either reported by a session (Receive error),
  kStallCuts,          // or left a connection silent (a dropped last message): cut,
  kFaultsUndelivered,  // or was discarded with its connection (cut first, or a 2nd fault)
  kPartitionsSym,
  kPartitionsAsym,
  kPartitionCuts,  // a message hit a partition: lost, connection cut
  kCrashKeep,      // process crash: unsynced data kept
  kCrashDrop,      // machine crash: unsynced data dropped
  kRestarts,
  kWipes,
  kWipeLostWrites,         // accepted writes that lived only on a wiped disk
  kWipeStaleCursors,       // peers holding a cursor > 0 for a wiped node when it returns
  kHlcBehindAfterWipe,     // a wiped node issued a version below its former self's
  kVersionReissued,        // ...or exactly one its former self issued
  kEqualVersionConflicts,  // two accepted writes to one key with one version, other bytes
  kLateJoins,
  kClockJumps,
  kClockBeyond,         // offsets set beyond max_clock_offset
  kBatchRefused,        // BatchRefused messages delivered
  kDiffRefusedCuts,     // a refused clock inside a tree diff closed the session
  kDiffRecordsRefused,  // records a tree diff left out for their clock (the rest applied)
  kPrunedRows,
  kTombstonesPurged,       // tombstone GC (seeds with GC on)
  kBelowWatermarkDropped,  // tombstones at or below a GC watermark not stored by a diff or stream
  kStaleRedeleted,         // records older than a GC watermark answered with the delete
  kPeerResets,             // sessions that found the peer's database changed (wiped)
  kDiffsCompleted,
  kTtlPuts,        // puts with a TTL (seeds with TTL on)
  kExpireEvents,   // `expire` events a replica announced
  kExpiredPurged,  // expired records the GC purged
  kExpiryChecks,   // reads checked against their expiry
  kClears,         // maps cleared (seeds with clears on)
  kClearRemoved,   // records older than a clear the background removal deleted
  kHealMsMax,      // the longest heal (simulated ms); max, not sum
  kCount,
};

const char* CounterName(Counter c);

struct SimResult {
  uint64_t seed = 0;
  uint64_t trace_hash = 0;
  std::string config;                 // the cluster the seed made, one line
  std::vector<std::string> failures;  // broken invariants; empty when the seed passed
  std::string log_tail;               // the last events, for a failing seed
  std::array<uint64_t, static_cast<int>(Counter::kCount)> counters{};
  uint64_t heal_ms = 0;
  uint64_t events = 0;

  bool ok() const { return failures.empty(); }
  // "seed S FAILED: ...", the config, the log tail and how to replay.
  std::string Report() const;
};

struct SimParams {
  size_t log_tail_events = 60;  // events kept for a failure report
  // Scales the run length and the op count (1 = the CI size).
  double scale = 1.0;
  // false: SyncOptions::diff_interval_ms = 0 (no periodic anti-entropy), to
  // show which histories only the periodic diff repairs.
  bool periodic_diffs = true;
};

// Runs one seeded cluster history. Deterministic: the same seed and params
// give the same result, trace hash included.
SimResult RunSeed(uint64_t seed, const SimParams& params = {});

}  // namespace tidemap::sim

#endif  // TIDEMAP_TESTS_SIM_SIM_H_
