// The benchmark driver: runs every registered benchmark (console output as
// usual, JSON when --benchmark_out is given), then prints the ratio lines that
// compare our components with the raw limits of the parts beneath them. Each
// ratio uses numbers measured in this one run, never across runs.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

// A ratio line: items_per_second of `numerator` over that of `denominator`.
// Benchmarks are matched by their full run name (e.g. "BM_Put/relaxed").
struct RatioSpec {
  const char* name;
  const char* numerator;
  const char* denominator;
};

constexpr RatioSpec kRatios[] = {
    {"local_put_vs_raw_leveldb", "BM_ReplicaPut/relaxed", "BM_RawLevelDbPut/unbatched"},
    {"batch_put_vs_raw_leveldb", "BM_ReplicaBatchPut1000", "BM_RawLevelDbPut/batched_1000"},
    {"sync_8_writers_vs_1", "BM_ReplicaPutSync/threads:8", "BM_ReplicaPutSync/threads:1"},
};

// Forwards to the usual display reporter and remembers items/s per run name.
class CapturingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      auto it = run.counters.find("items_per_second");
      if (it != run.counters.end()) items_per_second_[run.benchmark_name()] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  const std::map<std::string, double>& items_per_second() const { return items_per_second_; }

 private:
  std::map<std::string, double> items_per_second_;
};

// Google Benchmark appends "/real_time" and similar suffixes; match on prefix.
const double* Find(const std::map<std::string, double>& rates, const std::string& name) {
  for (const auto& [run_name, rate] : rates) {
    if (run_name == name || run_name.rfind(name + "/", 0) == 0) return &rate;
  }
  return nullptr;
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
    const double* num = Find(reporter.items_per_second(), spec.numerator);
    const double* den = Find(reporter.items_per_second(), spec.denominator);
    if (num == nullptr || den == nullptr || *den <= 0) continue;  // filtered out of this run
    std::printf("ratio %s = %.2f  (%s %.0f/s vs %s %.0f/s)\n", spec.name, *num / *den,
                spec.numerator, *num, spec.denominator, *den);
  }
  return 0;
}
