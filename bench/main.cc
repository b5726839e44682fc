// The benchmark driver: runs every registered benchmark (console output as
// usual, JSON when --benchmark_out is given), then prints the ratio lines that
// compare our components with the raw limits of the parts beneath them. Each
// ratio uses numbers measured in this one run, never across runs.
#include <benchmark/benchmark.h>

#include "bench/report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// A ratio line: items_per_second of `numerator` over that of `denominator`.
// Benchmarks are named as Google Benchmark names them, without the parts that
// only say how they were measured (see RatioName): "BM_Put/relaxed",
// "BM_PutSync/threads:8".
struct RatioSpec {
  const char* name;
  const char* numerator;
  const char* denominator;
};

constexpr RatioSpec kRatios[] = {
    {"local_put_vs_raw_leveldb", "BM_ReplicaPut/relaxed", "BM_RawLevelDbPut/unbatched"},
    {"batch_put_vs_raw_leveldb", "BM_ReplicaBatchPut1000", "BM_RawLevelDbPut/batched_1000"},
    // The same against a raw writer that sorts each batch's rows by key, as
    // the replica does its commits: the fairer anchor for a batch.
    {"batch_put_vs_raw_leveldb_in_key_order", "BM_ReplicaBatchPut1000",
     "BM_RawLevelDbPut/batched_1000_in_key_order"},
    {"sync_8_writers_vs_1", "BM_ReplicaPutSync/threads:8", "BM_ReplicaPutSync/threads:1"},
    {"get_vs_raw_leveldb", "BM_ReplicaGet", "BM_RawLevelDbGet"},
    // A put with a TTL (an expiry in the record and index rows, an expiry
    // queue row) against the same put without.
    {"ttl_put_vs_put", "BM_ReplicaPut/relaxed_ttl", "BM_ReplicaPut/relaxed"},
    // A put on a replica with a storage quota far above its usage (the
    // accounting: one atomic add and a compare per commit) against the same put.
    {"quota_put_vs_put", "BM_ReplicaPut/relaxed_quota", "BM_ReplicaPut/relaxed"},
    // Encryption at rest: a put and a get whose value is sealed (AEAD) against
    // the same in the clear.
    {"encrypted_put_vs_put", "BM_ReplicaPut/relaxed_encrypted", "BM_ReplicaPut/relaxed"},
    {"encrypted_get_vs_get", "BM_ReplicaGetEncrypted", "BM_ReplicaGet"},
    // The share of a local put's time that the in-memory tree update takes
    // (bucket, two item digests, Apply): puts/s over updates/s. The tree's
    // rows (the key-hash index row, leaf checkpoints) are inside the put.
    {"merkle_update_share_of_local_put", "BM_ReplicaPut/relaxed", "BM_MerkleUpdateKey"},
    // Records applied on the receiving node (bench/net_bench.cc) against the
    // raw LevelDB rate of the record+oplog rows a writer must put anyway.
    {"replication_vs_raw_leveldb", "BM_NetReplication", "BM_RawLevelDbPut/batched_1000"},
    // Where replication's time goes: the receiver's merge alone, in process
    // (bench/replica_bench.cc), and a node catching up after downtime.
    {"apply_remote_vs_raw_leveldb", "BM_ReplicaApplyRemote1000", "BM_RawLevelDbPut/batched_1000"},
    {"catch_up_vs_raw_leveldb", "BM_NetCatchUp", "BM_RawLevelDbPut/batched_1000"},
    // The served batch path (bench/http_bench.cc) against the same batches in process.
    {"http_batch_put_vs_in_process_batch", "BM_HttpBatchPut1000", "BM_ReplicaBatchPut1000"},
};

// A run's name without the fields Google Benchmark adds for settings
// (iterations:N, min_time:S, repeats:N, real_time), which sit between the
// function name and threads:N: "BM_Put/iterations:9/real_time/threads:8"
// becomes "BM_Put/threads:8".
std::string RatioName(const benchmark::BenchmarkReporter::Run& run) {
  benchmark::BenchmarkName name = run.run_name;
  name.min_time.clear();
  name.min_warmup_time.clear();
  name.iterations.clear();
  name.repetitions.clear();
  name.time_type.clear();
  return name.str();
}

// Forwards to the usual display reporter and remembers items/s per run name:
// the median when the benchmark ran repeatedly, else the (last) run's own rate.
class CapturingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool single = run.run_type == Run::RT_Iteration;
      if (!single && run.aggregate_name != "median") continue;
      for (const auto& [counter, value] : run.counters) {
        (single ? single_ : median_)[{RatioName(run), counter}] = value.value;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // The items/s to use for `name` (or its `counter`: the median over the
  // repetitions), or nullptr when no such benchmark ran. `name` matches a run
  // name exactly or as a prefix followed by '/'.
  const double* Find(const std::string& name,
                     const std::string& counter = "items_per_second") const {
    if (const double* value = FindIn(median_, name, counter)) return value;
    return FindIn(single_, name, counter);
  }

 private:
  // (run name, counter) to the counter's value.
  using Values = std::map<std::pair<std::string, std::string>, double>;

  static const double* FindIn(const Values& values, const std::string& name,
                              const std::string& counter) {
    for (const auto& [key, value] : values) {
      const auto& [run_name, run_counter] = key;
      if (run_counter != counter) continue;
      if (run_name == name || run_name.rfind(name + "/", 0) == 0) return &value;
    }
    return nullptr;
  }

  Values single_;
  Values median_;
};

// Where replication's CPU time went per record applied (medians of
// BM_NetReplication's counters, see bench/net_bench.cc), against a raw
// batched row's, and the most that replication_vs_raw_leveldb could be on
// this many cores with that CPU per record, were every core busy all along.
void PrintReplicationCpu(const CapturingReporter& reporter) {
  const std::string run = "BM_NetReplication";
  const double* cpu = reporter.Find(run, "cpu_us");
  const double* writer = reporter.Find(run, "writer_us");
  const double* net = reporter.Find(run, "net_us");
  const double* compaction = reporter.Find(run, "compaction_us");
  const double* other = reporter.Find(run, "other_us");
  const double* busy = reporter.Find(run, "cores_busy");
  const double* raw_rate = reporter.Find("BM_RawLevelDbPut/batched_1000");
  const double* raw_cpu = reporter.Find("BM_RawLevelDbPut/batched_1000", "cpu_us");
  if (cpu == nullptr || writer == nullptr || net == nullptr || compaction == nullptr ||
      other == nullptr || busy == nullptr || *cpu <= 0) {
    return;
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf(
      "replication cpu_us_per_record = %.2f  (A's writer %.2f, event loops %.2f, "
      "compaction %.2f, other %.2f; cores busy %.2f of %u)\n",
      *cpu, *writer, *net, *compaction, *other, *busy, cores);
  if (raw_rate == nullptr || raw_cpu == nullptr || *raw_rate <= 0) return;
  const double raw_wall_us = 1e6 / *raw_rate;
  std::printf(
      "replication cpu bound = %.2f  (%u cores x %.2f us per raw batched row / %.2f us of CPU "
      "per record; a raw batched row takes %.2f us of CPU)\n",
      cores * raw_wall_us / *cpu, cores, raw_wall_us, *cpu, *raw_cpu);
  // The same bound if the network, crypto and streaming cost nothing: the
  // sender's batch write plus the receiver's merge, each measured in process
  // (bench/replica_bench.cc) with its database's compaction.
  const double* write_cpu = reporter.Find("BM_ReplicaBatchPut1000", "cpu_us");
  const double* merge_cpu = reporter.Find("BM_ReplicaApplyRemote1000", "cpu_us");
  if (write_cpu == nullptr || merge_cpu == nullptr || *write_cpu + *merge_cpu <= 0) return;
  std::printf(
      "replication cpu bound without the network = %.2f  (%u cores x %.2f us / (%.2f us to "
      "write a record + %.2f us to merge it))\n",
      cores * raw_wall_us / (*write_cpu + *merge_cpu), cores, raw_wall_us, *write_cpu, *merge_cpu);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\n");
  for (const RatioSpec& spec : kRatios) {
    const double* num = reporter.Find(spec.numerator);
    const double* den = reporter.Find(spec.denominator);
    if (num == nullptr || den == nullptr || *den <= 0) continue;  // filtered out of this run
    std::printf("ratio %s = %.2f  (%s %.0f/s vs %s %.0f/s)\n", spec.name, *num / *den,
                spec.numerator, *num, spec.denominator, *den);
  }
  PrintReplicationCpu(reporter);
  for (const std::string& line : tidemap::ReportLines()) std::printf("%s\n", line.c_str());
  return 0;
}
