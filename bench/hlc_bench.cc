// HLC micro benchmarks: the cost of stamping a local write (Now), of merging a
// remote timestamp (Update), and of the printable form used in every HTTP
// response and log line. BM_HlcBaselineSystemClock is the raw limit beneath
// Now(): reading the wall clock alone.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/hlc/hlc.h>

namespace tidemap {
namespace {

void BM_HlcBaselineSystemClock(benchmark::State& state) {
  SystemClock clock;
  for (auto _ : state) benchmark::DoNotOptimize(clock.NowMillis());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcBaselineSystemClock);

void BM_HlcNow(benchmark::State& state) {
  SystemClock clock;
  Hlc hlc(&clock, HlcOptions{});
  for (auto _ : state) benchmark::DoNotOptimize(hlc.Now());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcNow);

// Several writer threads stamping through one clock: the mutex under contention.
void BM_HlcNowContended(benchmark::State& state) {
  static SystemClock clock;
  static Hlc hlc(&clock, HlcOptions{});
  for (auto _ : state) benchmark::DoNotOptimize(hlc.Now());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcNowContended)->Threads(2)->UseRealTime();

// Remote timestamps within the last second, as a peer streaming its recent
// writes would send them, half of them ahead of what we have merged so far.
void BM_HlcUpdate(benchmark::State& state) {
  SystemClock clock;
  Hlc hlc(&clock, HlcOptions{});
  constexpr size_t kRemotes = 4096;
  std::vector<Timestamp> remotes;
  const uint64_t base_ms = clock.NowMillis() - 1'000;
  for (size_t i = 0; i < kRemotes; ++i) {
    const uint64_t step = static_cast<uint64_t>(i);
    remotes.push_back(Timestamp::FromParts(base_ms + (step * 7919) % 1'000, step));
  }
  size_t i = 0;
  for (auto _ : state) {
    const Status s = hlc.Update(remotes[i], "bench-peer");
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    i = (i + 1) % kRemotes;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcUpdate);

void BM_HlcTimestampToString(benchmark::State& state) {
  Timestamp t = Timestamp::FromParts(1'795'313'720'123, 7);
  for (auto _ : state) {
    benchmark::DoNotOptimize(t.ToString());
    t.raw += 65'537;  // a new millisecond and logical each time
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcTimestampToString);

void BM_HlcTimestampParse(benchmark::State& state) {
  const std::string text = Timestamp::FromParts(1'795'313'720'123, 7).ToString();
  for (auto _ : state) {
    Result<Timestamp> r = Timestamp::Parse(text);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcTimestampParse);

}  // namespace
}  // namespace tidemap
