// The key filter: which keys are certainly not stored, so a write to a new key
// skips the read-before-write.
//
// KeyFilter is a blocked Bloom filter over key hashes. KeyFilterKeeper owns
// the filter the write path consults and a background thread that (re)builds
// it from a scan of the key-hash index, so no write waits for that scan.
//
// Contract: the filter never says "absent" for a stored key (no false
// negatives); a false positive only costs the read. A key stored after the
// builder's iterator was taken reaches the new filter through Add().
//
// Thread-safety: KeyFilter is a plain value. KeyFilterKeeper is driven by one
// thread at a time (the commit pipeline's leader, under the replica's
// commit_mu); only the hand-over from its builder thread is locked inside.
// Lifetimes: the Store given to Maintain must outlive the keeper (the
// destructor stops a running build).
#ifndef TIDEMAP_REPLICA_KEY_FILTER_INTERNAL_H_
#define TIDEMAP_REPLICA_KEY_FILTER_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// Blocked: every probe of a key falls in one 64-byte block (chosen by the
// hash's top bits), so a lookup or an insert touches one cache line, not
// seven scattered over megabytes. 10 bits and 7 probes per key: about 1%
// false positives at capacity.
class KeyFilter {
 public:
  static constexpr uint64_t kBitsPerKey = 10;
  static constexpr int kProbes = 7;
  static constexpr uint64_t kBlockBits = 512;

  // Empties the filter and sizes it for `capacity_keys`.
  void Reset(uint64_t capacity_keys);
  bool ready() const { return !blocks_.empty(); }
  // More keys added than it was sized for: false positives grow.
  bool full() const { return added_ > capacity_; }
  uint64_t capacity() const { return capacity_; }

  // REQUIRES: ready().
  void Add(uint64_t key_hash) {
    ++added_;
    uint64_t* words = BlockOf(key_hash).words;
    uint64_t h = key_hash;
    const uint64_t delta = (key_hash >> 21) | 1;  // double hashing within the block
    for (int i = 0; i < kProbes; ++i, h += delta) words[(h & 511) >> 6] |= Bit(h);
  }
  // REQUIRES: ready().
  bool MayContain(uint64_t key_hash) const {
    const uint64_t* words = BlockOf(key_hash).words;
    uint64_t h = key_hash;
    const uint64_t delta = (key_hash >> 21) | 1;
    for (int i = 0; i < kProbes; ++i, h += delta) {
      if ((words[(h & 511) >> 6] & Bit(h)) == 0) return false;
    }
    return true;
  }
  // Starts loading the key's block into the cache, for a MayContain soon
  // after: a batch's lookups then overlap their memory latency.
  void Prefetch(uint64_t key_hash) const {
    if (ready()) __builtin_prefetch(BlockOf(key_hash).words);
  }

 private:
  // One cache line (the vector allocates them aligned).
  struct alignas(64) Block {
    uint64_t words[kBlockBits / 64] = {};
  };
  static_assert(sizeof(Block) == 64);

  static uint64_t Bit(uint64_t h) { return uint64_t{1} << (h & 63); }
  // The index of the key's block, picked by the top bits.
  size_t BlockIndex(uint64_t key_hash) const {
    return block_shift_ == 64 ? 0 : static_cast<size_t>(key_hash >> block_shift_);
  }
  Block& BlockOf(uint64_t key_hash) { return blocks_[BlockIndex(key_hash)]; }
  const Block& BlockOf(uint64_t key_hash) const { return blocks_[BlockIndex(key_hash)]; }
  std::vector<Block> blocks_;
  int block_shift_ = 64;
  uint64_t capacity_ = 0;
  uint64_t added_ = 0;
};

class KeyFilterKeeper {
 public:
  KeyFilterKeeper() = default;
  ~KeyFilterKeeper();  // stops a running build
  KeyFilterKeeper(const KeyFilterKeeper&) = delete;
  KeyFilterKeeper& operator=(const KeyFilterKeeper&) = delete;

  // Called before each group: installs a filter the builder finished, and
  // starts a build from `store` when there is none or the current one is
  // full (sized for twice `stored_keys`), once `writes_since_open` ops were
  // processed (a one-shot CLI command never pays for the scan). Must run
  // between commits: the builder sees exactly the keys committed so far.
  void Maintain(const Store& store, uint64_t stored_keys, uint64_t writes_since_open);

  // Stops a build and drops the filter: until the next build, every write
  // reads first. For when the store may hold keys the filter never saw (it
  // was reopened after a storage error).
  void Reset();

  // False only when the key is certainly not stored.
  bool MayContain(uint64_t key_hash) const {
    return !filter_.ready() || filter_.MayContain(key_hash);
  }
  void Prefetch(uint64_t key_hash) const { filter_.Prefetch(key_hash); }
  // Notes a key about to be stored (in the filter, and for the build running).
  void Add(uint64_t key_hash) {
    if (filter_.ready()) filter_.Add(key_hash);
    if (building_) pending_.push_back(key_hash);
  }

 private:
  void InstallBuilt();
  void StartBuild(const Store& store, uint64_t capacity_keys);
  // Cancels and joins a running builder thread, if any.
  void StopBuilder();

  KeyFilter filter_;
  bool building_ = false;
  bool failed_ = false;  // a build failed: writes read first from now on
  // Keys added while the build runs: its iterator is blind to them.
  std::vector<uint64_t> pending_;
  std::thread thread_;
  std::atomic<bool> cancel_{false};
  Mutex built_mu_;  // hands the builder's result over
  std::optional<KeyFilter> built_ TIDEMAP_GUARDED_BY(built_mu_);
  bool done_ TIDEMAP_GUARDED_BY(built_mu_) = false;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_KEY_FILTER_INTERNAL_H_
