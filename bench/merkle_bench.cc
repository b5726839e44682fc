// Merkle micro benchmarks: the per-write cost of keeping the tree (KeyHash +
// ItemDigest x2 + Apply), each part alone, and raw XXH3-128 over 100 bytes as
// the hashing limit underneath. Items are precomputed so that Apply is measured
// without the hashing, over random buckets (the cache behaviour of real writes).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/base/random.h>
#include <tidemap/merkle/merkle.h>

namespace tidemap {
namespace {

constexpr size_t kWorkingSet = 1 << 16;  // distinct precomputed inputs, a power of two

// Realistic metadata: a short map name and keys of ~24 bytes.
std::vector<std::string> MakeKeys() {
  SeededRandom rng(1);
  std::vector<std::string> keys;
  keys.reserve(kWorkingSet);
  for (size_t i = 0; i < kWorkingSet; ++i) {
    keys.push_back("user:" + std::to_string(rng.Next64()));
  }
  return keys;
}

void BM_Hash128_100B(benchmark::State& state) {
  const std::string data(100, 'x');
  for (auto _ : state) {
    benchmark::DoNotOptimize(Hash128(data));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(data.size()));
}
BENCHMARK(BM_Hash128_100B);

void BM_ItemDigest(benchmark::State& state) {
  const std::vector<std::string> keys = MakeKeys();
  Version v{Timestamp::FromParts(1'700'000'000'000, 0), 0x0123'4567'89ab'cdef};
  size_t i = 0;
  for (auto _ : state) {
    v.hlc.raw++;
    benchmark::DoNotOptimize(ItemDigest("users", keys[i++ & (kWorkingSet - 1)], v, false));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ItemDigest);

void BM_KeyHash(benchmark::State& state) {
  const std::vector<std::string> keys = MakeKeys();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(KeyHash("users", keys[i++ & (kWorkingSet - 1)]));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeyHash);

// Apply alone on the default shape (65,536 buckets, ~1.1 MB), random buckets.
void BM_MerkleApply(benchmark::State& state) {
  SeededRandom rng(2);
  MerkleTree tree;
  std::vector<uint32_t> buckets(kWorkingSet);
  std::vector<Digest128> deltas(kWorkingSet);
  for (size_t i = 0; i < kWorkingSet; ++i) {
    buckets[i] = tree.BucketOf(rng.Next64());
    deltas[i] = Digest128{rng.Next64(), rng.Next64()};
  }
  size_t i = 0;
  for (auto _ : state) {
    const size_t j = i++ & (kWorkingSet - 1);
    tree.Apply(buckets[j], deltas[j]);
  }
  benchmark::DoNotOptimize(tree.Leaf(0));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MerkleApply);

// What the replica pays per overwrite: bucket, old and new item digests, Apply.
void BM_MerkleUpdateKey(benchmark::State& state) {
  const std::vector<std::string> keys = MakeKeys();
  MerkleTree tree;
  Version v{Timestamp::FromParts(1'700'000'000'000, 0), 0x0123'4567'89ab'cdef};
  size_t i = 0;
  for (auto _ : state) {
    const std::string& key = keys[i++ & (kWorkingSet - 1)];
    const Version old_version = v;
    v.hlc.raw++;
    tree.Apply(tree.BucketOf(KeyHash("users", key)),
               ItemDigest("users", key, old_version, false) ^ ItemDigest("users", key, v, false));
  }
  benchmark::DoNotOptimize(tree.Leaf(0));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MerkleUpdateKey);

// The open-time cost after loading persisted leaves.
void BM_MerkleRecomputeInner(benchmark::State& state) {
  MerkleTree tree;
  for (auto _ : state) {
    tree.RecomputeInner();
    benchmark::DoNotOptimize(tree.Root());
  }
  state.SetItemsProcessed(state.iterations() * tree.leaf_count());
}
BENCHMARK(BM_MerkleRecomputeInner)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tidemap
