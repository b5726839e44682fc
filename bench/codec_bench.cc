// Sync codec micro benchmarks: a RecordBatch of 1,000 records encoded to a
// frame (EncodeMessage) and decoded from one (DecodeMessage), the codec's
// share of the CPU a replicated record costs. Two shapes: a catch-up (one
// map, one origin, 16-byte keys, 15-byte values, hlc rising by small steps)
// and a mix (three maps, three origins, 100-byte values, every fourth record
// with an expiry, some tombstones).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include <tidemap/base/check.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>

namespace tidemap {
namespace {

constexpr int kBatchRecords = 1000;

msg::Message MakeBatch(bool mixed) {
  msg::RecordBatch b;
  b.first_seq = 1;
  b.last_seq = kBatchRecords;
  for (int i = 0; i < kBatchRecords; ++i) {
    KeyedRecord r;
    r.map = mixed ? "map-" + std::to_string(i * 3 / kBatchRecords) : "m";
    r.key = "key-" + std::to_string(100'000'000'000 + i);
    r.tombstone = mixed && i % 10 == 9;
    if (!r.tombstone) r.value = std::string(mixed ? 100 : 15, static_cast<char>('a' + i % 26));
    r.version =
        Version{Timestamp{(uint64_t{1'700'000'000'000} << 16) + static_cast<uint64_t>(i) * 7},
                mixed ? static_cast<uint64_t>(1 + i % 3) : 1};
    r.expiry_ms =
        mixed && !r.tombstone && i % 4 == 0 ? 1'800'000'000'000 + static_cast<uint64_t>(i) : 0;
    b.records.push_back(std::move(r));
  }
  return msg::Message{1, std::move(b)};
}

void BM_CodecEncodeRecordBatch(benchmark::State& state) {
  const msg::Message m = MakeBatch(state.range(0) != 0);
  for (auto _ : state) {
    Result<std::string> bytes = EncodeMessage(m);
    TIDEMAP_CHECK(bytes.ok());
    benchmark::DoNotOptimize(bytes->data());
  }
  state.SetItemsProcessed(state.iterations() * kBatchRecords);
}
BENCHMARK(BM_CodecEncodeRecordBatch)->ArgName("mixed")->Arg(0)->Arg(1);

void BM_CodecDecodeRecordBatch(benchmark::State& state) {
  const Result<std::string> bytes = EncodeMessage(MakeBatch(state.range(0) != 0));
  TIDEMAP_CHECK(bytes.ok());
  for (auto _ : state) {
    Result<msg::Message> m = DecodeMessage(*bytes);
    TIDEMAP_CHECK(m.ok());
    benchmark::DoNotOptimize(&m);
  }
  state.SetItemsProcessed(state.iterations() * kBatchRecords);
}
BENCHMARK(BM_CodecDecodeRecordBatch)->ArgName("mixed")->Arg(0)->Arg(1);

}  // namespace
}  // namespace tidemap
