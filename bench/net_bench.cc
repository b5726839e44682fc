// Network benchmarks: two in-process net::Node instances on
// 127.0.0.1, each over its own Replica on a real LevelDB in a fresh temp dir
// (durability relaxed), authenticated and encrypted as in production. Writes
// are 16-byte keys and 100-byte values, as in bench/replica_bench.cc.
//
//   BM_NetReplication  A writes blocks of records (Replica::Write, batches of
//                      1000); an iteration ends when B has applied the block.
//                      items = records applied on B; bench/main.cc prints it
//                      against BM_RawLevelDbPut/batched_1000 as
//                      replication_vs_raw_leveldb.
//   BM_NetCatchUp      B's node is stopped while A writes a block of records
//                      (as in BM_NetReplication; not timed), then started
//                      again: time until B has applied the block, from its
//                      cursor in A's oplog (dial and handshake included).
//                      A reads the records back from disk rather than from
//                      its memtable. bench/main.cc prints it against
//                      BM_RawLevelDbPut/batched_1000 as catch_up_vs_raw_leveldb.
//   BM_NetLag          single puts on A paced at kLagWritesPerSecond by a
//                      steady clock; per write, the time from Put returning on
//                      A to B's Subscribe callback seeing the remote change.
//                      Report line "net lag writes_per_s=… p50_ms=… p99_ms=…".
//   BM_NetBootstrap    A holds N keys (TIDEMAP_BENCH_BOOTSTRAP_KEYS, default
//                      1M; filled before timing, nothing kept across runs); B
//                      starts empty and dials A; time until B's Merkle root
//                      equals A's. Report line "net bootstrap keys=… …".
//   BM_NetHandshake    the sans-I/O handshake of net/handshake.h run in memory
//                      (initiator against responder); connect+handshake on
//                      loopback between plain blocking sockets (two threads);
//                      and between nodes, from B's Node::Start until both
//                      report the other connected. Report line "net handshake …".
//
// Both nodes, the writer and the waiting thread share the machine's cores, as
// two daemons on one host would. Every wait is bounded; a timeout fails the
// benchmark with SkipWithError.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/cpu.h"
#include "bench/own_env.h"
#include "bench/report.h"
#include "bench/workload.h"
#include <tidemap/base/crypto.h>
#include <tidemap/base/random.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/node.h>
#include <tidemap/net/trust.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/identity.h>

namespace tidemap {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

using bench::Hex16;
using bench::kKeyBytes;
using bench::kMap;
using bench::kPayloadBytes;
using bench::TempDir;
using bench::TheValues;
constexpr size_t kBatchOps = 1000;  // per Replica::Write

// BM_NetReplication: records per iteration (a block), iterations per run, runs.
constexpr int64_t kReplicationBlockRecords = 10'000;
constexpr int64_t kReplicationIterations = 10;
constexpr int kReplicationRepetitions = 3;
// BM_NetCatchUp: records written on A while B is down, per iteration.
constexpr int64_t kCatchUpBlockRecords = 100'000;
constexpr int64_t kCatchUpIterations = 3;
// BM_NetLag: offered load and how long it is held.
constexpr uint64_t kLagWritesPerSecond = 10'000;
constexpr uint64_t kLagSeconds = 5;
// BM_NetBootstrap: keys on A unless TIDEMAP_BENCH_BOOTSTRAP_KEYS says otherwise.
constexpr uint64_t kBootstrapKeysDefault = 1'000'000;
constexpr uint64_t kBootstrapKeysMax = 100'000'000;
// BM_NetHandshake: samples of each kind.
constexpr int kHandshakesInMemory = 200;
constexpr int kHandshakesOverSockets = 100;
constexpr int kLoopbackConnects = 30;

// Bounds on every wait.
constexpr auto kConnectTimeout = seconds(10);
constexpr auto kApplyTimeout = seconds(60);  // one replication block, or the lag tail
constexpr auto kBootstrapTimeout = seconds(600);
constexpr auto kDisconnectTimeout = seconds(10);

// Polls `done` every `poll` until it returns true (true) or `timeout` passes (false).
template <typename Pred>
bool WaitFor(SteadyClock::duration timeout, SteadyClock::duration poll, Pred done) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!done()) {
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

double MsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

// The value at quantile q (0..1) of `sorted` (ascending); 0 when empty.
double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

std::shared_ptr<spdlog::logger> QuietLogger() {
  return std::make_shared<spdlog::logger>("net_bench",
                                          std::make_shared<spdlog::sinks::null_sink_mt>());
}

// One node: identity and replica in its own directory, the trust list, and
// while it runs, the net::Node. Members are destroyed in reverse order, so the
// node stops before the replica, trust list and identity it borrows go.
struct Peer {
  std::string dir;
  std::optional<Identity> identity;
  SystemClock clock;
  bench::OwnCompactionThreadEnv env;
  std::unique_ptr<Replica> replica;
  net::TrustList trust;
  std::unique_ptr<net::Node> node;

  // Creates the identity and opens the replica under `path`. Empty on success.
  std::string Open(const std::string& path) {
    dir = path;
    auto id = Identity::Create(dir);
    if (!id.ok()) return id.status().ToString();
    identity.emplace(std::move(*id));
    ReplicaOptions o;
    o.path = dir + "/db";
    o.clock = &clock;
    o.node_id = identity->node_id();
    o.durability = Durability::kRelaxed;
    o.env = &env;
    bench::WriteBufferFromEnv(&o.write_buffer_bytes);
    auto r = Replica::Open(std::move(o));
    if (!r.ok()) return r.status().ToString();
    replica = std::move(*r);
    return {};
  }

  // Starts the node listening on a free loopback port, dialing `peers`.
  std::string Start(std::vector<std::string> peers) {
    net::NodeOptions o;
    o.listen = "127.0.0.1:0";
    o.peers = std::move(peers);
    auto n =
        net::Node::Start(std::move(o), replica.get(), &*identity, &trust, &clock, QuietLogger());
    if (!n.ok()) return n.status().ToString();
    node = std::move(*n);
    return {};
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(node->listen_port()); }

  // Whether this node's snapshot shows `other` connected.
  bool SeesConnected(const Peer& other) const {
    if (node == nullptr) return false;
    const net::NetStatus s = node->Snapshot();
    for (const net::PeerStatus& p : s.peers) {
      if (p.node_id == other.identity->node_id()) return p.connected;
    }
    return false;
  }
};

// Two nodes that trust each other: a listens, b dials a.
struct Pair {
  TempDir root{"tidemap-netbench"};
  Peer a;
  Peer b;

  // Identities, replicas and trust lists; no node runs yet. Empty on success.
  std::string Open() {
    if (!root.ok()) return "cannot create a directory under /tmp";
    std::string error = a.Open(root.path() + "/a");
    if (error.empty()) error = b.Open(root.path() + "/b");
    if (!error.empty()) return error;
    a.trust.Add(b.identity->public_key());
    b.trust.Add(a.identity->public_key());
    return {};
  }
  std::string StartA() { return a.Start({}); }
  std::string StartB() { return b.Start({a.address()}); }
  bool BothConnected() const { return a.SeesConnected(b) && b.SeesConnected(a); }

  // Opens, starts both nodes and waits for the connection. Empty on success.
  std::string OpenAndConnect() {
    std::string error = Open();
    if (error.empty()) error = StartA();
    if (error.empty()) error = StartB();
    if (!error.empty()) return error;
    if (!WaitFor(kConnectTimeout, milliseconds(1), [&] { return BothConnected(); })) {
      return "the nodes did not connect within 10 s";
    }
    return {};
  }
};

// Writes records [first, first + count) on `replica` in batches of kBatchOps.
Status WriteRange(Replica* replica, uint64_t first, uint64_t count) {
  for (uint64_t start = first; start < first + count; start += kBatchOps) {
    WriteBatch batch;
    for (uint64_t i = start; i < std::min(first + count, start + kBatchOps); ++i) {
      batch.Put(kMap, bench::KeyString(i), TheValues().At(i));
    }
    auto v = replica->Write(batch);
    if (!v.ok()) return v.status();
  }
  return Status::Ok();
}

// ---- replication throughput ----

// For benchmarks where A writes and B only applies: opens and connects
// `pair` (false, with the benchmark failed, when that fails) and sets
// `*b_base` to B's last seq. B writes nothing itself and every key is new,
// so each record A writes takes exactly one seq in B's oplog when B applies it.
bool ConnectForStreaming(benchmark::State& state, Pair* pair, uint64_t* b_base) {
  const std::string error = pair->OpenAndConnect();
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return false;
  }
  *b_base = pair->b.replica->LastSeq();
  return true;
}

// Waits (bounded by kApplyTimeout) until B has applied `records` of A's.
bool WaitApplied(const Replica& b, uint64_t b_base, uint64_t records) {
  return WaitFor(kApplyTimeout, microseconds(100), [&] { return b.LastSeq() - b_base >= records; });
}

// Sets counters on `state` that say where the CPU time of a run went, per
// record applied on B, from per-thread CPU seconds taken before and after it:
// `writer_us` (the benchmark's thread: A's writes, and its polls of B),
// `net_us` (the two nodes' event loops: A's stream, B's merge, framing and
// crypto), `compaction_us` (the two databases' LevelDB background threads),
// `other_us` (the rest of the process, e.g. threads that ended) and `cpu_us`
// (all of it). `cores_busy` is the process's CPU time over the wall time:
// near the core count, the run was bound by CPU, and its rate by the CPU a
// record takes.
void ReportCpu(benchmark::State& state, const std::map<std::string, double>& before,
               const std::map<std::string, double>& after, double cpu_s, double wall_s,
               uint64_t records) {
  if (records == 0 || wall_s <= 0) return;
  const auto used = [&](const std::string& name) {
    const auto a = after.find(name), b = before.find(name);
    const double end = a == after.end() ? 0 : a->second;
    const double begin = b == before.end() ? 0 : b->second;
    return std::max(end - begin, 0.0);
  };
  const double per_record_us = 1e6 / static_cast<double>(records);
  const double writer = used(bench::kMainThread);
  const double net = used(net::kEventLoopThreadName);
  const double compaction = used(bench::OwnCompactionThreadEnv::kThreadName);
  state.counters["cpu_us"] = cpu_s * per_record_us;
  state.counters["writer_us"] = writer * per_record_us;
  state.counters["net_us"] = net * per_record_us;
  state.counters["compaction_us"] = compaction * per_record_us;
  state.counters["other_us"] = std::max(cpu_s - writer - net - compaction, 0.0) * per_record_us;
  state.counters["cores_busy"] = cpu_s / wall_s;
}

void BM_NetReplication(benchmark::State& state) {
  Pair pair;
  uint64_t b_base = 0;
  if (!ConnectForStreaming(state, &pair, &b_base)) return;
  Replica& a = *pair.a.replica;
  Replica& b = *pair.b.replica;
  uint64_t written = 0;
  // Where an iteration's time goes: A's own writes, then the wait for B to
  // apply what it has not yet (the tail after A's last write returned).
  double write_ms = 0;
  double tail_ms = 0;
  // And where the CPU time goes, by thread (see ReportCpu).
  const std::map<std::string, double> threads_before = bench::ThreadCpuSeconds();
  const double cpu_before = bench::ProcessCpuSeconds();
  const auto start = SteadyClock::now();
  for (auto _ : state) {
    const auto t0 = SteadyClock::now();
    const Status s = WriteRange(&a, written, kReplicationBlockRecords);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    written += kReplicationBlockRecords;
    const auto t1 = SteadyClock::now();
    write_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    if (!WaitApplied(b, b_base, written)) {
      state.SkipWithError("B did not apply a block within 60 s");
      break;
    }
    tail_ms += MsSince(t1);
  }
  state.SetItemsProcessed(static_cast<int64_t>(written));
  state.SetBytesProcessed(static_cast<int64_t>(written) * kPayloadBytes);
  const auto iterations =
      static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  state.counters["a_write_ms"] = write_ms / iterations;
  state.counters["b_tail_ms"] = tail_ms / iterations;
  ReportCpu(state, threads_before, bench::ThreadCpuSeconds(),
            bench::ProcessCpuSeconds() - cpu_before, MsSince(start) / 1e3, written);
  if (!state.error_occurred() && a.MerkleRoot() != b.MerkleRoot()) {
    state.SkipWithError("the Merkle roots differ after replication");
  }
}
BENCHMARK(BM_NetReplication)
    ->Iterations(kReplicationIterations)
    ->Repetitions(kReplicationRepetitions)
    ->UseRealTime()
    ->DisplayAggregatesOnly()
    ->Unit(benchmark::kMillisecond);

// ---- catch-up after downtime ----

void BM_NetCatchUp(benchmark::State& state) {
  const auto block = static_cast<uint64_t>(state.range(0));
  Pair pair;
  uint64_t b_base = 0;
  if (!ConnectForStreaming(state, &pair, &b_base)) return;
  Replica& a = *pair.a.replica;
  const Replica& b = *pair.b.replica;
  // Warm-up: B has been in contact and holds a cursor into A's oplog, so
  // what follows is the stream from that cursor, as after a restart.
  uint64_t written = kBatchOps;
  Status s = WriteRange(&a, 0, written);
  if (s.ok() && !WaitApplied(b, b_base, written)) {
    s = Status::Unavailable("B did not apply the warm-up writes");
  }
  for (auto _ : state) {
    if (!s.ok()) break;
    state.PauseTiming();
    pair.b.node.reset();  // B goes down
    s = WriteRange(&a, written, block);
    written += block;
    state.ResumeTiming();
    if (!s.ok()) break;
    const std::string error = pair.StartB();
    if (!error.empty()) {
      s = Status::Unavailable(error);
    } else if (!WaitApplied(b, b_base, written)) {
      s = Status::Unavailable("B did not catch up within 60 s");
    }
  }
  if (!s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(block));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(block) * kPayloadBytes);
  if (a.MerkleRoot() != b.MerkleRoot()) {
    state.SkipWithError("the Merkle roots differ after catching up");
  }
}
BENCHMARK(BM_NetCatchUp)
    ->Arg(kCatchUpBlockRecords)
    ->Iterations(kCatchUpIterations)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- lag at a steady write rate ----

void BM_NetLag(benchmark::State& state) {
  constexpr uint64_t kWrites = kLagWritesPerSecond * kLagSeconds;
  const auto period = std::chrono::nanoseconds(1'000'000'000 / kLagWritesPerSecond);
  for (auto _ : state) {
    Pair pair;
    const std::string error = pair.OpenAndConnect();
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    // Nanoseconds since `start`: when Put returned on A, when B saw the change.
    std::vector<int64_t> put_ns(kWrites, 0);
    std::vector<std::atomic<int64_t>> seen_ns(kWrites);
    std::atomic<uint64_t> seen{0};
    const auto start = SteadyClock::now();
    // Keys are the hex of the write's index, so the callback finds it.
    const Replica::SubscriptionId sub = pair.b.replica->Subscribe(kMap, [&](const ChangeEvent& e) {
      if (!e.remote || e.key.size() != kKeyBytes) return;
      const uint64_t i = std::strtoull(std::string(e.key).c_str(), nullptr, 16);
      if (i >= kWrites) return;
      seen_ns[i].store((SteadyClock::now() - start).count(), std::memory_order_relaxed);
      seen.fetch_add(1, std::memory_order_release);
    });
    Status failed = Status::Ok();
    for (uint64_t i = 0; i < kWrites; ++i) {
      const auto due = start + period * static_cast<int64_t>(i);
      if (SteadyClock::now() < due) std::this_thread::sleep_until(due);
      auto v = pair.a.replica->Put(kMap, Hex16(i), TheValues().At(i));
      put_ns[i] = (SteadyClock::now() - start).count();
      if (!v.ok()) {
        failed = v.status();
        break;
      }
    }
    const double write_seconds = static_cast<double>(put_ns[kWrites - 1]) / 1e9;
    const bool all_seen = failed.ok() && WaitFor(kApplyTimeout, milliseconds(1), [&] {
                            return seen.load(std::memory_order_acquire) >= kWrites;
                          });
    pair.b.replica->Unsubscribe(sub);
    if (!failed.ok()) {
      state.SkipWithError(failed.ToString().c_str());
      break;
    }
    if (!all_seen) {
      state.SkipWithError("B did not see every write within 60 s of the last");
      break;
    }
    std::vector<double> lag_ms(kWrites);
    for (uint64_t i = 0; i < kWrites; ++i) {
      const int64_t d = seen_ns[i].load(std::memory_order_relaxed) - put_ns[i];
      lag_ms[i] = static_cast<double>(std::max<int64_t>(d, 0)) / 1e6;
    }
    std::sort(lag_ms.begin(), lag_ms.end());
    const double p50 = Quantile(lag_ms, 0.50);
    const double p99 = Quantile(lag_ms, 0.99);
    const double achieved = static_cast<double>(kWrites) / write_seconds;
    state.counters["p50_ms"] = p50;
    state.counters["p99_ms"] = p99;
    state.counters["max_ms"] = lag_ms.back();
    state.counters["writes_per_s"] = achieved;
    char line[256];
    std::snprintf(line, sizeof(line),
                  "net lag writes_per_s=%llu p50_ms=%.2f p99_ms=%.2f max_ms=%.2f "
                  "(achieved %.0f writes/s over %.1f s)",
                  static_cast<unsigned long long>(kLagWritesPerSecond), p50, p99, lag_ms.back(),
                  achieved, write_seconds);
    AddReportLine(line);
    state.SetItemsProcessed(static_cast<int64_t>(kWrites));
  }
}
BENCHMARK(BM_NetLag)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- bootstrap of an empty node ----

uint64_t BootstrapKeys() {
  return bench::CountFromEnv("TIDEMAP_BENCH_BOOTSTRAP_KEYS", kBootstrapKeysDefault, 1,
                             kBootstrapKeysMax);
}

// Resets the process's peak RSS (Linux: "5" to /proc/self/clear_refs), so a
// later PeakRssMb covers only what follows. False when not supported.
bool ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

// The whole process's peak resident set in MiB: VmHWM (what ResetPeakRss
// resets), else getrusage's ru_maxrss (since the process started).
double PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

void BM_NetBootstrap(benchmark::State& state) {
  const uint64_t keys = BootstrapKeys();
  for (auto _ : state) {
    Pair pair;
    std::string error = pair.Open();
    if (error.empty()) {
      // A settled source: filled, then compacted, as a node that has held
      // its keys for a while (and no fill compaction races the bootstrap).
      const Status s = WriteRange(pair.a.replica.get(), 0, keys);
      if (!s.ok()) error = s.ToString();
    }
    if (error.empty()) {
      pair.a.replica->Compact();
      error = pair.StartA();
    }
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    const Digest128 root = pair.a.replica->MerkleRoot();
    const bool rss_reset = ResetPeakRss();
    const auto start = SteadyClock::now();
    error = pair.StartB();
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    if (!WaitFor(kBootstrapTimeout, milliseconds(5),
                 [&] { return pair.b.replica->MerkleRoot() == root; })) {
      state.SkipWithError("B did not reach A's Merkle root within 600 s");
      break;
    }
    const double ms = MsSince(start);
    state.SetIterationTime(ms / 1000.0);
    const double peak_mb = PeakRssMb();
    uint64_t bytes_in = 0;
    for (const net::PeerStatus& p : pair.b.node->Snapshot().peers) bytes_in += p.bytes_in;
    const double keys_per_s = static_cast<double>(keys) / (ms / 1000.0);
    state.counters["keys_per_s"] = keys_per_s;
    state.counters["peak_rss_mb"] = peak_mb;
    state.counters["wire_mb_to_b"] = static_cast<double>(bytes_in) / (1 << 20);
    char line[256];
    std::snprintf(line, sizeof(line),
                  "net bootstrap keys=%llu keys_per_s=%.0f ms=%.0f peak_rss_mb=%.0f "
                  "(peak RSS of the whole process, %s; %.1f MiB on the wire to B)",
                  static_cast<unsigned long long>(keys), keys_per_s, ms, peak_mb,
                  rss_reset ? "since the bootstrap started" : "since the process started",
                  static_cast<double>(bytes_in) / (1 << 20));
    AddReportLine(line);
    state.SetItemsProcessed(static_cast<int64_t>(keys));
  }
}
BENCHMARK(BM_NetBootstrap)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---- handshake ----

struct KeyPair {
  crypto::PublicKey public_key{};
  std::string secret_key;
};

// One in-memory handshake between `i` and `r`; false if it did not complete.
bool HandshakeInMemory(const KeyPair& i, const KeyPair& r, const net::TrustList& i_trust,
                       const net::TrustList& r_trust) {
  net::Handshake initiator(net::Handshake::Role::kInitiator,
                           net::HandshakeConfig{i.secret_key, i.public_key, &i_trust});
  net::Handshake responder(net::Handshake::Role::kResponder,
                           net::HandshakeConfig{r.secret_key, r.public_key, &r_trust});
  std::string to_r, to_i;
  if (!initiator.Start(&to_r).ok() || !responder.Start(&to_i).ok()) return false;
  for (int round = 0; round < 8 && !(initiator.done() && responder.done()); ++round) {
    size_t consumed = 0;
    std::string out;
    if (!responder.Feed(to_r, &out, &consumed).ok()) return false;
    to_r.erase(0, consumed);
    to_i += out;
    out.clear();
    if (!initiator.Feed(to_i, &out, &consumed).ok()) return false;
    to_i.erase(0, consumed);
    to_r += out;
  }
  if (!initiator.done() || !responder.done()) return false;
  auto ci = initiator.TakeChannel(size_t{1} << 20);
  auto cr = responder.TakeChannel(size_t{1} << 20);
  return ci.ok() && cr.ok();
}

// A blocking TCP socket on 127.0.0.1, closed on destruction.
class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

void NoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Runs `hs` to done() over the connected socket `fd`. The socket has a
// receive timeout, so a stuck peer ends this with false.
bool HandshakeOverSocket(int fd, net::Handshake* hs) {
  std::string out, pending;
  if (!hs->Start(&out).ok() || !SendAll(fd, out)) return false;
  char buf[4096];
  while (!hs->done()) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    pending.append(buf, static_cast<size_t>(n));
    out.clear();
    size_t consumed = 0;
    const Status s = hs->Feed(pending, &out, &consumed);
    pending.erase(0, consumed);
    if (!out.empty() && !SendAll(fd, out)) return false;
    if (!s.ok()) return false;
  }
  return true;
}

// One connect + handshake over TCP on loopback between plain blocking
// sockets, the responder on its own thread (as two processes would be):
// the transport and the crypto without a Node around them. Returns the
// milliseconds from connect() until the initiator is done, or a negative
// value on failure.
double HandshakeOverLoopback(int listen_fd, uint16_t port, const KeyPair& i, const KeyPair& r,
                             const net::TrustList& i_trust, const net::TrustList& r_trust) {
  std::atomic<bool> responder_ok{false};
  std::thread responder([&] {
    Socket conn(accept(listen_fd, nullptr, nullptr));
    if (conn.fd() < 0) return;
    NoDelay(conn.fd());
    const timeval tv{5, 0};
    setsockopt(conn.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    net::Handshake hs(net::Handshake::Role::kResponder,
                      net::HandshakeConfig{r.secret_key, r.public_key, &r_trust});
    responder_ok.store(HandshakeOverSocket(conn.fd(), &hs));
  });
  double ms = -1;
  {
    Socket client(socket(AF_INET, SOCK_STREAM, 0));
    const timeval tv{5, 0};
    setsockopt(client.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    net::Handshake hs(net::Handshake::Role::kInitiator,
                      net::HandshakeConfig{i.secret_key, i.public_key, &i_trust});
    const sockaddr_in addr = Loopback(port);
    const auto t0 = SteadyClock::now();
    if (client.fd() >= 0 &&
        connect(client.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
      NoDelay(client.fd());
      if (HandshakeOverSocket(client.fd(), &hs)) ms = MsSince(t0);
    }
  }  // the client closes here, so a responder still waiting gets EOF
  responder.join();
  return responder_ok.load() ? ms : -1;
}

void BM_NetHandshake(benchmark::State& state) {
  for (auto _ : state) {
    // In memory: fresh ephemeral keys every time, as on a real connection.
    KeyPair i, r;
    if (!crypto::GenerateSigningKeyPair(&i.public_key, &i.secret_key).ok() ||
        !crypto::GenerateSigningKeyPair(&r.public_key, &r.secret_key).ok()) {
      state.SkipWithError("cannot generate signing keys");
      break;
    }
    net::TrustList i_trust, r_trust;
    i_trust.Add(r.public_key);
    r_trust.Add(i.public_key);
    std::vector<double> in_memory_ms;
    for (int k = 0; k < kHandshakesInMemory; ++k) {
      const auto t0 = SteadyClock::now();
      if (!HandshakeInMemory(i, r, i_trust, r_trust)) break;
      in_memory_ms.push_back(MsSince(t0));
    }
    if (in_memory_ms.size() != kHandshakesInMemory) {
      state.SkipWithError("an in-memory handshake failed");
      break;
    }

    // Plain sockets on loopback.
    Socket listener(socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in addr = Loopback(0);
    socklen_t addr_len = sizeof(addr);
    if (listener.fd() < 0 ||
        bind(listener.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listener.fd(), 16) != 0 ||
        getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) {
      state.SkipWithError("cannot listen on 127.0.0.1");
      break;
    }
    std::vector<double> socket_ms;
    for (int k = 0; k < kHandshakesOverSockets; ++k) {
      const double ms =
          HandshakeOverLoopback(listener.fd(), ntohs(addr.sin_port), i, r, i_trust, r_trust);
      if (ms < 0) break;
      socket_ms.push_back(ms);
    }
    if (socket_ms.size() != kHandshakesOverSockets) {
      state.SkipWithError("a handshake over loopback sockets failed");
      break;
    }

    // Nodes on loopback: B's node starts, dials A, handshakes; then stops, and A must
    // see it gone before the next round.
    Pair pair;
    std::string error = pair.Open();
    if (error.empty()) error = pair.StartA();
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    std::vector<double> connect_ms;
    for (int k = 0; k < kLoopbackConnects && error.empty(); ++k) {
      const auto t0 = SteadyClock::now();
      error = pair.StartB();
      if (!error.empty()) break;
      if (!WaitFor(kConnectTimeout, microseconds(100), [&] { return pair.BothConnected(); })) {
        error = "the nodes did not connect within 10 s";
        break;
      }
      connect_ms.push_back(MsSince(t0));
      pair.b.node.reset();  // Stop: final frames, join
      if (!WaitFor(kDisconnectTimeout, milliseconds(1),
                   [&] { return !pair.a.SeesConnected(pair.b); })) {
        error = "A still saw B connected 10 s after B stopped";
      }
    }
    if (!error.empty()) {
      state.SkipWithError(error.c_str());
      break;
    }
    std::sort(in_memory_ms.begin(), in_memory_ms.end());
    std::sort(socket_ms.begin(), socket_ms.end());
    std::sort(connect_ms.begin(), connect_ms.end());
    const double in_memory_p50 = Quantile(in_memory_ms, 0.5);
    const double socket_p50 = Quantile(socket_ms, 0.5);
    const double connect_p50 = Quantile(connect_ms, 0.5);
    state.counters["in_memory_ms"] = in_memory_p50;
    state.counters["loopback_sockets_p50_ms"] = socket_p50;
    state.counters["loopback_connect_p50_ms"] = connect_p50;
    state.counters["loopback_connect_max_ms"] = connect_ms.back();
    char line[512];
    std::snprintf(line, sizeof(line),
                  "net handshake in_memory_ms=%.3f loopback_connect_p50_ms=%.2f "
                  "loopback_sockets_p50_ms=%.2f (medians of %d, %d and %d: in memory; "
                  "from B's Node::Start until both nodes report the other connected, max "
                  "%.2f ms; connect+handshake between plain blocking sockets)",
                  in_memory_p50, connect_p50, socket_p50, kHandshakesInMemory, kLoopbackConnects,
                  kHandshakesOverSockets, connect_ms.back());
    AddReportLine(line);
  }
}
BENCHMARK(BM_NetHandshake)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tidemap
