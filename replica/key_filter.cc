#include <tidemap/replica/key_filter_internal.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/base/thread_name.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// A build starts once a process has written this many ops, and at least one
// per kStoredKeysPerWrite keys stored.
constexpr uint64_t kWritesMin = 64;
constexpr uint64_t kStoredKeysPerWrite = 64;
// A build's smallest capacity, in keys.
constexpr uint64_t kCapacityMinKeys = uint64_t{1} << 20;
// The builder checks for cancellation once per this many rows.
constexpr uint64_t kCancelCheckRows = 4096;

}  // namespace

void KeyFilter::Reset(uint64_t capacity_keys) {
  uint64_t blocks = 1;
  int block_shift = 64;  // 64 - log2(blocks)
  while (blocks * kBlockBits < capacity_keys * kBitsPerKey) blocks <<= 1, --block_shift;
  blocks_.assign(blocks, Block{});
  block_shift_ = block_shift;
  capacity_ = capacity_keys;
  added_ = 0;
}

KeyFilterKeeper::~KeyFilterKeeper() { StopBuilder(); }

void KeyFilterKeeper::StopBuilder() {
  if (!thread_.joinable()) return;
  cancel_ = true;
  thread_.join();
  cancel_ = false;
}

void KeyFilterKeeper::Maintain(const Store& store, uint64_t stored_keys,
                               uint64_t writes_since_open) {
  if (building_) {
    InstallBuilt();
    if (building_) return;  // still scanning
  }
  // Built only once this process has written a little, and in proportion to
  // what is stored: the scan reads the whole key-hash index, which a node
  // that reopens and merges a few hundred records from a peer (a short diff)
  // would pay for while the diff's own reads wait for a core.
  const uint64_t writes_first = std::max<uint64_t>(kWritesMin, stored_keys / kStoredKeysPerWrite);
  if (failed_ || writes_since_open < writes_first || (filter_.ready() && !filter_.full())) {
    return;
  }
  StartBuild(store, std::max<uint64_t>(kCapacityMinKeys, 2 * stored_keys));
}

void KeyFilterKeeper::Reset() {
  StopBuilder();
  {
    MutexLock l(&built_mu_);
    built_.reset();
    done_ = false;
  }
  building_ = false;
  failed_ = false;
  filter_ = KeyFilter();
  pending_.clear();
}

void KeyFilterKeeper::InstallBuilt() {
  std::optional<KeyFilter> built;
  {
    MutexLock l(&built_mu_);
    if (!done_) return;
    built = std::move(built_);
    built_.reset();
    done_ = false;
  }
  thread_.join();
  building_ = false;
  if (built.has_value()) {
    for (uint64_t key_hash : pending_) built->Add(key_hash);
    filter_ = std::move(*built);
  } else {
    failed_ = true;  // the scan failed: keep reading before writing
    filter_ = KeyFilter();
  }
  pending_.clear();
  pending_.shrink_to_fit();
}

void KeyFilterKeeper::StartBuild(const Store& store, uint64_t capacity_keys) {
  // The iterator is taken here, between commits: it sees exactly the keys
  // committed so far, and every later one goes through Add().
  std::shared_ptr<StoreIterator> it = store.NewIterator();
  building_ = true;
  thread_ = std::thread([this, it, capacity_keys] {
    NameThisThread("tidemap-filter");
    KeyFilter filter;
    filter.Reset(capacity_keys);
    bool ok = true;
    uint64_t rows = 0;
    PrefixIterator index(it.get(), std::string(1, rows::kHashIndexPrefix));
    for (index.SeekToFirst(); index.Valid(); index.Next()) {
      const std::string_view k = index.key();
      if (k.size() < 9 ||
          (++rows % kCancelCheckRows == 0 && cancel_.load(std::memory_order_relaxed))) {
        ok = false;  // a malformed row, or the replica is closing
        break;
      }
      filter.Add(DecodeFixed64BE(k.data() + 1));
    }
    ok = ok && index.status().ok();
    MutexLock l(&built_mu_);
    if (ok) built_ = std::move(filter);
    done_ = true;
  });
}

}  // namespace tidemap
