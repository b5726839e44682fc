#include "tests/sim/sim.h"

#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/fault_env.h"
#include <tidemap/base/aead.h>
#include <tidemap/base/check.h>
#include <tidemap/base/clock.h>
#include <tidemap/base/hash.h>
#include <tidemap/base/random.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap::sim {

const char* CounterName(Counter c) {
  switch (c) {
    case Counter::kPuts:
      return "puts";
    case Counter::kDeletes:
      return "deletes";
    case Counter::kBatchWrites:
      return "batch_writes";
    case Counter::kMessages:
      return "messages_delivered";
    case Counter::kConnects:
      return "connects";
    case Counter::kConnectBlocked:
      return "connects_blocked_by_partition";
    case Counter::kCuts:
      return "connection_cuts";
    case Counter::kMsgDropped:
      return "msg_dropped";
    case Counter::kMsgDuplicated:
      return "msg_duplicated";
    case Counter::kMsgReordered:
      return "msg_reordered";
    case Counter::kFaultsDetected:
      return "msg_faults_detected_by_session";
    case Counter::kFaultsUndelivered:
      return "msg_faults_cut_before_delivery";
    case Counter::kStallCuts:
      return "stalled_after_msg_fault_cut";
    case Counter::kPartitionsSym:
      return "partitions_symmetric";
    case Counter::kPartitionsAsym:
      return "partitions_asymmetric";
    case Counter::kPartitionCuts:
      return "partition_message_lost_cut";
    case Counter::kCrashKeep:
      return "crash_keep_unsynced";
    case Counter::kCrashDrop:
      return "crash_drop_unsynced";
    case Counter::kRestarts:
      return "restarts";
    case Counter::kWipes:
      return "wipes";
    case Counter::kWipeLostWrites:
      return "wipe_lost_writes";
    case Counter::kWipeStaleCursors:
      return "wipe_stale_peer_cursors";
    case Counter::kHlcBehindAfterWipe:
      return "wipe_hlc_behind_former_self";
    case Counter::kVersionReissued:
      return "wipe_version_reissued";
    case Counter::kEqualVersionConflicts:
      return "equal_version_conflicts";
    case Counter::kLateJoins:
      return "late_joins";
    case Counter::kClockJumps:
      return "clock_jumps";
    case Counter::kClockBeyond:
      return "clock_beyond_max_offset";
    case Counter::kBatchRefused:
      return "batch_refused";
    case Counter::kDiffRefusedCuts:
      return "diff_refused_cuts";
    case Counter::kDiffRecordsRefused:
      return "diff_records_refused";
    case Counter::kPrunedRows:
      return "oplog_rows_pruned";
    case Counter::kTombstonesPurged:
      return "tombstones_purged";
    case Counter::kBelowWatermarkDropped:
      return "below_watermark_tombstones_dropped";
    case Counter::kStaleRedeleted:
      return "stale_records_redeleted";
    case Counter::kPeerResets:
      return "peer_database_changed";
    case Counter::kTtlPuts:
      return "ttl_puts";
    case Counter::kExpireEvents:
      return "expire_events";
    case Counter::kExpiredPurged:
      return "expired_purged";
    case Counter::kExpiryChecks:
      return "expiry_checks";
    case Counter::kClears:
      return "clears";
    case Counter::kClearRemoved:
      return "clear_removed";
    case Counter::kDiffsCompleted:
      return "diffs_completed";
    case Counter::kHealMsMax:
      return "heal_ms_max";
    case Counter::kCount:
      break;
  }
  return "?";
}

namespace {

// The value cipher of an encrypted node: a key drawn from its id (the
// simulation has no key files), the data dir's preferred suite.
std::unique_ptr<ValueCipher> MakeSimCipher(uint64_t node_id) {
  std::string key_bytes(crypto::kSymmetricKeyBytes, '\0');
  for (size_t i = 0; i < key_bytes.size(); ++i) {
    key_bytes[i] = static_cast<char>(node_id >> (8 * (i % 8)));
  }
  auto key = crypto::AeadKey::Create(crypto::PreferredAeadSuite(),
                                     crypto::SymmetricKey::FromBytesForTesting(key_bytes));
  TIDEMAP_CHECK(key.ok());
  return std::make_unique<ValueCipher>(1, std::move(key).value());
}

constexpr uint64_t kStartMs = 1'800'000'000'000;
constexpr uint64_t kMaxClockOffsetMs = 60'000;  // HlcOptions' default, used by every node
constexpr int64_t kInRangeOffsetMs = 20'000;    // |offset| <= this: pairwise skew <= 40 s
// With tombstone GC on, clocks stay closer (pairwise skew <= 6 s) and no clock
// goes beyond max_clock_offset: the horizon (15-30 s here) must exceed the
// skew plus the time a write takes to reach every replica, or a write older
// than a GC watermark is taken for a deleted key's old version.
constexpr int64_t kGcInRangeOffsetMs = 3'000;
constexpr int64_t kHealOffsetMs = 2'000;
// A TTL'd put lives 100 ms to this long.
constexpr uint64_t kTtlMaxSimMs = 8'000;
constexpr uint64_t kBackoffBaseMs = 20;
constexpr uint64_t kBackoffMaxMs = 2'000;
constexpr uint64_t kStableConnectionMs = 2'000;  // a connection this old resets its backoff
constexpr size_t kOplogReadMax = 10'000'000;
constexpr uint64_t kLargeValueBytesMax = 3'000;  // the workload's largest values, about

uint64_t Mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h *= 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 31);
}

uint64_t VersionBits(const Version& v) { return Mix(v.hlc.raw, v.origin); }

// A compact digest of a message's contents for the trace hash.
uint64_t MessageDigest(const msg::Message& m) {
  uint64_t h = Mix(m.seq, m.body.index());
  auto records = [&h](const std::vector<KeyedRecord>& rs) {
    h = Mix(h, rs.size());
    for (const KeyedRecord& r : rs) h = Mix(Mix(h, VersionBits(r.version)), r.tombstone ? 1 : 0);
  };
  if (auto* x = std::get_if<msg::Hello>(&m.body)) {
    h = Mix(
        Mix(Mix(Mix(Mix(h, x->merkle_root.hi), x->merkle_root.lo), x->incarnation), x->last_seq),
        VersionBits(x->gc_watermark));
  } else if (auto* rb = std::get_if<msg::RecordBatch>(&m.body)) {
    h = Mix(Mix(h, rb->first_seq), rb->last_seq);
    records(rb->records);
  } else if (auto* a = std::get_if<msg::BatchAck>(&m.body)) {
    h = Mix(h, a->last_seq);
  } else if (auto* r = std::get_if<msg::BatchRefused>(&m.body)) {
    h = Mix(h, r->last_seq);
  } else if (auto* t = std::get_if<msg::TreeNodes>(&m.body)) {
    h = Mix(Mix(Mix(h, t->diff_id), t->level), t->parents.size());
    for (uint64_t d : t->child_digests) h = Mix(h, d);
  } else if (auto* s = std::get_if<msg::BucketSummaries>(&m.body)) {
    h = Mix(Mix(Mix(h, s->diff_id), s->buckets.size()), s->entries.size());
  } else if (auto* d = std::get_if<msg::DiffRecords>(&m.body)) {
    h = Mix(Mix(h, d->diff_id), d->requests.size());
    records(d->records);
  } else if (auto* e = std::get_if<msg::DiffEnd>(&m.body)) {
    h = Mix(h, e->diff_id);
  } else if (auto* o = std::get_if<msg::OriginRecords>(&m.body)) {
    h = Mix(Mix(h, o->origin), o->last ? 1 : 0);
    records(o->records);
  } else if (auto* g = std::get_if<msg::Goodbye>(&m.body)) {
    h = Mix(h, Hash64(g->reason));
  }
  return h;
}

std::string Ms(uint64_t t) { return std::to_string(t - kStartMs) + "ms"; }

// An HLC timestamp relative to the simulation start: "+12345.3".
std::string RelHlc(uint64_t raw) {
  const Timestamp t{raw};
  const auto rel = static_cast<int64_t>(t.physical_ms()) - static_cast<int64_t>(kStartMs);
  return (rel >= 0 ? "+" : "") + std::to_string(rel) + "." + std::to_string(t.logical());
}

std::string RelVersion(const Version& v) {
  return RelHlc(v.hlc.raw) + "/" + NodeIdToString(v.origin).substr(12);
}

using KeyId = std::pair<std::string, std::string>;

// One committed key state as a node holds it.
struct ShadowRec {
  Version version;
  bool tombstone = false;
  uint64_t value_hash = 0;
  uint64_t expiry_ms = 0;
  friend bool operator==(const ShadowRec&, const ShadowRec&) = default;
};

// One accepted write, as the oracle remembers it.
struct Accepted {
  Version version;
  bool tombstone = false;
  std::string value;
  size_t node = 0;
  bool lost = false;       // it lived only on a disk that was wiped
  uint64_t expiry_ms = 0;  // a TTL'd put's expiry
};

// The replicas' tie rule for equal versions with different bytes (see
// DecideMerge, replica/merge.cc): the greater digest of (tombstone, value) wins.
bool Beats(const Accepted& a, const Accepted& b) {
  if (a.version != b.version) return a.version > b.version;
  const Digest128 da = Hash128(a.tombstone ? std::string_view() : a.value, a.tombstone ? 1 : 0);
  const Digest128 db = Hash128(b.tombstone ? std::string_view() : b.value, b.tombstone ? 1 : 0);
  return da.hi != db.hi ? da.hi > db.hi : da.lo > db.lo;
}

enum class Ev : uint8_t {
  kPut,
  kDelete,
  kBatch,
  kDeliver,
  kConnect,
  kConnectBlocked,
  kCut,
  kDrop,
  kDup,
  kReorder,
  kDetected,
  kStall,
  kPartitionSym,
  kPartitionAsym,
  kPartitionCut,
  kCrash,
  kRestart,
  kWipe,
  kJoin,
  kClock,
  kRefused,
  kSessionError,
  kPrune,
  kPurge,
  kClear,
  kHeal,
  kConverged,
  kQuiet,
  kFail,
};

struct Event {
  uint64_t t = 0;
  Ev ev = Ev::kFail;
  uint64_t a = 0, b = 0, c = 0;
  std::string detail;  // only for rare events (errors)
};

enum CutReason : uint64_t {
  kCutRandom,
  kCutNodeDown,
  kCutDetected,
  kCutStall,
  kCutPartition,
  kCutRefused,
};

const char* CutReasonName(uint64_t r) {
  switch (r) {
    case kCutRandom:
      return "random drop";
    case kCutNodeDown:
      return "node down";
    case kCutDetected:
      return "session detected a message fault";
    case kCutStall:
      return "stalled";
    case kCutPartition:
      return "partition";
    case kCutRefused:
      return "clock refused in diff";
  }
  return "?";
}

struct Config {
  size_t initial_nodes = 0;
  size_t late_joiners = 0;
  bool full_mesh = true;
  uint64_t keys = 0;
  double zipf_theta = 1.0;
  uint64_t run_ms = 0;
  uint64_t op_interval_ms = 0;  // mean
  uint64_t fault_interval_ms = 0;
  double p_drop = 0, p_dup = 0, p_reorder = 0;
  int wipes = 0;
  bool clock_beyond = false;
  uint64_t retention_rows = 0;  // 0: the default retention
  bool relaxed_some = false;
  bool poll_after_receive = false;  // poll a session right after it received messages
  SyncOptions sync;
  uint64_t poll_ms = 0;
  uint64_t prune_ms = 0;              // oplog pruning and tombstone GC run on this timer
  uint64_t tombstone_horizon_ms = 0;  // 0: no tombstone GC in this seed
  int64_t in_range_offset_ms = kInRangeOffsetMs;
  uint64_t stall_timeout_ms = 0;
  double p_delete = 0.2;
  double p_ttl = 0;    // of puts, those with a TTL (0: TTL off)
  double p_clear = 0;  // of write ops, clears of a whole map (0: clears off)
};

struct Node {
  size_t index = 0;
  uint64_t id = 0;
  Durability durability = Durability::kSync;
  std::unique_ptr<leveldb::Env> mem;
  std::unique_ptr<testing::FaultEnv> fault;
  std::unique_ptr<ManualClock> clock;
  std::unique_ptr<SeededRandom> random;  // draws its database incarnations
  // Every third node seals its values at rest (null: in the clear). Drawn
  // from the node's index, not the seed, so histories replay as before.
  std::unique_ptr<ValueCipher> cipher;
  int64_t offset_ms = 0;
  std::unique_ptr<Replica> replica;  // null while down or not yet joined
  bool joined = false;
  uint64_t join_at_ms = 0;
  uint64_t restart_at_ms = 0;  // when down after joining
  int incarnation = 0;         // wipes so far
  bool wiped_pending = false;  // comes back from a wipe at the next restart
  // The node's committed state, from its change subscription. In sync mode
  // (and after a crash that keeps unsynced data) it is the durable state.
  std::map<KeyId, ShadowRec> shadow;
  // Oplog rows observed (seq -> version), this incarnation.
  std::map<uint64_t, Version> seqs;
  uint64_t max_seq = 0;
  Version last_local;              // greatest version a local write returned, this incarnation
  Version last_local_before_wipe;  // the same over earlier incarnations
  std::set<uint64_t> issued;       // hlc of every local write, this incarnation
  std::set<uint64_t> issued_before_wipe;  // the same over earlier incarnations
  // Per key, the greatest version of a tombstone this database held (purged
  // since or not): no later change may make the key live at a lower version.
  std::map<KeyId, Version> dead_floor;
  // Per key, the greatest tombstone version this database purged.
  std::map<KeyId, Version> purged;
  // Per key, the greatest version of an expired record the GC purged here:
  // that version or an older one never becomes live again.
  std::map<KeyId, Version> expired_floor;
  // Per map, the greatest version of a clear this database held: no record
  // of the map older than it is stored after it.
  std::map<std::string, Version> clear_floor;
  std::vector<size_t> conns;

  bool up() const { return replica != nullptr; }
};

struct InFlight {
  uint64_t at_ms = 0;
  msg::Message m;
};

// One simulated connection between nodes a < b: s[0] lives at a (peer b),
// s[1] at b; q[0] carries a -> b, q[1] b -> a.
struct Conn {
  size_t a = 0, b = 0;
  bool up = false;
  std::unique_ptr<SyncSession> s[2];
  std::deque<InFlight> q[2];
  uint64_t latency_ms[2] = {1, 1};
  uint64_t next_attempt_ms = 0;
  int backoff = 0;
  uint64_t connected_ms = 0;
  uint64_t last_activity_ms = 0;  // a message sent or delivered
  uint64_t busy_since_ms = 0;     // seen not idle with nothing in flight since (0: no)
  uint64_t next_poll_ms[2] = {0, 0};
  int pending_faults = 0;  // injected in this connection's life, not yet reported
  bool faulty = false;     // a fault was injected in this connection's life

  size_t node(int side) const { return side == 0 ? a : b; }
};

class Simulation {
 public:
  Simulation(uint64_t seed, const SimParams& params)
      : seed_(seed), params_(params), rng_(seed), zipf_(1, 1.0) {}

  SimResult Run();

 private:
  // ---- setup ----
  void Configure();
  std::string DescribeConfig() const;

  // ---- the event loop ----
  void Step();
  uint64_t NextEventTime() const;
  void SetClocks();
  void RunNodeTimers();
  void ConnectDue();
  void DeliverDue();
  void PollDue();
  void CheckStalls();

  // ---- nodes ----
  bool OpenNode(Node& n);
  void Crash(Node& n, bool drop_unsynced);
  void Restart(Node& n);
  void Wipe(Node& n);
  void CheckAfterRestart(Node& n);
  void OnChange(size_t node, const ChangeEvent& e);
  void OnExpire(Node& n, const ChangeEvent& e);
  // Reads of `n` never serve a record whose expiry passed on its clock.
  void CheckExpiries(Node& n);
  void PollNode(Node& n);

  // ---- connections ----
  void Connect(Conn& c);
  void Cut(Conn& c, CutReason reason, const std::string& detail = {});
  void Enqueue(Conn& c, int side, std::vector<msg::Message>* out);
  void Deliver(Conn& c, int side);
  void PollSide(Conn& c, int side);
  bool Blocked(size_t from, size_t to) const { return now_ < blocked_until_[from][to]; }

  // ---- workload and faults ----
  void DoWrite();
  void DoClear(Node& n);
  // One bounded removal batch of cleared records on `n`, its shadow updated.
  void RunRemoval(Node& n);
  // Reads of `n` never serve a record older than its map's clear.
  void CheckClearedReads(Node& n);
  void InjectFault();
  void SetOffset(Node& n, int64_t offset_ms, bool beyond);
  void PruneAll();
  void PurgeTombstones(Node& n);

  // ---- heal and final checks ----
  void Heal();
  bool Converged() const;
  bool Quiet() const;
  uint64_t StreamMs(bool whole_cluster) const;
  void VerifyFinal();
  void VerifyLwwMaximum(const std::map<KeyId, std::pair<ShadowRec, std::string>>& scan);
  void FinalPurge();
  std::map<KeyId, std::pair<ShadowRec, std::string>> FullScan(Node& n);
  void MarkWipedWrites(const Node& wiped);

  // ---- bookkeeping ----
  void Trace(Ev ev, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, uint64_t extra = 0,
             std::string detail = {});
  void Count(Counter c, uint64_t n = 1) { result_.counters[static_cast<int>(c)] += n; }
  // Adds what a session did, when it ends (or the run does).
  void CountSession(const SyncSession& s) {
    Count(Counter::kDiffsCompleted, s.stats().diffs_completed);
    Count(Counter::kBelowWatermarkDropped, s.stats().below_watermark_dropped);
    Count(Counter::kStaleRedeleted, s.stats().stale_redeleted);
    Count(Counter::kDiffRecordsRefused, s.stats().records_refused);
    if (!s.stats().peer_reset.empty()) Count(Counter::kPeerResets);
  }
  void Fail(const std::string& what);
  std::string FormatEvent(const Event& e) const;
  std::string Name(size_t node) const { return "n" + std::to_string(node); }
  std::string SessionState(const Conn& c, int side) const;

  const uint64_t seed_;
  const SimParams params_;
  SeededRandom rng_;
  ZipfSampler zipf_;
  Config cfg_;
  SimResult result_;
  bool failed_ = false;
  bool healing_ = false;

  uint64_t now_ = kStartMs;
  uint64_t next_op_ms_ = 0;
  uint64_t next_fault_ms_ = 0;
  uint64_t next_prune_ms_ = 0;
  uint64_t op_counter_ = 0;
  int wipes_left_ = 0;
  struct ClockRestore {
    uint64_t at_ms;
    size_t node;
    int64_t offset_ms;
  };
  std::vector<ClockRestore> clock_restores_;

  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<Conn> conns_;
  std::vector<std::vector<uint64_t>> blocked_until_;  // [from][to]
  std::map<KeyId, std::vector<Accepted>> oracle_;

  std::deque<Event> log_;
  uint64_t hash_ = 0x7469'6465'6d61'7073ULL;
};

// ---------------------------------------------------------------------------
// Setup.

void Simulation::Configure() {
  Config& c = cfg_;
  c.initial_nodes = 2 + rng_.Uniform(4);
  c.late_joiners = rng_.Bernoulli(0.4) ? 1 + rng_.Uniform(2) : 0;
  const size_t total = c.initial_nodes + c.late_joiners;
  c.full_mesh = rng_.Bernoulli(0.5);
  c.keys = 10 + rng_.Uniform(390);
  c.zipf_theta = 0.5 + 0.8 * rng_.NextDouble();
  c.run_ms =
      static_cast<uint64_t>(static_cast<double>(45'000 + rng_.Uniform(60'000)) * params_.scale);
  const uint64_t ops =
      static_cast<uint64_t>(static_cast<double>(900 + rng_.Uniform(1'800)) * params_.scale);
  c.op_interval_ms = std::max<uint64_t>(1, c.run_ms / std::max<uint64_t>(1, ops));
  c.fault_interval_ms = 250 + rng_.Uniform(1000);
  if (rng_.Bernoulli(0.7)) {
    c.p_drop = 0.01 * rng_.NextDouble();
    c.p_dup = 0.01 * rng_.NextDouble();
    c.p_reorder = 0.01 * rng_.NextDouble();
  }
  c.wipes = rng_.Bernoulli(0.3) ? 1 + static_cast<int>(rng_.Uniform(2)) : 0;
  c.clock_beyond = rng_.Bernoulli(0.25);
  c.retention_rows = rng_.Bernoulli(0.35) ? 5 + rng_.Uniform(60) : 0;
  c.relaxed_some = rng_.Bernoulli(0.2);
  c.p_delete = 0.1 + 0.25 * rng_.NextDouble();
  c.p_ttl = rng_.Bernoulli(0.5) ? 0.1 + 0.4 * rng_.NextDouble() : 0;
  c.p_clear = rng_.Bernoulli(0.4) ? 0.003 + 0.02 * rng_.NextDouble() : 0;

  static constexpr size_t kBatchRecords[] = {1, 2, 5, 16, 1000};
  static constexpr size_t kBatchBytes[] = {300, 2000, size_t{1} << 20};
  static constexpr size_t kChunkBytes[] = {64, 300, 2000, size_t{1} << 20};
  c.sync.batch_records_max = kBatchRecords[rng_.Uniform(std::size(kBatchRecords))];
  c.sync.batch_bytes_max = kBatchBytes[rng_.Uniform(std::size(kBatchBytes))];
  c.sync.batches_in_flight_max = 1 + rng_.Uniform(4);
  c.sync.diff_chunk_bytes_max = kChunkBytes[rng_.Uniform(std::size(kChunkBytes))];
  // Small windows make a diff's records move over many polls, across faults.
  static constexpr size_t kWindowBytes[] = {256, 4096, size_t{4} << 20};
  c.sync.records_window_bytes = kWindowBytes[rng_.Uniform(std::size(kWindowBytes))];
  c.sync.diff_interval_ms = 1'500 + rng_.Uniform(6'500);
  c.sync.refused_retry_ms = 200 + rng_.Uniform(1'300);
  if (!params_.periodic_diffs) c.sync.diff_interval_ms = 0;
  c.poll_ms = 20 + rng_.Uniform(130);
  c.poll_after_receive = rng_.Bernoulli(0.5);
  c.prune_ms = 500 + rng_.Uniform(2'500);
  if (rng_.Bernoulli(0.6)) {
    c.tombstone_horizon_ms = 15'000 + rng_.Uniform(15'001);
    c.in_range_offset_ms = kGcInRangeOffsetMs;
    c.clock_beyond = false;
  }
  // Silence longer than the longest refusal pause plus a poll, with messages
  // in flight delivered, means nothing will ever move on that connection again.
  c.sync.refused_retry_max_ms = 4 * c.sync.refused_retry_ms;
  c.stall_timeout_ms = c.sync.refused_retry_max_ms + 3 * c.poll_ms + 1'000;

  zipf_ = ZipfSampler(c.keys, c.zipf_theta);
  wipes_left_ = c.wipes;

  // Nodes: distinct random non-zero ids (their order decides who leads diffs).
  for (size_t i = 0; i < total; ++i) {
    auto n = std::make_unique<Node>();
    n->index = i;
    for (;;) {
      n->id = rng_.Next64();
      bool clash = n->id == 0;
      for (const auto& o : nodes_) clash = clash || o->id == n->id;
      if (!clash) break;
    }
    n->durability =
        c.relaxed_some && rng_.Bernoulli(0.5) ? Durability::kRelaxed : Durability::kSync;
    n->mem.reset(leveldb::NewMemEnv(leveldb::Env::Default()));
    n->fault = std::make_unique<testing::FaultEnv>(n->mem.get());
    n->offset_ms =
        static_cast<int64_t>(rng_.Uniform(2 * c.in_range_offset_ms + 1)) - c.in_range_offset_ms;
    n->clock = std::make_unique<ManualClock>(kStartMs);
    n->random = std::make_unique<SeededRandom>(rng_.Next64());
    if (i % 3 == 1) n->cipher = MakeSimCipher(n->id);
    n->join_at_ms = i < c.initial_nodes ? kStartMs : kStartMs + 1 + rng_.Uniform(c.run_ms);
    nodes_.push_back(std::move(n));
  }

  // Topology: a full mesh, or a random tree plus random extra edges; a late
  // joiner links to one or two earlier nodes. Always connected.
  std::vector<std::pair<size_t, size_t>> edges;
  for (size_t i = 1; i < total; ++i) {
    if (c.full_mesh) {
      for (size_t j = 0; j < i; ++j) edges.emplace_back(j, i);
      continue;
    }
    const size_t limit = i < c.initial_nodes ? i : c.initial_nodes;
    const size_t parent = rng_.Uniform(limit);
    edges.emplace_back(parent, i);
    for (size_t j = 0; j < i; ++j) {
      if (j != parent && rng_.Bernoulli(i < c.initial_nodes ? 0.35 : 0.25))
        edges.emplace_back(j, i);
    }
  }
  for (const auto& [a, b] : edges) {
    Conn& conn = conns_.emplace_back();
    conn.a = a;
    conn.b = b;
    conn.latency_ms[0] = 1 + rng_.Uniform(40);
    conn.latency_ms[1] = 1 + rng_.Uniform(40);
    nodes_[a]->conns.push_back(conns_.size() - 1);
    nodes_[b]->conns.push_back(conns_.size() - 1);
  }
  blocked_until_.assign(total, std::vector<uint64_t>(total, 0));
  result_.config = DescribeConfig();
}

std::string Simulation::DescribeConfig() const {
  const Config& c = cfg_;
  std::string s = "nodes=" + std::to_string(c.initial_nodes) + "+" +
                  std::to_string(c.late_joiners) + "late " +
                  (c.full_mesh ? "mesh" : "random-topology") + " edges=";
  for (const Conn& conn : conns_) s += std::to_string(conn.a) + "-" + std::to_string(conn.b) + ",";
  s += " keys=" + std::to_string(c.keys) + " run=" + std::to_string(c.run_ms) +
       "ms op_every=" + std::to_string(c.op_interval_ms) +
       "ms fault_every=" + std::to_string(c.fault_interval_ms) + "ms";
  s += " msgfaults(drop=" + std::to_string(c.p_drop) + " dup=" + std::to_string(c.p_dup) +
       " reorder=" + std::to_string(c.p_reorder) + ")";
  s += " wipes=" + std::to_string(c.wipes) + " beyond=" + (c.clock_beyond ? "yes" : "no");
  s += " clears=" + (c.p_clear > 0 ? std::to_string(c.p_clear) : std::string("off"));
  s += " gc=" + (c.tombstone_horizon_ms ? std::to_string(c.tombstone_horizon_ms) + "ms" : "off");
  s += " retention_rows=" + (c.retention_rows ? std::to_string(c.retention_rows) : "default");
  s += " sync(batch=" + std::to_string(c.sync.batch_records_max) + "/" +
       std::to_string(c.sync.batch_bytes_max) + "B x" +
       std::to_string(c.sync.batches_in_flight_max) +
       " chunk=" + std::to_string(c.sync.diff_chunk_bytes_max) +
       "B window=" + std::to_string(c.sync.records_window_bytes) +
       "B diff_every=" + std::to_string(c.sync.diff_interval_ms) +
       "ms retry=" + std::to_string(c.sync.refused_retry_ms) + "ms)";
  s += " poll=" + std::to_string(c.poll_ms) + "ms" +
       (c.poll_after_receive ? "+after-receive" : "") + " ids:";
  for (const auto& n : nodes_) {
    s += " n" + std::to_string(n->index) + "=" + NodeIdToString(n->id).substr(12) +
         (n->durability == Durability::kRelaxed ? "(relaxed)" : "");
  }
  return s;
}

// ---------------------------------------------------------------------------
// Bookkeeping.

void Simulation::Trace(Ev ev, uint64_t a, uint64_t b, uint64_t c, uint64_t extra,
                       std::string detail) {
  ++result_.events;
  hash_ = Mix(Mix(Mix(Mix(Mix(Mix(hash_, now_), static_cast<uint64_t>(ev)), a), b), c), extra);
  if (params_.log_tail_events == 0) return;
  if (log_.size() == params_.log_tail_events) log_.pop_front();
  log_.push_back(Event{now_, ev, a, b, c, std::move(detail)});
}

void Simulation::Fail(const std::string& what) {
  result_.failures.push_back("at " + Ms(now_) + ": " + what);
  Trace(Ev::kFail, 0, 0, 0, 0, what);
  failed_ = true;
}

std::string Simulation::FormatEvent(const Event& e) const {
  std::string s = Ms(e.t) + " ";
  auto n = [this](uint64_t i) { return Name(static_cast<size_t>(i)); };
  switch (e.ev) {
    case Ev::kPut:
    case Ev::kDelete:
      s += std::string(e.ev == Ev::kPut ? "put " : "del ") + n(e.a) + " key#" +
           std::to_string(e.b) + " -> " + RelHlc(e.c);
      break;
    case Ev::kBatch:
      s += "batch " + n(e.a) + " ops=" + std::to_string(e.b);
      break;
    case Ev::kDeliver:
      s += "deliver " + n(e.a) + "->" + n(e.b) + " #" + std::to_string(e.c >> 8) + " " + e.detail;
      break;
    case Ev::kConnect:
      s += "connect " + n(e.a) + "-" + n(e.b);
      break;
    case Ev::kConnectBlocked:
      s += "connect blocked " + n(e.a) + "-" + n(e.b);
      break;
    case Ev::kCut:
      s += "cut " + n(e.a) + "-" + n(e.b) + " (" + CutReasonName(e.c) + ")" +
           (e.detail.empty() ? "" : ": " + e.detail);
      break;
    case Ev::kDrop:
      s += "fault: drop " + n(e.a) + "->" + n(e.b) + " #" + std::to_string(e.c);
      break;
    case Ev::kDup:
      s += "fault: dup " + n(e.a) + "->" + n(e.b) + " #" + std::to_string(e.c);
      break;
    case Ev::kReorder:
      s += "fault: reorder " + n(e.a) + "->" + n(e.b) + " #" + std::to_string(e.c);
      break;
    case Ev::kDetected:
      s += "detected by " + n(e.b) + " from " + n(e.a) + ": " + e.detail;
      break;
    case Ev::kStall:
      s += "stall " + n(e.a) + "-" + n(e.b) + ": " + e.detail;
      break;
    case Ev::kPartitionSym:
      s += "partition symmetric side-mask=" + std::to_string(e.a) + " for " + std::to_string(e.c) +
           "ms";
      break;
    case Ev::kPartitionAsym:
      s += "partition asymmetric " + n(e.a) + "->" + n(e.b) + " blocked for " +
           std::to_string(e.c) + "ms";
      break;
    case Ev::kPartitionCut:
      s += "partition lost " + n(e.a) + "->" + n(e.b) + " message";
      break;
    case Ev::kCrash:
      s += "crash " + n(e.a) + (e.b ? " (drop unsynced)" : " (keep unsynced)");
      break;
    case Ev::kRestart:
      s += "restart " + n(e.a) + " last_seq=" + std::to_string(e.b);
      break;
    case Ev::kWipe:
      s += "wipe " + n(e.a) + " (writes lost with the disk: " + std::to_string(e.b) + ")";
      break;
    case Ev::kJoin:
      s += "join " + n(e.a);
      break;
    case Ev::kClock:
      s += "clock " + n(e.a) + " offset " + std::to_string(static_cast<int64_t>(e.b)) + "ms" +
           (e.c ? " (beyond max offset)" : "");
      break;
    case Ev::kRefused:
      s += "batch refused " + n(e.a) + "->" + n(e.b) + ": " + e.detail;
      break;
    case Ev::kSessionError:
      s += "session error at " + n(e.a) + ": " + e.detail;
      break;
    case Ev::kPrune:
      s += "prune " + n(e.a) + " rows=" + std::to_string(e.b) + " through=" + std::to_string(e.c);
      break;
    case Ev::kPurge:
      s += "purge " + n(e.a) + " tombstones=" + std::to_string(e.b) + " watermark " + RelHlc(e.c);
      break;
    case Ev::kClear:
      s += "clear " + n(e.a) + " map " + (e.b == 0 ? "m" : "n") + " -> " + RelHlc(e.c);
      break;
    case Ev::kHeal:
      s += "HEAL: faults off, all nodes up, clocks in range";
      break;
    case Ev::kConverged:
      s += "converged after " + std::to_string(e.a) + "ms";
      break;
    case Ev::kQuiet:
      s += "quiescent";
      break;
    case Ev::kFail:
      s += "FAIL: " + e.detail;
      break;
  }
  return s;
}

std::string Simulation::SessionState(const Conn& c, int side) const {
  const SyncSession& s = *c.s[side];
  const SyncStats& st = s.stats();
  const Node& n = *nodes_[c.node(side)];
  return Name(c.node(side)) + "(peer " + Name(c.node(1 - side)) +
         ") idle=" + (s.Idle() ? "1" : "0") + " sent=" + std::to_string(st.messages_sent) +
         " recv=" + std::to_string(st.messages_received) +
         " diff_in_progress=" + (st.diff_in_progress ? "1" : "0") +
         " diffs=" + std::to_string(st.diffs_completed) + " acked=" + std::to_string(st.acked_seq) +
         " last_seq=" + std::to_string(n.replica->LastSeq()) +
         (st.last_error.empty() ? "" : " last_error=" + st.last_error);
}

// ---------------------------------------------------------------------------
// Nodes.

bool Simulation::OpenNode(Node& n) {
  ReplicaOptions o;
  o.path = "/db";
  o.env = n.fault.get();
  o.clock = n.clock.get();
  o.node_id = n.id;
  o.durability = n.durability;
  o.tombstone_horizon_ms = cfg_.tombstone_horizon_ms;
  o.random = n.random.get();
  o.value_cipher = n.cipher.get();
  if (cfg_.retention_rows != 0) o.retention.rows_max = cfg_.retention_rows;
  auto r = Replica::Open(std::move(o));
  if (!r.ok()) {
    Fail("open " + Name(n.index) + ": " + r.status().ToString());
    return false;
  }
  n.replica = std::move(r).value();
  // As the daemon does with its configured peers: a replica that knows no
  // peer purges tombstones by the horizon alone, and one that lost its
  // database (wiped) would forget whom it must wait for.
  for (size_t ci : n.conns) {
    const Conn& c = conns_[ci];
    const Status s = n.replica->AddPeer(nodes_[c.a == n.index ? c.b : c.a]->id);
    if (!s.ok()) {
      Fail("register peers at " + Name(n.index) + ": " + s.ToString());
      return false;
    }
  }
  const size_t index = n.index;
  n.replica->Subscribe("", [this, index](const ChangeEvent& e) { OnChange(index, e); });
  return true;
}

void Simulation::OnChange(size_t node, const ChangeEvent& e) {
  Node& n = *nodes_[node];
  if (e.kind == ChangeKind::kExpire) return OnExpire(n, e);
  // Seqs never repeat and only grow, across restarts.
  if (e.seq <= n.max_seq) {
    Fail(Name(node) + " assigned seq " + std::to_string(e.seq) + " after seq " +
         std::to_string(n.max_seq) + " (a seq reused)");
  }
  n.max_seq = std::max(n.max_seq, e.seq);
  n.seqs[e.seq] = e.version;
  const KeyId key(e.map, e.key);
  const bool clear = e.kind == ChangeKind::kClear;
  n.shadow[key] =
      ShadowRec{e.version, e.kind == ChangeKind::kDelete || clear, Hash64(e.value), e.expiry_ms};
  Version& cleared = n.clear_floor[key.first];
  if (clear) {
    cleared = std::max(cleared, e.version);
    return;
  }
  if (e.version < cleared) {
    return Fail(Name(node) + " stored " + key.first + "/" + key.second + " at " +
                RelVersion(e.version) + " after holding its map's clear " + RelVersion(cleared));
  }
  auto expired = n.expired_floor.find(key);
  if (e.kind != ChangeKind::kDelete && expired != n.expired_floor.end() &&
      e.version <= expired->second) {
    Fail(Name(node) + " made " + key.first + "/" + key.second + " live again at " +
         RelVersion(e.version) + " after purging its expired version " +
         RelVersion(expired->second) + ": an expired value came back");
  }
  // No resurrection: once this database held a tombstone (purged since or
  // not), the key is never live again at an older version.
  Version& floor = n.dead_floor[key];
  if (e.kind == ChangeKind::kDelete) {
    floor = std::max(floor, e.version);
  } else if (e.version < floor) {
    Fail(Name(node) + " made " + key.first + "/" + key.second + " live again at " +
         RelVersion(e.version) + " after holding its tombstone " + RelVersion(floor) +
         (n.purged.contains(key) ? " (purged since)" : "") + ": a resurrection");
  }
}

// An expiry is announced for the version the node holds, once its expiry
// passed on the node's clock.
void Simulation::OnExpire(Node& n, const ChangeEvent& e) {
  const KeyId key(e.map, e.key);
  auto it = n.shadow.find(key);
  if (it == n.shadow.end() || it->second.tombstone || it->second.version != e.version ||
      it->second.expiry_ms != e.expiry_ms || e.expiry_ms == 0) {
    return Fail(Name(n.index) + " announced the expiry of " + key.first + "/" + key.second + " " +
                RelVersion(e.version) + ", which it does not hold with that expiry");
  }
  if (e.expiry_ms > n.clock->NowMillis()) {
    return Fail(Name(n.index) + " announced the expiry of " + key.first + "/" + key.second +
                " before it passed");
  }
  Count(Counter::kExpireEvents);
}

void Simulation::Crash(Node& n, bool drop_unsynced) {
  for (size_t ci : n.conns) {
    if (conns_[ci].up) Cut(conns_[ci], kCutNodeDown);
  }
  // As in crash_test: from this instant nothing more reaches the disk, not
  // even what a clean close would write.
  n.fault->SetWriteError(true);
  n.replica.reset();
  n.fault->SetWriteError(false);
  if (drop_unsynced) {
    const leveldb::Status s = n.fault->DropUnsyncedData();
    if (!s.ok()) Fail("drop unsynced data of " + Name(n.index) + ": " + s.ToString());
  }
  Count(drop_unsynced ? Counter::kCrashDrop : Counter::kCrashKeep);
  Trace(Ev::kCrash, n.index, drop_unsynced ? 1 : 0);
  n.restart_at_ms = now_ + 200 + rng_.Uniform(2'800);
}

void Simulation::Wipe(Node& n) {
  if (n.up()) Crash(n, false);
  // The disk is gone: a new empty one, same identity.
  n.fault.reset();
  n.mem.reset(leveldb::NewMemEnv(leveldb::Env::Default()));
  n.fault = std::make_unique<testing::FaultEnv>(n.mem.get());
  n.shadow.clear();
  n.seqs.clear();
  n.dead_floor.clear();
  n.purged.clear();
  n.expired_floor.clear();
  n.clear_floor.clear();
  n.max_seq = 0;
  n.last_local_before_wipe = std::max(n.last_local_before_wipe, n.last_local);
  n.issued_before_wipe.merge(n.issued);
  n.issued.clear();
  n.last_local = Version{};
  ++n.incarnation;
  n.wiped_pending = true;
  if (rng_.Bernoulli(0.5)) {
    // It comes back with its clock set back and cut off for a moment, taking
    // writes before it meets anyone: the new self may re-issue versions its
    // former self issued (it lost the persisted HLC bound with the disk).
    n.restart_at_ms = std::max(n.restart_at_ms, now_ + 200);
    const uint64_t until = n.restart_at_ms + 500 + rng_.Uniform(3'500);
    for (size_t y = 0; y < nodes_.size(); ++y) {
      if (y == n.index) continue;
      blocked_until_[n.index][y] = std::max(blocked_until_[n.index][y], until);
      blocked_until_[y][n.index] = std::max(blocked_until_[y][n.index], until);
    }
    Count(Counter::kPartitionsSym);
    Trace(Ev::kPartitionSym, uint64_t{1} << n.index, 0, until - now_);
    SetOffset(n,
              std::max(-cfg_.in_range_offset_ms,
                       n.offset_ms - 1'000 - static_cast<int64_t>(rng_.Uniform(14'000))),
              false);
  }
  const uint64_t lost_before = result_.counters[static_cast<int>(Counter::kWipeLostWrites)];
  MarkWipedWrites(n);
  Count(Counter::kWipes);
  Trace(Ev::kWipe, n.index,
        result_.counters[static_cast<int>(Counter::kWipeLostWrites)] - lost_before);
}

// A write survives a wipe iff some other node holds its version or a greater
// one for its key (shadows are durable states, down nodes included).
void Simulation::MarkWipedWrites(const Node& wiped) {
  for (auto& [key, writes] : oracle_) {
    std::optional<Version> held;
    for (const auto& other : nodes_) {
      if (other.get() == &wiped) continue;
      auto it = other->shadow.find(key);
      if (it != other->shadow.end() && (!held || it->second.version > *held)) {
        held = it->second.version;
      }
      // A purged tombstone lives on in that node's GC watermark.
      auto p = other->purged.find(key);
      if (p != other->purged.end() && (!held || p->second > *held)) held = p->second;
    }
    for (Accepted& w : writes) {
      if (!w.lost && (!held || *held < w.version)) {
        w.lost = true;
        Count(Counter::kWipeLostWrites);
      }
    }
  }
}

void Simulation::Restart(Node& n) {
  const bool first = !n.joined;
  if (!OpenNode(n)) return;
  n.joined = true;
  if (first) {
    Trace(Ev::kJoin, n.index);
    if (n.join_at_ms > kStartMs) Count(Counter::kLateJoins);
  } else {
    Count(Counter::kRestarts);
    Trace(Ev::kRestart, n.index, n.replica->LastSeq());
    if (n.wiped_pending) {
      // Peers that still hold a cursor for this node believe it has their
      // rows up to that cursor; it has nothing now.
      for (size_t ci : n.conns) {
        const Conn& c = conns_[ci];
        const Node& peer = *nodes_[c.a == n.index ? c.b : c.a];
        if (!peer.up()) continue;
        auto cursor = ReplicaTestAccess::oplog(*peer.replica).PeerAck(n.id);
        if (cursor.ok() && *cursor > 0) Count(Counter::kWipeStaleCursors);
      }
    }
    CheckAfterRestart(n);
  }
  n.wiped_pending = false;
}

// After a restart: nothing committed was lost, seqs did not go back, the
// retained oplog rows are the ones observed, and the stored tree equals a rebuild.
void Simulation::CheckAfterRestart(Node& n) {
  const std::string who = Name(n.index);
  auto scrub = n.replica->Scrub();
  if (!scrub.ok()) return Fail("scrub " + who + ": " + scrub.status().ToString());
  if (!scrub->ok()) {
    return Fail("scrub " + who + " after restart: stored tree differs from a rebuild (leaf " +
                std::to_string(scrub->leaf_mismatches) + ", index " +
                std::to_string(scrub->index_mismatches) + ")");
  }
  auto scan = FullScan(n);
  if (failed_) return;
  for (const auto& [key, shadow] : n.shadow) {
    auto it = scan.find(key);
    if (it == scan.end() || !(it->second.first == shadow)) {
      return Fail(
          who + " lost a committed change to " + key.first + "/" + key.second +
          " in a crash: had " + RelVersion(shadow.version) + ", now " +
          (it == scan.end() ? std::string("nothing") : RelVersion(it->second.first.version)));
    }
  }
  if (scan.size() != n.shadow.size()) {
    return Fail(who + " holds " + std::to_string(scan.size()) + " keys after restart, committed " +
                std::to_string(n.shadow.size()));
  }
  if (n.replica->LastSeq() < n.max_seq) {
    return Fail(who + " last_seq went back from " + std::to_string(n.max_seq) + " to " +
                std::to_string(n.replica->LastSeq()) + ": seqs would be reused");
  }
  auto rows = n.replica->ReadOplog(0, kOplogReadMax);
  if (!rows.ok()) return Fail("oplog read " + who + ": " + rows.status().ToString());
  for (const OplogEntry& row : *rows) {
    auto it = n.seqs.find(row.seq);
    if (it == n.seqs.end() || it->second != row.version) {
      return Fail(who + " oplog row " + std::to_string(row.seq) + " holds " +
                  RelVersion(row.version) + ", observed " +
                  (it == n.seqs.end() ? std::string("no such row") : RelVersion(it->second)));
    }
  }
}

std::map<KeyId, std::pair<ShadowRec, std::string>> Simulation::FullScan(Node& n) {
  std::map<KeyId, std::pair<ShadowRec, std::string>> out;
  Status read_error;
  Status s = n.replica->ForEachKeyMeta([&](const KeyMeta& m) {
    auto rec = n.replica->ReadRecord(m.map, m.key);
    if (!rec.ok() || !rec->has_value()) {
      read_error = rec.ok() ? Status::NotFound("record vanished") : rec.status();
      return false;
    }
    const KeyedRecord& r = **rec;
    if (r.version != m.version || r.tombstone != m.tombstone) {
      read_error = Status::Corruption("record and key meta disagree");
      return false;
    }
    out[KeyId(m.map, m.key)] = {ShadowRec{m.version, m.tombstone, Hash64(r.value), r.expiry_ms},
                                r.value};
    return true;
  });
  if (!s.ok()) Fail("scan " + Name(n.index) + ": " + s.ToString());
  if (!read_error.ok()) Fail("scan " + Name(n.index) + ": " + read_error.ToString());
  return out;
}

void Simulation::PollNode(Node& n) {
  for (size_t ci : n.conns) {
    Conn& c = conns_[ci];
    if (c.up) PollSide(c, c.a == n.index ? 0 : 1);
    if (failed_) return;
  }
}

// ---------------------------------------------------------------------------
// Connections.

void Simulation::Connect(Conn& c) {
  if (Blocked(c.a, c.b) || Blocked(c.b, c.a)) {
    Count(Counter::kConnectBlocked);
    Trace(Ev::kConnectBlocked, c.a, c.b);
    const uint64_t base = std::min(kBackoffMaxMs, kBackoffBaseMs << std::min(c.backoff, 7));
    c.next_attempt_ms = now_ + base / 2 + rng_.Uniform(base / 2 + 1);
    ++c.backoff;
    return;
  }
  Node& na = *nodes_[c.a];
  Node& nb = *nodes_[c.b];
  c.s[0] = std::make_unique<SyncSession>(na.replica.get(), nb.id, cfg_.sync);
  c.s[1] = std::make_unique<SyncSession>(nb.replica.get(), na.id, cfg_.sync);
  c.up = true;
  c.connected_ms = now_;
  c.last_activity_ms = now_;
  c.pending_faults = 0;
  c.faulty = false;
  c.busy_since_ms = 0;
  Count(Counter::kConnects);
  Trace(Ev::kConnect, c.a, c.b);
  for (int side = 0; side < 2 && !failed_; ++side) {
    std::vector<msg::Message> out;
    Status s = c.s[side]->Start(now_, &out);
    if (!s.ok()) return Fail("session start at " + Name(c.node(side)) + ": " + s.ToString());
    Enqueue(c, side, &out);
    c.next_poll_ms[side] = now_ + 1 + rng_.Uniform(cfg_.poll_ms);
  }
}

void Simulation::Cut(Conn& c, CutReason reason, const std::string& detail) {
  Trace(Ev::kCut, c.a, c.b, reason, 0, detail);
  // A detection or a stall accounts for one injected fault; the rest die with the connection.
  const int reported = reason == kCutDetected || reason == kCutStall ? 1 : 0;
  if (c.pending_faults > reported) {
    Count(Counter::kFaultsUndelivered, static_cast<uint64_t>(c.pending_faults - reported));
  }
  for (auto& s : c.s) {
    if (s) CountSession(*s);
    s.reset();
  }
  c.q[0].clear();
  c.q[1].clear();
  c.up = false;
  c.pending_faults = 0;
  if (now_ - c.connected_ms >= kStableConnectionMs) c.backoff = 0;
  const uint64_t base = std::min(kBackoffMaxMs, kBackoffBaseMs << std::min(c.backoff, 7));
  c.next_attempt_ms = now_ + base / 2 + rng_.Uniform(base / 2 + 1);
  ++c.backoff;
}

// Queues `out` from `side` to the other side, in order, each with its delay;
// in-connection faults strike here.
void Simulation::Enqueue(Conn& c, int side, std::vector<msg::Message>* out) {
  if (out->empty()) return;
  std::deque<InFlight>& q = c.q[side];
  const size_t from = c.node(side), to = c.node(1 - side);
  const bool faults = !healing_;
  for (msg::Message& m : *out) {
    uint64_t at = now_ + c.latency_ms[side] + rng_.Uniform(c.latency_ms[side] + 1);
    if (!q.empty()) at = std::max(at, q.back().at_ms);  // one ordered stream
    if (faults && cfg_.p_drop > 0 && rng_.Bernoulli(cfg_.p_drop)) {
      Count(Counter::kMsgDropped);
      Trace(Ev::kDrop, from, to, m.seq);
      ++c.pending_faults;
      c.faulty = true;
      continue;
    }
    const bool dup = faults && cfg_.p_dup > 0 && rng_.Bernoulli(cfg_.p_dup);
    const bool reorder =
        faults && cfg_.p_reorder > 0 && !q.empty() && rng_.Bernoulli(cfg_.p_reorder);
    if (reorder) {
      // Goes ahead of the message queued before it; the times stay ordered.
      q.push_back(InFlight{at, std::move(q.back().m)});
      q[q.size() - 2].m = m;
      Count(Counter::kMsgReordered);
      Trace(Ev::kReorder, from, to, m.seq);
      ++c.pending_faults;
      c.faulty = true;
    } else {
      q.push_back(InFlight{at, m});
    }
    if (dup) {
      q.push_back(InFlight{at, m});
      Count(Counter::kMsgDuplicated);
      Trace(Ev::kDup, from, to, m.seq);
      ++c.pending_faults;
      c.faulty = true;
    }
  }
  out->clear();
  c.last_activity_ms = now_;
}

void Simulation::Deliver(Conn& c, int side) {
  const size_t from = c.node(side), to = c.node(1 - side);
  std::deque<InFlight>& q = c.q[side];
  bool delivered = false;
  while (c.up && !failed_ && !q.empty() && q.front().at_ms <= now_) {
    if (Blocked(from, to)) {
      Count(Counter::kPartitionCuts);
      Trace(Ev::kPartitionCut, from, to);
      return Cut(c, kCutPartition);
    }
    msg::Message m = std::move(q.front().m);
    q.pop_front();
    Count(Counter::kMessages);
    c.last_activity_ms = now_;
    const char* body = msg::BodyName(m.body);
    Trace(Ev::kDeliver, from, to, (m.seq << 8) | m.body.index(), MessageDigest(m), body);
    if (auto* r = std::get_if<msg::BatchRefused>(&m.body)) {
      Count(Counter::kBatchRefused);
      Trace(Ev::kRefused, to, from, r->last_seq, 0, r->reason);
      if (!cfg_.clock_beyond) {
        return Fail(Name(to) + " refused a batch of " + Name(from) +
                    " although every clock stays within max_clock_offset: " + r->reason);
      }
    }
    std::vector<msg::Message> out;
    Status s = c.s[1 - side]->Receive(m, now_, &out);
    if (!s.ok()) {
      const bool order = s.message().find("out of order") != std::string::npos;
      if (order && c.faulty) {
        Count(Counter::kFaultsDetected);
        Trace(Ev::kDetected, from, to, m.seq, 0, s.message());
        return Cut(c, kCutDetected, s.message());
      }
      if (s.IsRefused() && s.message().find("ahead") != std::string::npos) {
        Trace(Ev::kSessionError, to, from, 0, 0, s.ToString());
        if (!cfg_.clock_beyond) {
          return Fail(
              "session at " + Name(to) + " refused " + Name(from) +
              "'s clock although every clock stays within max_clock_offset: " + s.ToString());
        }
        Count(Counter::kDiffRefusedCuts);
        return Cut(c, kCutRefused, s.ToString());
      }
      return Fail("session at " + Name(to) + " failed on " + body + " #" + std::to_string(m.seq) +
                  " from " + Name(from) + (c.faulty ? "" : " (no fault injected)") + ": " +
                  s.ToString());
    }
    if (!cfg_.clock_beyond && c.s[1 - side]->stats().records_refused > 0) {
      return Fail("session at " + Name(to) + " refused records of " + Name(from) +
                  " for their clock although every clock stays within max_clock_offset: " +
                  c.s[1 - side]->stats().last_error);
    }
    Enqueue(c, 1 - side, &out);
    delivered = true;
  }
  if (delivered && cfg_.poll_after_receive && c.up && !failed_) PollSide(c, 1 - side);
}

void Simulation::PollSide(Conn& c, int side) {
  std::vector<msg::Message> out;
  Status s = c.s[side]->Poll(now_, &out);
  if (!s.ok()) return Fail("poll at " + Name(c.node(side)) + ": " + s.ToString());
  Enqueue(c, side, &out);
}

// ---------------------------------------------------------------------------
// The event loop.

uint64_t Simulation::NextEventTime() const {
  uint64_t t = UINT64_MAX;
  auto at = [&t](uint64_t x) { t = std::min(t, x); };
  if (!healing_) {
    at(next_op_ms_);
    at(next_fault_ms_);
  }
  at(next_prune_ms_);
  for (const ClockRestore& r : clock_restores_) at(r.at_ms);
  for (const auto& n : nodes_) {
    if (!n->joined) {
      at(n->join_at_ms);
    } else if (!n->up()) {
      at(n->restart_at_ms);
    }
  }
  for (const Conn& c : conns_) {
    if (!c.up) {
      if (nodes_[c.a]->up() && nodes_[c.b]->up()) at(c.next_attempt_ms);
      continue;
    }
    for (int side = 0; side < 2; ++side) {
      if (!c.q[side].empty()) at(c.q[side].front().at_ms);
      at(c.next_poll_ms[side]);
    }
    if (c.busy_since_ms != 0) {
      at(std::max(c.busy_since_ms, c.last_activity_ms) + cfg_.stall_timeout_ms);
    }
  }
  return std::max(t, now_ + 1);
}

void Simulation::SetClocks() {
  for (const auto& n : nodes_) {
    n->clock->Set(static_cast<uint64_t>(static_cast<int64_t>(now_) + n->offset_ms));
  }
}

void Simulation::RunNodeTimers() {
  for (size_t i = 0; i < clock_restores_.size();) {
    if (clock_restores_[i].at_ms <= now_) {
      const ClockRestore r = clock_restores_[i];
      clock_restores_.erase(clock_restores_.begin() + static_cast<std::ptrdiff_t>(i));
      SetOffset(*nodes_[r.node], r.offset_ms, false);
    } else {
      ++i;
    }
  }
  for (const auto& n : nodes_) {
    if (failed_) return;
    if (!n->joined && n->join_at_ms <= now_) {
      Restart(*n);
    } else if (n->joined && !n->up() && n->restart_at_ms <= now_) {
      Restart(*n);
    }
  }
}

void Simulation::ConnectDue() {
  for (Conn& c : conns_) {
    if (failed_) return;
    if (!c.up && c.next_attempt_ms <= now_ && nodes_[c.a]->up() && nodes_[c.b]->up()) Connect(c);
  }
}

void Simulation::DeliverDue() {
  for (Conn& c : conns_) {
    for (int side = 0; side < 2 && c.up && !failed_; ++side) Deliver(c, side);
  }
}

void Simulation::PollDue() {
  for (Conn& c : conns_) {
    for (int side = 0; side < 2 && c.up && !failed_; ++side) {
      if (c.next_poll_ms[side] > now_) continue;
      c.next_poll_ms[side] = now_ + cfg_.poll_ms / 2 + rng_.Uniform(cfg_.poll_ms);
      PollSide(c, side);
    }
  }
}

// A connection with nothing in flight whose sessions are not idle, silent for
// longer than any timer of theirs, will never move again. After an injected
// fault that is expected (a dropped last message leaves no gap to detect):
// cut it, as a transport's keepalive would. Without one it is a protocol
// liveness bug.
void Simulation::CheckStalls() {
  for (Conn& c : conns_) {
    if (failed_) return;
    if (!c.up) continue;
    if (!c.q[0].empty() || !c.q[1].empty() || (c.s[0]->Idle() && c.s[1]->Idle())) {
      c.busy_since_ms = 0;
      continue;
    }
    if (c.busy_since_ms == 0) c.busy_since_ms = now_;
    const uint64_t silent_ms = now_ - std::max(c.busy_since_ms, c.last_activity_ms);
    if (silent_ms < cfg_.stall_timeout_ms) continue;
    const std::string state = SessionState(c, 0) + "; " + SessionState(c, 1);
    Trace(Ev::kStall, c.a, c.b, 0, 0, state);
    if (c.faulty) {
      Count(Counter::kStallCuts);
      Cut(c, kCutStall);
      continue;
    }
    Fail("connection " + Name(c.a) + "-" + Name(c.b) + " stalled for " + std::to_string(silent_ms) +
         "ms with nothing in flight and no fault injected: " + state);
  }
}

void Simulation::Step() {
  now_ = NextEventTime();
  SetClocks();
  RunNodeTimers();
  if (!healing_ && now_ >= next_op_ms_ && !failed_) {
    DoWrite();
    next_op_ms_ = now_ + 1 + rng_.Uniform(2 * cfg_.op_interval_ms);
  }
  if (!healing_ && now_ >= next_fault_ms_ && !failed_) {
    InjectFault();
    next_fault_ms_ = now_ + 1 + rng_.Uniform(2 * cfg_.fault_interval_ms);
  }
  if (now_ >= next_prune_ms_ && !failed_) {
    PruneAll();
    next_prune_ms_ = now_ + cfg_.prune_ms;
  }
  if (!failed_) ConnectDue();
  if (!failed_) DeliverDue();
  if (!failed_) PollDue();
  if (!failed_) CheckStalls();
  for (const auto& n : nodes_) {
    if (!failed_ && n->up()) RunRemoval(*n);
  }
}

// ---------------------------------------------------------------------------
// Workload and faults.

void Simulation::DoWrite() {
  std::vector<size_t> up;
  for (const auto& n : nodes_) {
    if (n->up()) up.push_back(n->index);
  }
  if (up.empty()) return;
  Node& n = *nodes_[up[rng_.Uniform(up.size())]];
  if (cfg_.p_clear > 0 && rng_.Bernoulli(cfg_.p_clear)) return DoClear(n);
  const bool multi = rng_.Bernoulli(0.1);
  const size_t ops = multi ? 2 + rng_.Uniform(3) : 1;
  WriteBatch batch;
  std::vector<uint64_t> ranks;
  std::vector<Version> before;  // the node's version of each op's key before the write
  for (size_t i = 0; i < ops; ++i) {
    const uint64_t rank = zipf_.Sample(rng_);
    const std::string map = rank % 4 == 3 ? "n" : "m";
    const std::string key = "k" + std::to_string(rank);
    auto it = n.shadow.find(KeyId(map, key));
    before.push_back(it == n.shadow.end() ? Version{} : it->second.version);
    ranks.push_back(rank);
    if (rng_.Bernoulli(cfg_.p_delete)) {
      batch.Delete(map, key);
    } else {
      std::string value = "v" + std::to_string(++op_counter_) + "@" + Name(n.index) + ":";
      const uint64_t pad =
          rng_.Bernoulli(0.1) ? 200 + rng_.Uniform(kLargeValueBytesMax - 300) : rng_.Uniform(40);
      value.append(static_cast<size_t>(pad), static_cast<char>('a' + rng_.Uniform(26)));
      const uint64_t ttl_ms =
          cfg_.p_ttl > 0 && rng_.Bernoulli(cfg_.p_ttl) ? 100 + rng_.Uniform(kTtlMaxSimMs - 99) : 0;
      batch.Put(map, key, value, PutOptions{ttl_ms});
    }
  }
  Result<std::vector<Version>> versions = std::vector<Version>{};
  if (multi) {
    versions = n.replica->Write(batch);
  } else {
    const WriteBatch::Op op = batch.op(0);
    auto v = op.tombstone ? n.replica->Delete(op.map, op.key)
                          : n.replica->Put(op.map, op.key, op.value, PutOptions{op.ttl_ms});
    if (v.ok()) {
      versions = std::vector<Version>{*v};
    } else {
      versions = v.status();
    }
  }
  if (!versions.ok())
    return Fail("write on " + Name(n.index) + ": " + versions.status().ToString());
  if (versions->size() != ops) return Fail("write returned a wrong number of versions");
  if (multi) {
    Count(Counter::kBatchWrites);
    Trace(Ev::kBatch, n.index, ops);
  }
  for (size_t i = 0; i < ops; ++i) {
    const WriteBatch::Op op = batch.op(i);
    const Version v = (*versions)[i];
    if (v.origin != n.id) return Fail("local write on " + Name(n.index) + " has another origin");
    // HLC monotonic per node, across restarts.
    if (v <= n.last_local) {
      return Fail(Name(n.index) + " issued " + RelVersion(v) + " after " +
                  RelVersion(n.last_local) + ": HLC not monotonic");
    }
    // A local write wins locally: the HLC is above every version the node holds.
    if (v <= before[i]) {
      return Fail(Name(n.index) + " stamped a write to " + std::string(op.key) + " " +
                  RelVersion(v) + ", not above the held " + RelVersion(before[i]));
    }
    if (n.incarnation > 0 && v <= n.last_local_before_wipe) {
      Count(Counter::kHlcBehindAfterWipe);
      if (n.issued_before_wipe.contains(v.hlc.raw)) Count(Counter::kVersionReissued);
    }
    n.last_local = v;
    n.issued.insert(v.hlc.raw);
    std::vector<Accepted>& writes = oracle_[KeyId(op.map, op.key)];
    const std::string value = op.tombstone ? std::string() : std::string(op.value);
    for (const Accepted& w : writes) {
      if (w.version == v && (w.tombstone != op.tombstone || w.value != value)) {
        Count(Counter::kEqualVersionConflicts);
      }
    }
    const uint64_t expiry_ms = op.ttl_ms == 0 ? 0 : v.hlc.physical_ms() + op.ttl_ms;
    writes.push_back(Accepted{v, op.tombstone, value, n.index, false, expiry_ms});
    Count(op.tombstone ? Counter::kDeletes : Counter::kPuts);
    if (op.ttl_ms != 0) Count(Counter::kTtlPuts);
    Trace(op.tombstone ? Ev::kDelete : Ev::kPut, n.index, ranks[i], v.hlc.raw, Hash64(op.value));
  }
  PollNode(n);
}

void Simulation::DoClear(Node& n) {
  const bool second = rng_.Bernoulli(0.5);
  const std::string map = second ? "n" : "m";
  auto v = n.replica->ClearMap(map);
  if (!v.ok()) return Fail("clear on " + Name(n.index) + ": " + v.status().ToString());
  if (*v <= n.last_local) {
    return Fail(Name(n.index) + " issued " + RelVersion(*v) + " after " + RelVersion(n.last_local) +
                ": HLC not monotonic");
  }
  n.last_local = *v;
  n.issued.insert(v->hlc.raw);
  oracle_[KeyId(map, "")].push_back(Accepted{*v, true, {}, n.index, false, 0});
  Count(Counter::kClears);
  Trace(Ev::kClear, n.index, second ? 1 : 0, v->hlc.raw);
  PollNode(n);
}

// Small batches, so removals run across crashes and restarts.
void Simulation::RunRemoval(Node& n) {
  constexpr size_t kRemovalRowsMax = 16;
  auto removal = n.replica->RemoveClearedRecords(kRemovalRowsMax);
  if (!removal.ok()) {
    return Fail("removal on " + Name(n.index) + ": " + removal.status().ToString());
  }
  if (removal->removed == 0) return;
  Count(Counter::kClearRemoved, removal->removed);
  // The shadow forgets what the removal deleted: records older than their
  // map's clear that the store no longer holds.
  for (auto it = n.shadow.begin(); it != n.shadow.end();) {
    const auto clear = n.shadow.find(KeyId(it->first.first, ""));
    if (it->first.second.empty() || clear == n.shadow.end() ||
        !(it->second.version < clear->second.version)) {
      ++it;
      continue;
    }
    auto rec = n.replica->ReadRecord(it->first.first, it->first.second);
    if (!rec.ok()) return Fail("read " + Name(n.index) + ": " + rec.status().ToString());
    it = rec->has_value() ? std::next(it) : n.shadow.erase(it);
  }
}

void Simulation::CheckClearedReads(Node& n) {
  for (const char* map : {"m", "n"}) {
    const auto clear = n.shadow.find(KeyId(map, ""));
    if (clear == n.shadow.end()) continue;
    auto page = n.replica->Scan(map, "", std::nullopt, 10'000);
    if (!page.ok()) return Fail("scan " + Name(n.index) + ": " + page.status().ToString());
    for (const ScanItem& item : page->items) {
      if (item.version < clear->second.version) {
        return Fail(Name(n.index) + " served " + std::string(map) + "/" + item.key + " at " +
                    RelVersion(item.version) + " after its map's clear " +
                    RelVersion(clear->second.version));
      }
    }
  }
}

void Simulation::SetOffset(Node& n, int64_t offset_ms, bool beyond) {
  n.offset_ms = offset_ms;
  n.clock->Set(static_cast<uint64_t>(static_cast<int64_t>(now_) + offset_ms));
  Trace(Ev::kClock, n.index, static_cast<uint64_t>(offset_ms), beyond ? 1 : 0);
}

void Simulation::InjectFault() {
  enum Kind { kCut, kPartSym, kPartAsym, kCrash, kClockJump, kClockBeyond, kWipe, kKinds };
  uint64_t weights[kKinds] = {
      25, 8, 8, 14, 8, cfg_.clock_beyond ? 5u : 0u, wipes_left_ > 0 ? 3u : 0u};
  uint64_t total = 0;
  for (uint64_t w : weights) total += w;
  uint64_t pick = rng_.Uniform(total);
  int kind = 0;
  while (pick >= weights[kind]) pick -= weights[kind++];

  const size_t nn = nodes_.size();
  switch (kind) {
    case kCut: {
      std::vector<size_t> up;
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (conns_[i].up) up.push_back(i);
      }
      if (up.empty()) return;
      Count(Counter::kCuts);
      return Cut(conns_[up[rng_.Uniform(up.size())]], kCutRandom);
    }
    case kPartSym: {
      // A random split into two non-empty sides.
      const uint64_t mask = 1 + rng_.Uniform((uint64_t{1} << nn) - 2);
      const uint64_t duration = 300 + rng_.Uniform(4'000);
      for (size_t x = 0; x < nn; ++x) {
        for (size_t y = 0; y < nn; ++y) {
          if (((mask >> x) & 1) != ((mask >> y) & 1)) {
            blocked_until_[x][y] = std::max(blocked_until_[x][y], now_ + duration);
          }
        }
      }
      Count(Counter::kPartitionsSym);
      return Trace(Ev::kPartitionSym, mask, 0, duration);
    }
    case kPartAsym: {
      const size_t from = rng_.Uniform(nn);
      const size_t to = (from + 1 + rng_.Uniform(nn - 1)) % nn;
      const uint64_t duration = 300 + rng_.Uniform(4'000);
      blocked_until_[from][to] = std::max(blocked_until_[from][to], now_ + duration);
      Count(Counter::kPartitionsAsym);
      return Trace(Ev::kPartitionAsym, from, to, duration);
    }
    case kCrash: {
      std::vector<size_t> up;
      for (const auto& n : nodes_) {
        if (n->up()) up.push_back(n->index);
      }
      if (up.empty()) return;
      Node& n = *nodes_[up[rng_.Uniform(up.size())]];
      // A machine crash loses unsynced bytes; in relaxed mode that may lose
      // acknowledged writes by design, so relaxed nodes only crash as processes.
      const bool drop = n.durability == Durability::kSync && rng_.Bernoulli(0.5);
      return Crash(n, drop);
    }
    case kClockJump: {
      Node& n = *nodes_[rng_.Uniform(nn)];
      Count(Counter::kClockJumps);
      return SetOffset(n,
                       static_cast<int64_t>(rng_.Uniform(2 * cfg_.in_range_offset_ms + 1)) -
                           cfg_.in_range_offset_ms,
                       false);
    }
    case kClockBeyond: {
      Node& n = *nodes_[rng_.Uniform(nn)];
      const int64_t beyond = static_cast<int64_t>(kMaxClockOffsetMs) + 1'000 +
                             static_cast<int64_t>(rng_.Uniform(60'000));
      const int64_t restore = n.offset_ms;
      Count(Counter::kClockBeyond);
      SetOffset(n, rng_.Bernoulli(0.5) ? beyond : -beyond, true);
      clock_restores_.push_back(ClockRestore{now_ + 300 + rng_.Uniform(3'000), n.index, restore});
      return;
    }
    case kWipe: {
      std::vector<size_t> joined;
      for (const auto& n : nodes_) {
        if (n->joined) joined.push_back(n->index);
      }
      if (joined.empty()) return;
      --wipes_left_;
      Node& n = *nodes_[joined[rng_.Uniform(joined.size())]];
      Wipe(n);
      return;
    }
    default:
      return;
  }
}

void Simulation::PruneAll() {
  for (const auto& n : nodes_) {
    if (!n->up()) continue;
    auto p = n->replica->PruneOplog();
    if (!p.ok()) return Fail("prune " + Name(n->index) + ": " + p.status().ToString());
    if (p->rows_pruned > 0) {
      Count(Counter::kPrunedRows, p->rows_pruned);
      Trace(Ev::kPrune, n->index, p->rows_pruned, p->pruned_through);
    }
    if (cfg_.tombstone_horizon_ms != 0) PurgeTombstones(*n);
    if (failed_) return;
    if (cfg_.p_ttl > 0) CheckExpiries(*n);
    if (failed_) return;
    if (cfg_.p_clear > 0) CheckClearedReads(*n);
    if (failed_) return;
  }
}

// The node's clock is global time plus its offset, so a record it serves
// has not expired by more than that offset in global time; the scan and the
// gets must agree with the stored expiry. Then the node announces what
// expired (the subscription checks each event).
void Simulation::CheckExpiries(Node& n) {
  for (const char* map : {"m", "n"}) {
    auto page = n.replica->Scan(map, "", std::nullopt, 10'000);
    if (!page.ok()) return Fail("scan " + Name(n.index) + ": " + page.status().ToString());
    const uint64_t node_now = n.clock->NowMillis();
    for (const ScanItem& item : page->items) {
      Count(Counter::kExpiryChecks);
      if (item.expiry_ms != 0 && item.expiry_ms <= node_now) {
        return Fail(Name(n.index) + " served " + std::string(map) + "/" + item.key +
                    " past its expiry (" + Ms(item.expiry_ms) + ", its clock at " + Ms(node_now) +
                    ")");
      }
      auto got = n.replica->Get(map, item.key);
      if (!got.ok() || got->expiry_ms != item.expiry_ms || got->version != item.version) {
        return Fail(Name(n.index) + ": get and scan disagree on " + std::string(map) + "/" +
                    item.key);
      }
    }
  }
  auto expired = n.replica->ExpireRecords();
  if (!expired.ok()) return Fail("expire " + Name(n.index) + ": " + expired.status().ToString());
}

void Simulation::PurgeTombstones(Node& n) {
  std::string wrong;
  auto purged = n.replica->PurgeTombstones([&](const KeyMeta& m) {
    const KeyId key(std::string(m.map), std::string(m.key));
    auto it = n.shadow.find(key);
    // A tombstone, or an expired record (its expiry older than the horizon).
    if (it == n.shadow.end() || it->second.tombstone != m.tombstone ||
        it->second.version != m.version ||
        (!m.tombstone &&
         (it->second.expiry_ms == 0 ||
          it->second.expiry_ms + cfg_.tombstone_horizon_ms > n.clock->NowMillis()))) {
      wrong = key.first + "/" + key.second + " at " + RelVersion(m.version);
    }
    n.shadow.erase(key);
    Version& v = n.purged[key];
    v = std::max(v, m.version);
    if (!m.tombstone) {
      Version& e = n.expired_floor[key];
      e = std::max(e, m.version);
    }
  });
  if (!purged.ok()) return Fail("purge " + Name(n.index) + ": " + purged.status().ToString());
  if (!wrong.empty())
    return Fail(Name(n.index) + " purged " + wrong +
                ", not its current tombstone or expired record");
  if (purged->purged > 0) {
    Count(Counter::kTombstonesPurged, purged->purged - purged->expired_purged);
    Count(Counter::kExpiredPurged, purged->expired_purged);
    Trace(Ev::kPurge, n.index, purged->purged, purged->watermark.hlc.raw);
  }
}

// ---------------------------------------------------------------------------
// Heal and the final invariants.

bool Simulation::Converged() const {
  const Digest128 root = nodes_[0]->replica->MerkleRoot();
  for (const auto& n : nodes_) {
    if (!n->up() || n->replica->MerkleRoot() != root) return false;
  }
  return true;
}

bool Simulation::Quiet() const {
  for (const Conn& c : conns_) {
    if (!c.up || !c.q[0].empty() || !c.q[1].empty() || !c.s[0]->Idle() || !c.s[1]->Idle()) {
      return false;
    }
  }
  return true;
}

void Simulation::Heal() {
  healing_ = true;
  Trace(Ev::kHeal);
  for (auto& row : blocked_until_) std::fill(row.begin(), row.end(), 0);
  clock_restores_.clear();
  for (const auto& n : nodes_) {
    SetOffset(*n, static_cast<int64_t>(rng_.Uniform(2 * kHealOffsetMs + 1)) - kHealOffsetMs, false);
  }
  for (const auto& n : nodes_) {
    if (failed_) return;
    if (!n->up()) Restart(*n);
  }
  if (failed_) return;
  // Timestamps stamped while a clock ran beyond the limit are refused until
  // every physical clock is within max_clock_offset of them again.
  uint64_t hlc_max_ms = 0;
  int64_t offset_min = INT64_MAX;
  for (const auto& n : nodes_) {
    hlc_max_ms = std::max(hlc_max_ms, n->replica->LastTimestamp().physical_ms());
    offset_min = std::min(offset_min, n->offset_ms);
  }
  const auto slowest_ms = static_cast<uint64_t>(static_cast<int64_t>(now_) + offset_min);
  const uint64_t catch_up_ms =
      hlc_max_ms > slowest_ms + kMaxClockOffsetMs ? hlc_max_ms - slowest_ms - kMaxClockOffsetMs : 0;
  const uint64_t heal_start = now_;
  // Convergence comes from the diffs or, at worst, from streaming every row
  // still unacknowledged, hop by hop.
  // With GC, a tombstone one node purged goes elsewhere once the horizon
  // passed on their clocks too (a few seconds of skew), at a GC tick.
  const uint64_t gc_ms = cfg_.tombstone_horizon_ms == 0
                             ? 0
                             : cfg_.prune_ms + 2 * static_cast<uint64_t>(cfg_.in_range_offset_ms);
  const uint64_t limit_ms =
      catch_up_ms + 3 * cfg_.sync.diff_interval_ms + StreamMs(true) + gc_ms + 30'000;
  while (!failed_ && !Converged()) {
    if (now_ - heal_start > limit_ms) {
      std::string roots;
      for (const auto& n : nodes_) {
        roots += " " + Name(n->index) + "=" + n->replica->MerkleRoot().ToHex().substr(0, 8) +
                 "(last_seq " + std::to_string(n->replica->LastSeq()) + ")";
      }
      return Fail("not converged within " + std::to_string(limit_ms) + "ms of heal (catch-up " +
                  std::to_string(catch_up_ms) + "ms); roots:" + roots);
    }
    Step();
  }
  if (failed_) return;
  result_.heal_ms = now_ - heal_start;
  auto& heal_max = result_.counters[static_cast<int>(Counter::kHealMsMax)];
  heal_max = std::max(heal_max, result_.heal_ms);
  Trace(Ev::kConverged, result_.heal_ms);
  VerifyFinal();
  if (failed_) return;

  // Then every connection settles: up, nothing in flight, every session idle.
  const uint64_t quiet_start = now_;
  // Streaming may still be working through the oplog (rows the peers mostly
  // hold already); sessions stream in parallel.
  const uint64_t quiet_limit_ms = StreamMs(false) + 3 * cfg_.sync.diff_interval_ms + 10'000;
  while (!failed_ && !Quiet()) {
    if (now_ - quiet_start > quiet_limit_ms) {
      std::string state;
      for (const Conn& c : conns_) {
        if (!c.up) {
          state += " [" + Name(c.a) + "-" + Name(c.b) + " down]";
        } else if (!c.s[0]->Idle() || !c.s[1]->Idle()) {
          state += " [" + SessionState(c, 0) + "; " + SessionState(c, 1) + "]";
        }
      }
      return Fail("converged but not quiescent within " + std::to_string(quiet_limit_ms) +
                  "ms:" + state);
    }
    Step();
  }
  if (failed_) return;
  Trace(Ev::kQuiet);
  // Every message fault injected was reported by a session, or stalled its
  // connection, or died with it: none was swallowed.
  for (const Conn& c : conns_) {
    if (c.pending_faults > 0) {
      return Fail("connection " + Name(c.a) + "-" + Name(c.b) + " delivered " +
                  std::to_string(c.pending_faults) + " injected message fault(s) undetected");
    }
  }
  // Quiescent sessions have every row acknowledged: the cursors caught up.
  for (const Conn& c : conns_) {
    for (int side = 0; side < 2; ++side) {
      Node& n = *nodes_[c.node(side)];
      const Node& peer = *nodes_[c.node(1 - side)];
      auto cursor = ReplicaTestAccess::oplog(*n.replica).PeerAck(peer.id);
      if (!cursor.ok() || *cursor != n.replica->LastSeq()) {
        return Fail(Name(n.index) + "'s cursor for " + Name(peer.index) + " is " +
                    (cursor.ok() ? std::to_string(*cursor) : cursor.status().ToString()) +
                    " at quiescence, last_seq " + std::to_string(n.replica->LastSeq()));
      }
    }
  }
  if (cfg_.tombstone_horizon_ms != 0) FinalPurge();
  for (const Conn& c : conns_) {
    for (const auto& s : c.s) CountSession(*s);
  }
}

// Once every cursor caught up, a GC round after the horizon passed on every
// clock purges every tombstone on every replica; the roots and scans must
// still agree (the trees hold the same live records), and the sessions must
// settle again without shipping anything back.
void Simulation::FinalPurge() {
  // Past every expiry too: expired records go with the tombstones.
  now_ += cfg_.tombstone_horizon_ms + 2 * static_cast<uint64_t>(cfg_.in_range_offset_ms) + 5'000 +
          (cfg_.p_ttl > 0 ? kTtlMaxSimMs : 0);
  SetClocks();
  for (const auto& n : nodes_) {
    PurgeTombstones(*n);
    if (failed_) return;
    auto stats = n->replica->Stats();
    if (!stats.ok()) return Fail("stats " + Name(n->index) + ": " + stats.status().ToString());
    // A map's clear is a tombstone the GC keeps for good.
    const uint64_t clears = static_cast<uint64_t>(
        std::count_if(n->shadow.begin(), n->shadow.end(),
                      [](const auto& entry) { return entry.first.second.empty(); }));
    if (stats->tombstones != clears) {
      return Fail(Name(n->index) + " still holds " + std::to_string(stats->tombstones - clears) +
                  " tombstones after the final GC round");
    }
    for (const auto& [key, rec] : FullScan(*n)) {
      if (rec.first.expiry_ms != 0) {
        return Fail(Name(n->index) + " still holds " + key.first + "/" + key.second +
                    ", expired, after the final GC round");
      }
    }
  }
  if (!Converged()) return Fail("roots differ after every replica purged every tombstone");
  VerifyFinal();
  uint64_t sent_before = 0;
  for (const Conn& c : conns_) {
    for (const auto& s : c.s) sent_before += s->stats().records_sent;
  }
  const uint64_t start = now_;
  const uint64_t limit_ms = 3 * cfg_.sync.diff_interval_ms + 10'000;
  while (!failed_ && (now_ - start < cfg_.sync.diff_interval_ms || !Quiet())) {
    if (now_ - start > limit_ms) return Fail("not quiescent again after the final GC round");
    Step();
  }
  if (failed_) return;
  uint64_t sent_after = 0;
  for (const Conn& c : conns_) {
    for (const auto& s : c.s) sent_after += s->stats().records_sent;
  }
  if (sent_after != sent_before || !Converged()) {
    return Fail("sessions shipped " + std::to_string(sent_after - sent_before) +
                " records after the final GC round" + (Converged() ? "" : " and roots differ"));
  }
}

// An upper bound on the time streaming needs for the rows peers have not
// acknowledged yet: at worst one batch per poll and round trip. With
// `whole_cluster`, every node's backlog is forwarded across every hop in turn
// (a bound for convergence by streaming alone); else the largest one session has.
uint64_t Simulation::StreamMs(bool whole_cluster) const {
  uint64_t total_rows = 0, max_rows = 0, latency_max_ms = 0;
  for (const auto& n : nodes_) {
    uint64_t node_rows = 0;
    for (size_t ci : n->conns) {
      const Conn& c = conns_[ci];
      const Node& peer = *nodes_[c.a == n->index ? c.b : c.a];
      const uint64_t last = n->replica->LastSeq();
      auto cursor = ReplicaTestAccess::oplog(*n->replica).PeerAck(peer.id);
      const uint64_t acked = cursor.ok() ? *cursor : 0;
      node_rows = std::max(node_rows, last > acked ? last - acked : 0);
      latency_max_ms = std::max({latency_max_ms, c.latency_ms[0], c.latency_ms[1]});
    }
    total_rows += node_rows;
    max_rows = std::max(max_rows, node_rows);
  }
  const uint64_t hops = cfg_.full_mesh ? 1 : nodes_.size() - 1;
  const uint64_t rows = whole_cluster ? total_rows * hops : max_rows;
  const uint64_t rows_per_batch =
      cfg_.sync.batch_bytes_max >= kLargeValueBytesMax
          ? cfg_.sync.batch_records_max
          : std::clamp<uint64_t>(cfg_.sync.batch_bytes_max / kLargeValueBytesMax, 1,
                                 cfg_.sync.batch_records_max);
  const uint64_t round_ms = cfg_.poll_ms * 3 / 2 + 4 * latency_max_ms + 2;
  return (rows + rows_per_batch - 1) / rows_per_batch * round_ms;
}

void Simulation::VerifyFinal() {
  // Every replica: the stored tree equals a rebuild, and the subscription saw
  // exactly what is stored.
  std::vector<std::map<KeyId, std::pair<ShadowRec, std::string>>> scans;
  for (const auto& n : nodes_) {
    auto scrub = n->replica->Scrub();
    if (!scrub.ok()) return Fail("scrub " + Name(n->index) + ": " + scrub.status().ToString());
    if (!scrub->ok()) {
      return Fail("scrub " + Name(n->index) + ": stored tree differs from a rebuild (leaf " +
                  std::to_string(scrub->leaf_mismatches) + ", index " +
                  std::to_string(scrub->index_mismatches) + ")");
    }
    scans.push_back(FullScan(*n));
    if (failed_) return;
    std::map<KeyId, ShadowRec> stored;
    for (const auto& [k, v] : scans.back()) stored[k] = v.first;
    if (stored != n->shadow) return Fail(Name(n->index) + ": store and change feed disagree");
  }
  // Keys where a wiped node re-issued its former self's version with other
  // bytes: the Merkle digest cannot tell those apart, the origin resync after
  // the wipe must (SyncTest.WipedNodeReissuingAVersionStillConverges).
  std::set<KeyId> equal_version_keys;
  for (const auto& [key, writes] : oracle_) {
    for (size_t i = 0; i < writes.size(); ++i) {
      for (size_t j = i + 1; j < writes.size(); ++j) {
        if (writes[i].version == writes[j].version && !writes[i].lost && !writes[j].lost &&
            (writes[i].tombstone != writes[j].tombstone || writes[i].value != writes[j].value)) {
          equal_version_keys.insert(key);
        }
      }
    }
  }
  // Equal full scans (values and tombstones included), not only equal roots.
  for (size_t i = 1; i < scans.size(); ++i) {
    if (scans[i] == scans[0]) continue;
    for (const auto& [k, v] : scans[0]) {
      auto it = scans[i].find(k);
      if (it != scans[i].end() && it->second == v) continue;
      return Fail("equal roots but " + Name(i) + " differs from n0 at " + k.first + "/" + k.second +
                  (equal_version_keys.contains(k)
                       ? " (two accepted writes share one version there: a re-issued version)"
                       : ""));
    }
    if (scans[i].size() != scans[0].size()) {
      return Fail("equal roots but " + Name(i) + " holds keys n0 lacks");
    }
  }
  VerifyLwwMaximum(scans[0]);
}

// Each key of `scan` (one replica's full scan; they are all equal) is at the
// LWW maximum of the accepted writes that survived, or absent where GC may
// have purged that maximum; no key was never written.
void Simulation::VerifyLwwMaximum(const std::map<KeyId, std::pair<ShadowRec, std::string>>& scan) {
  // Per map, its newest surviving clear: a map's record at the empty key.
  std::map<std::string, Version> clears;
  for (const auto& [key, writes] : oracle_) {
    if (!key.second.empty()) continue;
    for (const Accepted& w : writes) {
      if (!w.lost) clears[key.first] = std::max(clears[key.first], w.version);
    }
  }
  for (const auto& [key, writes] : oracle_) {
    const Accepted* best = nullptr;
    for (const Accepted& w : writes) {
      if (!w.lost && (best == nullptr || Beats(w, *best))) best = &w;
    }
    auto it = scan.find(key);
    const std::string name = key.first + "/" + key.second;
    if (best == nullptr) {
      if (it != scan.end()) return Fail(name + " exists though every write to it was wiped");
      continue;
    }
    // Older than its map's clear: removed, or at most a (restored) delete.
    if (const auto clear = clears.find(key.first);
        !key.second.empty() && clear != clears.end() && best->version < clear->second) {
      if (it != scan.end() && !it->second.first.tombstone) {
        return Fail(name + " is live at " + RelVersion(it->second.first.version) +
                    " after its map's clear " + RelVersion(clear->second));
      }
      continue;
    }
    // A tombstone may have been purged (everywhere: the scans are equal).
    if (it == scan.end() && best->tombstone && cfg_.tombstone_horizon_ms != 0) continue;
    // So may an expired record once its expiry is older than the horizon on
    // some clock; an older version sent back then was answered with a
    // restored delete at or above it.
    const bool purgeable = !best->tombstone && best->expiry_ms != 0 &&
                           cfg_.tombstone_horizon_ms != 0 &&
                           best->expiry_ms + cfg_.tombstone_horizon_ms <=
                               now_ + static_cast<uint64_t>(cfg_.in_range_offset_ms);
    if (purgeable && (it == scan.end() ||
                      (it->second.first.tombstone && it->second.first.version >= best->version))) {
      continue;
    }
    if (it == scan.end()) {
      return Fail("acknowledged write lost: " + name + " absent, expected " +
                  RelVersion(best->version) + " from " + Name(best->node));
    }
    const ShadowRec& got = it->second.first;
    if (got.version != best->version || got.tombstone != best->tombstone ||
        (!got.tombstone &&
         (it->second.second != best->value || got.expiry_ms != best->expiry_ms))) {
      return Fail(name + " is " + RelVersion(got.version) + (got.tombstone ? " (deleted)" : "") +
                  ", the LWW maximum of accepted writes is " + RelVersion(best->version) +
                  (best->tombstone ? " (deleted)" : "") + " from " + Name(best->node));
    }
  }
  for (const auto& [key, v] : scan) {
    if (!oracle_.contains(key)) return Fail("phantom key " + key.first + "/" + key.second);
  }
}

SimResult Simulation::Run() {
  result_.seed = seed_;
  Configure();
  next_op_ms_ = now_ + 1;
  next_fault_ms_ = now_ + 1 + rng_.Uniform(2 * cfg_.fault_interval_ms);
  next_prune_ms_ = now_ + cfg_.prune_ms;
  SetClocks();
  RunNodeTimers();
  const uint64_t end_ms = kStartMs + cfg_.run_ms;
  while (!failed_ && now_ < end_ms) Step();
  if (!failed_) Heal();
  // Fold the final state into the trace.
  for (const auto& n : nodes_) {
    if (n->up()) {
      const Digest128 root = n->replica->MerkleRoot();
      hash_ = Mix(Mix(Mix(hash_, root.lo), root.hi), n->replica->LastSeq());
    }
  }
  result_.trace_hash = hash_;
  if (!result_.ok()) {
    for (const Event& e : log_) result_.log_tail += "    " + FormatEvent(e) + "\n";
  }
  // Sessions go before the replicas they borrow.
  for (Conn& c : conns_) {
    for (auto& s : c.s) s.reset();
  }
  return result_;
}

}  // namespace

std::string SimResult::Report() const {
  std::string s = "seed " + std::to_string(seed) + (ok() ? " passed" : " FAILED") + "\n";
  for (const std::string& f : failures) s += "  invariant broken " + f + "\n";
  s += "  config: " + config + "\n";
  s += "  trace hash " + std::to_string(trace_hash) + ", " + std::to_string(events) + " events\n";
  if (!log_tail.empty()) s += "  last events:\n" + log_tail;
  s += "  replay: TIDEMAP_SIM_SEED=" + std::to_string(seed) + " sim_test\n";
  return s;
}

SimResult RunSeed(uint64_t seed, const SimParams& params) {
  Simulation sim(seed, params);
  return sim.Run();
}

}  // namespace tidemap::sim
