// CPU time of this process and of its threads, for benchmarks that say where
// a run's time went and whether the machine's cores were the limit.
#ifndef TIDEMAP_BENCH_CPU_H_
#define TIDEMAP_BENCH_CPU_H_

#include <time.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>

namespace tidemap::bench {

// The seconds `clock` reads.
inline double ClockSeconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU seconds (user + system) used so far by every thread of the process,
// those that have ended included.
inline double ProcessCpuSeconds() { return ClockSeconds(CLOCK_PROCESS_CPUTIME_ID); }

// CPU seconds (user + system) used so far by the calling thread.
inline double ThisThreadCpuSeconds() { return ClockSeconds(CLOCK_THREAD_CPUTIME_ID); }

// `seconds` per item, in microseconds (per one item when there were none).
inline double MicrosPerItem(double seconds, int64_t items) {
  return seconds * 1e6 / static_cast<double>(std::max<int64_t>(items, 1));
}

// Sets `state`'s counter `cpu_us`: the process's CPU time since
// `cpu_before` (a ProcessCpuSeconds()), background threads such as LevelDB's
// compaction included, per item, in microseconds.
inline void SetCpuPerItem(benchmark::State& state, double cpu_before, int64_t items) {
  state.counters["cpu_us"] = MicrosPerItem(ProcessCpuSeconds() - cpu_before, items);
}

// The name the process's first thread is listed under by ThreadCpuSeconds.
inline constexpr const char* kMainThread = "(main)";

// CPU seconds (user + system) of the live threads of the process, summed by
// thread name (see base/thread_name.h); the process's first thread, which
// runs the benchmarks, is listed as kMainThread. The kernel counts in clock
// ticks (10 ms at the usual 100 Hz), so sum over runs of a second or more.
inline std::map<std::string, double> ThreadCpuSeconds() {
  std::map<std::string, double> by_name;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const std::string self = std::to_string(getpid());
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream in(task.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;  // the thread has just ended
    // "tid (name) state ppid ...": the name may hold spaces and parentheses,
    // so it ends at the last ')'. utime and stime are fields 14 and 15.
    const size_t open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    for (int i = 3; i <= 13 && rest >> field; ++i) {
    }
    double utime = 0, stime = 0;
    if (!(rest >> utime >> stime)) continue;
    const bool main = task.path().filename() == self;
    const std::string name = main ? kMainThread : line.substr(open + 1, close - open - 1);
    by_name[name] += (utime + stime) / tick;
  }
  return by_name;
}

}  // namespace tidemap::bench

#endif  // TIDEMAP_BENCH_CPU_H_
