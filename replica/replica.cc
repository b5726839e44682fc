#include "replica/replica.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <thread>
#include <unordered_map>

#include "base/coding.h"
#include "base/crypto.h"
#include "base/hash.h"
#include "base/mutex.h"
#include "base/thread_name.h"
#include "merkle/merkle.h"
#include "replica/test_access_internal.h"
#include "storage/rows_internal.h"

namespace tidemap {

namespace {

constexpr size_t kScanLimitMax = 10'000;
// Tombstones one PurgeTombstones batch deletes at most.
constexpr size_t kPurgeBatchMax = 10'000;
// A group's buffers are kept for the next group unless its batch was larger.
constexpr size_t kGroupBuildKeptBytes = size_t{1} << 20;
// The group-commit wait tracks at most this many threads of the last group.
constexpr size_t kGroupThreadsTracked = 64;
// The key filter's scan starts once a process has written this many ops,
// and at least one per kKeyFilterStoredKeysPerWrite keys stored.
constexpr uint64_t kKeyFilterWritesMin = 64;
constexpr uint64_t kKeyFilterStoredKeysPerWrite = 64;
// How far ahead of the op it processes a commit hashes keys and prefetches
// their key filter blocks (see AppendWriter).
constexpr size_t kHashesAhead = 8;
// Oplog entries Open reads at a time while it replays the tail after the
// last checkpoint.
constexpr size_t kReplayEntriesPerRead = 4096;
// A group of at least this many ops goes into LevelDB in key order (see
// Batch::SortByKey); smaller ones, a single put's three rows for one, are
// left in the order they were built.
constexpr size_t kSortOpsMin = 16;

// The deterministic tie rule for equal (hlc, origin) with different bytes,
// which honest peers never produce: the greater digest of (tombstone, value) wins.
Digest128 ContentDigest(bool tombstone, std::string_view value) {
  return Hash128(value, tombstone ? 1 : 0);
}

bool DigestLess(const Digest128& a, const Digest128& b) {
  return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
}

// A Bloom filter over the key hashes of every stored key, so a write to a key
// that certainly does not exist skips the read-before-write. It never says
// "absent" for a stored key (no false negatives); a false positive just costs
// the read. Blocked: every probe of a key falls in one 64-byte block (chosen
// by the hash's top bits), so a lookup or an insert touches one cache line,
// not seven scattered over megabytes. 10 bits and 7 probes per key: about 1%
// false positives at capacity.
class KeyFilter {
 public:
  static constexpr uint64_t kBitsPerKey = 10;
  static constexpr int kProbes = 7;
  static constexpr uint64_t kBlockBits = 512;

  void Reset(uint64_t capacity_keys) {
    uint64_t blocks = 1;
    int block_shift = 64;  // 64 - log2(blocks)
    while (blocks * kBlockBits < capacity_keys * kBitsPerKey) blocks <<= 1, --block_shift;
    blocks_.assign(blocks, Block{});
    block_shift_ = block_shift;
    capacity_ = capacity_keys;
    added_ = 0;
  }
  bool ready() const { return !blocks_.empty(); }
  bool full() const { return added_ > capacity_; }
  uint64_t capacity() const { return capacity_; }

  void Add(uint64_t key_hash) {
    ++added_;
    uint64_t* words = BlockOf(key_hash).words;
    uint64_t h = key_hash;
    const uint64_t delta = (key_hash >> 21) | 1;  // double hashing within the block
    for (int i = 0; i < kProbes; ++i, h += delta) words[(h & 511) >> 6] |= Bit(h);
  }
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

// What the pipeline knows about a key while it processes a group.
struct KeyState {
  bool exists = false;
  rows::RecordMeta meta;
  // Digest of (tombstone, value); loaded only when a tie needs it.
  std::optional<Digest128> content;
};

// One op's (or a group's) change to one Merkle leaf and its counts.
struct LeafDelta {
  uint32_t bucket = 0;
  Digest128 digest;
  int32_t live = 0;
  int32_t tombstones = 0;
};

// Calls fn(key_hash, map, key, meta) for every key-hash index row with a key
// hash in [lo, hi], in key-hash order, reusing `it`.
template <typename Fn>
Status ForEachIndexRow(StoreIterator* it, uint64_t lo, uint64_t hi, Fn&& fn) {
  for (it->Seek(rows::HashIndexPrefix(lo)); it->Valid(); it->Next()) {
    uint64_t h = 0;
    std::string_view m, k;
    if (it->key().empty() || it->key()[0] != rows::kHashIndexPrefix) break;
    if (!rows::ParseHashIndexKey(it->key(), &h, &m, &k)) {
      return Status::Corruption("malformed key-hash index row");
    }
    if (h > hi) break;
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta, rows::DecodeHashIndexValue(it->value()));
    fn(h, m, k, meta);
  }
  return it->status();
}

// A tree-diff read (bucket summaries, records by key hash) is split across
// threads only when each gets at least this many buckets or hashes: below
// that, starting a thread costs more than the cold block reads it overlaps.
constexpr size_t kParallelReadSliceMin = 128;
// diff_read_threads 0 means the machine's hardware threads, at most this many.
constexpr uint32_t kDiffReadThreadsAuto = 4;

// Calls fn(slice, begin, end) for consecutive slices of [0, n): one slice on
// the calling thread when n is small or `threads` is 1, else up to `threads`
// slices (the caller runs the first), each at least kParallelReadSliceMin
// long. Returns the first failure in slice order. fn must only touch what its
// slice owns.
template <typename Fn>
Status ForEachReadSlice(size_t n, uint32_t threads, Fn&& fn) {
  TIDEMAP_CHECK(threads >= 1);
  const size_t slices = std::clamp<size_t>(n / kParallelReadSliceMin, 1, threads);
  std::vector<Status> results(slices);
  const auto run = [&](size_t slice) {
    results[slice] = fn(slice, n * slice / slices, n * (slice + 1) / slices);
  };
  std::vector<std::thread> helpers;
  helpers.reserve(slices - 1);
  for (size_t slice = 1; slice < slices; ++slice) helpers.emplace_back(run, slice);
  run(0);
  for (std::thread& t : helpers) t.join();
  for (Status& r : results) {
    if (!r.ok()) return std::move(r);
  }
  return Status::Ok();
}

// Loads every persisted Merkle page row (leaf digests and counts) into
// `tree`, `live` and `tombs` (each leaf_count() long, zero where no row
// exists), reusing `it`. Leaves the tree's inner nodes stale (RecomputeInner follows).
Status LoadLeafRows(StoreIterator* it, MerkleTree* tree, std::vector<uint32_t>* live,
                    std::vector<uint32_t>* tombs) {
  live->assign(tree->leaf_count(), 0);
  tombs->assign(tree->leaf_count(), 0);
  for (it->Seek(std::string(1, rows::kMerklePrefix));
       it->Valid() && !it->key().empty() && it->key()[0] == rows::kMerklePrefix; it->Next()) {
    uint32_t page = 0;
    if (!rows::ParseMerklePageKey(it->key(), &page) ||
        page >= rows::LeafPageCount(tree->leaf_count())) {
      return Status::Corruption("malformed Merkle page row key");
    }
    auto leaves = rows::DecodeLeafPage(it->value());
    if (!leaves.ok()) return leaves.status().WithContext("page " + std::to_string(page));
    const uint32_t first = page * rows::kLeavesPerPage;
    if (leaves->size() != rows::LeavesInPage(page, tree->leaf_count())) {
      return Status::Corruption("Merkle page row " + std::to_string(page) + " holds " +
                                std::to_string(leaves->size()) + " leaves");
    }
    for (uint32_t i = 0; i < leaves->size(); ++i) {
      const rows::LeafValue& leaf = (*leaves)[i];
      if (leaf.live > UINT32_MAX || leaf.tombstones > UINT32_MAX) {
        return Status::Corruption("Merkle page row " + std::to_string(page) +
                                  ": count out of range");
      }
      TIDEMAP_RETURN_IF_ERROR(tree->LoadLeaf(first + i, leaf.digest));
      (*live)[first + i] = static_cast<uint32_t>(leaf.live);
      (*tombs)[first + i] = static_cast<uint32_t>(leaf.tombstones);
    }
  }
  return it->status();
}

Status CheckSizes(const Limits& limits, std::string_view map, std::string_view key,
                  std::string_view value) {
  if (map.empty()) return Status::InvalidArgument("map name must not be empty");
  if (key.empty()) return Status::InvalidArgument("key must not be empty");
  if (map.size() > limits.map_name_bytes_max) {
    return Status::Refused("map name is " + std::to_string(map.size()) + " bytes, limit " +
                           std::to_string(limits.map_name_bytes_max));
  }
  if (key.size() > limits.key_bytes_max) {
    return Status::Refused("key is " + std::to_string(key.size()) + " bytes, limit " +
                           std::to_string(limits.key_bytes_max));
  }
  if (value.size() > limits.value_bytes_max) {
    return Status::Refused("value of " + rows::DescribeKey(map, key) + " is " +
                           std::to_string(value.size()) + " bytes, limit " +
                           std::to_string(limits.value_bytes_max));
  }
  return Status::Ok();
}

Status CheckBatch(const Limits& limits, size_t ops, size_t bytes) {
  if (ops > limits.batch_ops_max) {
    return Status::Refused("batch has " + std::to_string(ops) + " operations, limit " +
                           std::to_string(limits.batch_ops_max));
  }
  if (bytes > limits.batch_bytes_max) {
    return Status::Refused("batch is " + std::to_string(bytes) + " bytes, limit " +
                           std::to_string(limits.batch_bytes_max));
  }
  return Status::Ok();
}

}  // namespace

std::string_view ChangeKindName(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kCreate:
      return "create";
    case ChangeKind::kUpdate:
      return "update";
    case ChangeKind::kDelete:
      return "delete";
  }
  return "unknown";
}

void WriteBatch::Put(std::string_view map, std::string_view key, std::string_view value) {
  Add(map, key, value, /*tombstone=*/false);
}

void WriteBatch::Delete(std::string_view map, std::string_view key) {
  Add(map, key, {}, /*tombstone=*/true);
}

void WriteBatch::Add(std::string_view map, std::string_view key, std::string_view value,
                     bool tombstone) {
  ops_.push_back(OpRef{bytes_.size(), map.size(), key.size(), value.size(), tombstone});
  bytes_.append(map).append(key).append(value);
}

WriteBatch::Op WriteBatch::op(size_t i) const {
  const OpRef& r = ops_[i];
  const std::string_view all(bytes_);
  return Op{all.substr(r.offset, r.map_size), all.substr(r.offset + r.map_size, r.key_size),
            all.substr(r.offset + r.map_size + r.key_size, r.value_size), r.tombstone};
}

struct Replica::Impl {
  // One caller's request in the commit pipeline. Lives on the caller's stack.
  struct Writer {
    explicit Writer(Mutex* mu) : cv(mu) {}
    // Input: local ops, or remote records (then `remote` is set).
    const WriteBatch* local = nullptr;
    std::span<const KeyedRecord> remote_records;
    bool remote = false;
    uint64_t peer = 0;  // who sent the remote records
    StaleRecords stale = StaleRecords::kRedelete;
    size_t bytes = 0;
    // Output.
    Status status;
    std::vector<Version> versions;
    ApplyResult apply;
    // Set by the leader that committed it (release), read by the writer
    // without `mu` (acquire), after which the leader never touches it again.
    std::atomic<bool> done{false};
    CondVar cv;  // wakes a leader asleep in AwaitLastGroup
    std::thread::id thread = std::this_thread::get_id();
  };

  // A change to announce once its group committed.
  struct PendingEvent {
    ChangeKind kind;
    std::string_view map, key, value;
    Version version;
    uint64_t seq;
    bool remote;
  };

  struct Subscription {
    std::string map;
    std::shared_ptr<Callback> callback;
  };

  ReplicaOptions options;
  TreeShape tree_shape;
  std::unique_ptr<Store> store;
  std::unique_ptr<Oplog> oplog;
  std::unique_ptr<Hlc> hlc;

  Mutex mu;
  std::deque<Writer*> writers TIDEMAP_GUARDED_BY(mu);
  // Group-commit wait (see ReplicaOptions::group_commit_wait_max_us): the
  // threads of the last group, whether a leader is waiting for them, and a
  // moving average of a synced commit's duration.
  std::vector<std::thread::id> last_group_threads TIDEMAP_GUARDED_BY(mu);
  bool leader_waiting TIDEMAP_GUARDED_BY(mu) = false;
  std::atomic<int64_t> sync_commit_ns{0};
  // Bumped (under mu, after marking its writers done) by every leader that
  // finished a group; followers and the next leader wait for it to move.
  // One word for all of them: the leader wakes every sleeper with one call,
  // and none when they all spin.
  std::atomic<uint32_t> groups_done{0};
  // Returns once groups_done differs from `seen`: yielding the CPU in a loop
  // for up to twice a synced commit's recent duration (and at most
  // ReplicaOptions::group_commit_spin_max_us), then asleep.
  void AwaitGroupDone(uint32_t seen);
  // The leader `w` waits for the threads of the last group to queue again.
  void AwaitLastGroup(Writer* w) TIDEMAP_REQUIRES(mu);
  bool LastGroupQueued(const Writer* w) const TIDEMAP_REQUIRES(mu);
  // Held by the pipeline leader while it processes and commits a group, and by
  // Scrub(), which needs a moment when no commit is half done.
  Mutex commit_mu;

  // The Merkle tree over every stored key's metadata. Changed only by the
  // leader after a commit; its changed leaves are persisted by checkpoints.
  mutable Mutex tree_mu;
  MerkleTree tree TIDEMAP_GUARDED_BY(tree_mu);

  // Committed state. Written only by the pipeline leader (after a successful
  // commit), read by Stats(); hence guarded by its own small mutex.
  mutable Mutex state_mu;
  uint64_t last_seq TIDEMAP_GUARDED_BY(state_mu) = 0;
  uint64_t live TIDEMAP_GUARDED_BY(state_mu) = 0;
  uint64_t tombstones TIDEMAP_GUARDED_BY(state_mu) = 0;
  // Tombstone GC. Changed only by PurgeTombstones, under commit_mu as well.
  Version gc_watermark TIDEMAP_GUARDED_BY(state_mu);  // the greatest over every bucket
  // Per Merkle bucket, the greatest purged tombstone version (see the design
  // note at PurgeTombstones).
  mutable Mutex gc_mu;
  std::vector<Version> bucket_watermark TIDEMAP_GUARDED_BY(gc_mu);
  Version BucketWatermark(uint32_t bucket) const {
    MutexLock l(&gc_mu);
    return bucket_watermark[bucket];
  }
  uint64_t gc_purged TIDEMAP_GUARDED_BY(state_mu) = 0;
  std::atomic<uint64_t> below_watermark_tombstones{0};
  std::atomic<uint64_t> stale_dropped{0};
  uint64_t incarnation = 0;  // fixed at open
  // Only the leader (or whoever holds commit_mu) touches these.
  uint64_t reserved_bound_ms = 0;
  KeyFilter key_filter;
  uint64_t writes_since_open = 0;  // ops (local or remote) processed, not writers
  // The key filter is (re)built by a background thread from an iterator
  // taken by the leader, so no write waits for a scan of every key (seconds
  // for millions). Meanwhile the current filter, if any, goes on serving,
  // and the leader notes the key hashes it adds in `filter_pending`, for the
  // new filter is blind to keys written after its iterator was taken.
  bool filter_building = false;
  bool filter_failed = false;  // a build failed: writes read first from now on
  std::vector<uint64_t> filter_pending;
  std::thread filter_thread;
  std::atomic<bool> filter_cancel{false};
  Mutex filter_mu;
  std::optional<KeyFilter> filter_built TIDEMAP_GUARDED_BY(filter_mu);
  bool filter_done TIDEMAP_GUARDED_BY(filter_mu) = false;
  // Live records and tombstones per Merkle bucket (what leaf rows persist).
  std::vector<uint32_t> bucket_live, bucket_tombs;
  // Merkle pages (see rows::kLeavesPerPage) with a leaf changed since the
  // last checkpoint: the persisted page rows lag memory exactly there.
  // `dirty_flag` has one byte per page.
  std::vector<uint8_t> dirty_flag;
  std::vector<uint32_t> dirty;
  // The last checkpoint: every leaf row and count is exact as of this seq.
  uint64_t checkpoint_seq = 0;
  uint64_t checkpoint_ms = 0;  // options.clock time it was written (or the open)
  // What Open() replayed from the oplog tail (fixed after open).
  uint64_t recovered_rows = 0;
  uint64_t recovered_buckets = 0;

  // Counters for Stats() (metrics only: relaxed, no ordering with anything).
  std::atomic<uint64_t> local_writes{0};
  std::atomic<uint64_t> remote_applied{0};
  mutable std::atomic<uint64_t> reads{0};

  Mutex subs_mu;
  std::map<SubscriptionId, Subscription> subs TIDEMAP_GUARDED_BY(subs_mu);
  SubscriptionId next_sub_id TIDEMAP_GUARDED_BY(subs_mu) = 1;
  std::atomic<size_t> sub_count{0};

  Status Commit(Writer* w);
  // Installs a filter the background build finished, and starts a build
  // when there is none or the current one is full (sized for twice the
  // stored keys). Called by the leader at the start of each group.
  void MaintainKeyFilter(uint64_t stored_keys);
  // Adds a key about to be stored to the filter (and to the pending build).
  void AddToKeyFilter(uint64_t key_hash) {
    if (key_filter.ready()) key_filter.Add(key_hash);
    if (filter_building) filter_pending.push_back(key_hash);
  }
  // Waits for a running build to stop (and drops its result).
  void StopKeyFilterBuild();
  ~Impl() { StopKeyFilterBuild(); }  // before the store goes
  void ProcessGroup(const std::vector<Writer*>& group);
  // A key within one group: views into the writers' ops (alive while the
  // group is processed), with its KeyHash.
  struct GroupKey {
    std::string_view map, key;
    uint64_t hash = 0;
    bool operator==(const GroupKey& o) const {
      return hash == o.hash && map == o.map && key == o.key;
    }
  };
  struct GroupKeyHash {
    size_t operator()(const GroupKey& k) const { return static_cast<size_t>(k.hash); }
  };
  // What a group commits, built op by op.
  struct GroupBuild {
    Batch batch;
    // Keys changed earlier in the group, latest state (kept only when the
    // group has more than one op: a batch may touch a key twice).
    std::unordered_map<GroupKey, KeyState, GroupKeyHash> keys;
    std::vector<PendingEvent> events;
    std::vector<LeafDelta> leaf_deltas;  // per op: its Merkle bucket's change
    // One per op that won, in seq order: consecutive seqs, packed into oplog
    // rows once the group is built.
    std::vector<OplogEntryRef> oplog_entries;  // views into the writers' ops
    uint64_t seq = 0, live = 0, tombs = 0;
  };
  // Appends the ops of `w` that win to `g`, and sets w's versions and apply
  // result. On error `g` holds part of w's ops and must be built again.
  Status AppendWriter(Writer* w, const Version& watermark, bool track_keys, GroupBuild* g);
  // Reused by every group (the leader's only): encoding buffers, the group
  // being built, and the writers left in it.
  std::string row_key_scratch, value_scratch;
  GroupBuild group_build;
  std::vector<Writer*> group_left;
  // After a group: drops what must not outlive it, and the buffers of a
  // large one.
  void ReleaseGroupBuild();
  void MarkDirty(uint32_t bucket) {
    const uint32_t page = rows::LeafPageOf(bucket);
    if (dirty_flag[page] == 0) {
      dirty_flag[page] = 1;
      dirty.push_back(page);
    }
  }
  // Puts a checkpoint covering `seq` into `batch`: the page row (digests and
  // counts) of every dirty page and of every page with a bucket in `pending`
  // (changes this batch commits, not yet applied to memory), and the state row.
  void AppendCheckpoint(Batch* batch, uint64_t seq, std::span<const LeafDelta> pending);
  // After a checkpoint covering `seq` committed.
  void CheckpointDone(uint64_t seq, uint64_t now_ms);
  // Writes a checkpoint of its own when anything changed since the last one.
  // REQUIRES: commit_mu held (no group is half done).
  Status Checkpoint(bool sync);
  // The stored state of a key, from its 17-byte key-hash index row (so an
  // overwrite never reads the old value).
  Result<KeyState> LoadKeyState(uint64_t key_hash, std::string_view map,
                                std::string_view key) const;
  // The content digest of the stored record, for the equal-version tie rule.
  Result<Digest128> LoadContent(const std::string& row_key) const;
  void Deliver(const std::vector<PendingEvent>& events);
};

Result<KeyState> Replica::Impl::LoadKeyState(uint64_t key_hash, std::string_view map,
                                             std::string_view key) const {
  auto bytes = store->Get(rows::HashIndexKey(key_hash, map, key));
  if (bytes.status().IsNotFound()) return KeyState{};
  if (!bytes.ok()) return bytes.status();
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta, rows::DecodeHashIndexValue(*bytes));
  KeyState st;
  st.exists = true;
  st.meta = meta;
  return st;
}

Result<Digest128> Replica::Impl::LoadContent(const std::string& row_key) const {
  TIDEMAP_ASSIGN_OR_RETURN(std::string bytes, store->Get(row_key));
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec, rows::DecodeRecord(row_key, bytes));
  return ContentDigest(rec.tombstone, rec.value);
}

// The pipeline: writers queue up; the one at the front becomes the leader,
// takes every queued writer (up to a byte bound) as its group, stamps and
// sequences them in queue order, commits them in one LevelDB batch (one fsync
// in sync mode), then hands leadership to the next. Because stamping,
// sequencing and committing happen in one order, oplog seqs become visible
// strictly in order, which is what lets a peer's cursor never skip a row.
Status Replica::Impl::Commit(Writer* w) {
  mu.Lock();
  writers.push_back(w);
  // A leader waiting for the last group's threads is woken by the arrival
  // that completes them (waking it on every arrival costs a context switch each).
  if (leader_waiting && writers.front() != w && LastGroupQueued(writers.front())) {
    writers.front()->cv.Signal();
  }
  while (true) {
    if (w->done.load(std::memory_order_relaxed)) {  // stored under mu
      mu.Unlock();
      return w->status;
    }
    if (w == writers.front()) break;
    const uint32_t seen = groups_done.load(std::memory_order_relaxed);
    mu.Unlock();
    AwaitGroupDone(seen);
    if (w->done.load(std::memory_order_acquire)) return w->status;
    mu.Lock();
  }
  AwaitLastGroup(w);
  std::vector<Writer*> group;
  size_t group_bytes = 0;
  last_group_threads.clear();
  for (Writer* x : writers) {
    if (!group.empty() && group_bytes + x->bytes > options.group_commit_bytes_max) break;
    group.push_back(x);
    group_bytes += x->bytes;
    if (last_group_threads.size() < kGroupThreadsTracked &&
        std::find(last_group_threads.begin(), last_group_threads.end(), x->thread) ==
            last_group_threads.end()) {
      last_group_threads.push_back(x->thread);
    }
  }
  mu.Unlock();

  commit_mu.Lock();
  ProcessGroup(group);
  commit_mu.Unlock();

  mu.Lock();
  for (Writer* x : group) {
    TIDEMAP_CHECK(writers.front() == x);
    writers.pop_front();
    if (x != w) x->done.store(true, std::memory_order_release);
  }
  // seq_cst: notify_all reads the waiter count after this store, and a
  // waiter counts itself before it reads the word (a store-load pair).
  groups_done.fetch_add(1, std::memory_order_seq_cst);
  mu.Unlock();
  groups_done.notify_all();
  return w->status;
}

bool Replica::Impl::LastGroupQueued(const Writer* w) const {
  for (const std::thread::id& t : last_group_threads) {
    if (t == w->thread) continue;
    if (std::none_of(writers.begin(), writers.end(),
                     [&](const Writer* x) { return x->thread == t; })) {
      return false;
    }
  }
  return true;
}

void Replica::Impl::AwaitGroupDone(uint32_t seen) {
  // Steady time bounds the spin only; no decision about data depends on it.
  // (A relaxed replica syncs the commits that move the HLC bound, so
  // sync_commit_ns is set there too: the durability decides.)
  const int64_t spin_ns =
      options.durability != Durability::kSync
          ? 0
          : std::min<int64_t>(2 * sync_commit_ns.load(std::memory_order_relaxed),
                              int64_t{options.group_commit_spin_max_us} * 1000);
  if (spin_ns > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
    while (groups_done.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
  }
  groups_done.wait(seen, std::memory_order_acquire);
}

void Replica::Impl::AwaitLastGroup(Writer* w) {
  // Only a synced commit is worth waiting for, and only for others' threads.
  if (options.durability != Durability::kSync || options.group_commit_wait_max_us == 0 ||
      LastGroupQueued(w)) {
    return;
  }
  // Steady time bounds this wait only; no decision about data depends on it.
  const int64_t wait_ns = std::min<int64_t>(sync_commit_ns.load(std::memory_order_relaxed) / 2,
                                            int64_t{options.group_commit_wait_max_us} * 1000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(wait_ns);
  if (options.group_commit_spin_max_us > 0) {
    while (!LastGroupQueued(w) && std::chrono::steady_clock::now() < deadline) {
      mu.Unlock();
      std::this_thread::yield();
      mu.Lock();
    }
    return;
  }
  leader_waiting = true;
  while (!LastGroupQueued(w) && w->cv.WaitUntil(deadline)) {
  }
  leader_waiting = false;
}

void Replica::Impl::MaintainKeyFilter(uint64_t stored_keys) {
  if (filter_building) {
    std::optional<KeyFilter> built;
    {
      MutexLock l(&filter_mu);
      if (!filter_done) return;  // still scanning
      built = std::move(filter_built);
      filter_built.reset();
      filter_done = false;
    }
    filter_thread.join();
    filter_building = false;
    if (built.has_value()) {
      for (uint64_t key_hash : filter_pending) built->Add(key_hash);
      key_filter = std::move(*built);
    } else {
      filter_failed = true;  // the scan failed: keep reading before writing
      key_filter = KeyFilter();
    }
    filter_pending.clear();
    filter_pending.shrink_to_fit();
  }
  // Built only once this process has written a little, so a one-shot CLI
  // command never pays for the scan, and in proportion to what is stored: the
  // scan reads the whole key-hash index, which a node that reopens and merges
  // a few hundred records from a peer (a short diff) would pay for while the
  // diff's own reads wait for a core.
  const uint64_t writes_first =
      std::max<uint64_t>(kKeyFilterWritesMin, stored_keys / kKeyFilterStoredKeysPerWrite);
  if (filter_failed || writes_since_open < writes_first ||
      (key_filter.ready() && !key_filter.full())) {
    return;
  }
  // The iterator is taken here, between commits: it sees exactly the keys
  // committed so far, and every later one goes through AddToKeyFilter.
  std::shared_ptr<StoreIterator> it = store->NewIterator();
  const uint64_t capacity = std::max<uint64_t>(uint64_t{1} << 20, 2 * stored_keys);
  filter_building = true;
  filter_thread = std::thread([this, it, capacity] {
    NameThisThread("tidemap-filter");
    KeyFilter filter;
    filter.Reset(capacity);
    bool ok = true;
    uint64_t rows = 0;
    for (it->Seek(std::string(1, rows::kHashIndexPrefix)); it->Valid(); it->Next()) {
      const std::string_view k = it->key();
      if (k.empty() || k[0] != rows::kHashIndexPrefix) break;
      if (k.size() < 9 || (++rows % 4096 == 0 && filter_cancel.load(std::memory_order_relaxed))) {
        ok = false;  // a malformed row, or the replica is closing
        break;
      }
      filter.Add(DecodeFixed64BE(k.data() + 1));
    }
    ok = ok && it->status().ok();
    MutexLock l(&filter_mu);
    if (ok) filter_built = std::move(filter);
    filter_done = true;
  });
}

void Replica::Impl::StopKeyFilterBuild() {
  if (!filter_thread.joinable()) return;
  filter_cancel = true;
  filter_thread.join();
}

Status Replica::Impl::AppendWriter(Writer* w, const Version& watermark, bool track_keys,
                                   GroupBuild* g) {
  std::vector<Version> versions;
  ApplyResult apply;
  const size_t n = w->remote ? w->remote_records.size() : w->local->size();
  // Key hashes are computed kHashesAhead ops ahead, and each key's filter
  // block prefetched then, so the filter's cache misses (one per op, in a
  // table of megabytes) overlap instead of stalling one after another.
  const auto hash_of = [&](size_t i) {
    if (w->remote) return KeyHash(w->remote_records[i].map, w->remote_records[i].key);
    const WriteBatch::Op op = w->local->op(i);
    return KeyHash(op.map, op.key);
  };
  std::array<uint64_t, kHashesAhead> hashes_ahead;
  for (size_t i = 0; i < std::min(n, kHashesAhead); ++i) {
    hashes_ahead[i] = hash_of(i);
    key_filter.Prefetch(hashes_ahead[i]);
  }
  for (size_t i = 0; i < n; ++i) {
    std::string_view map, key, value;
    bool tombstone;
    Version version;
    if (w->remote) {
      const KeyedRecord& r = w->remote_records[i];
      map = r.map, key = r.key, value = r.tombstone ? std::string_view() : r.value;
      tombstone = r.tombstone;
      version = r.version;
    } else {
      const WriteBatch::Op op = w->local->op(i);
      map = op.map, key = op.key, value = op.tombstone ? std::string_view() : op.value;
      tombstone = op.tombstone;
    }
    const uint64_t key_hash = hashes_ahead[i % kHashesAhead];
    if (i + kHashesAhead < n) {
      hashes_ahead[i % kHashesAhead] = hash_of(i + kHashesAhead);
      key_filter.Prefetch(hashes_ahead[i % kHashesAhead]);
    }
    const GroupKey group_key{map, key, key_hash};

    // The key's state as of everything before this op.
    KeyState old;
    auto o = track_keys ? g->keys.find(group_key) : g->keys.end();
    if (o != g->keys.end()) {
      old = o->second;
    } else if (key_filter.ready() && !key_filter.MayContain(key_hash)) {
      // Certainly not stored: no read needed.
    } else {
      TIDEMAP_ASSIGN_OR_RETURN(old, LoadKeyState(key_hash, map, key));
    }

    if (!w->remote) {
      // The HLC is above every stored version (its floor comes from the
      // reserved bound), so a local write wins; raising the clock past the
      // old version keeps that true even if a bound was lost.
      if (old.exists) hlc->RaiseFloor(old.meta.version.hlc);
      version = Version{hlc->Now(), options.node_id};
    }
    // A key not held here, at or below its bucket's GC watermark: its
    // tombstone may have been purged here, so this is an older version of
    // a deleted key (or a write later than the horizon allows). Never
    // resurrect it. A tombstone changes nothing (the purge stands for it);
    // a live version is answered by the delete, restored at the watermark
    // (or dropped, for a caller that refuses the sender).
    const Version key_watermark = w->remote && !old.exists && version <= watermark
                                      ? BucketWatermark(BucketOf(key_hash, tree_shape))
                                      : Version{};
    bool redelete = false;
    if (w->remote && !old.exists && version <= key_watermark) {
      if (tombstone) {
        ++apply.below_watermark_tombstones;
        continue;
      }
      if (apply.stale++ == 0) {
        apply.first_stale = rows::DescribeKey(map, key) + " at " + version.ToString();
        apply.first_stale_watermark = key_watermark;
      }
      if (w->stale == StaleRecords::kDrop) continue;
      redelete = true;
      version = key_watermark;
      tombstone = true;
      value = std::string_view();
    }
    rows::RecordKeyInto(&row_key_scratch, map, key);
    const Digest128 content = ContentDigest(tombstone, value);
    if (w->remote && old.exists) {
      bool wins = version > old.meta.version;
      if (version == old.meta.version) {
        if (!old.content.has_value()) {
          TIDEMAP_ASSIGN_OR_RETURN(old.content, LoadContent(row_key_scratch));
        }
        wins = DigestLess(*old.content, content);
      }
      if (!wins) {
        ++apply.ignored;
        continue;
      }
    }

    const rows::RecordMeta meta{version, tombstone};
    rows::EncodeRecordInto(&value_scratch, row_key_scratch, meta, std::nullopt, value);
    g->batch.Put(row_key_scratch, value_scratch);
    const uint64_t seq = ++g->seq;
    // A restored delete is this replica's doing: it must reach the sender.
    g->oplog_entries.push_back(
        OplogEntryRef{seq, map, key, version, tombstone, w->remote && !redelete ? w->peer : 0});
    // The tombstone queue holds exactly the stored tombstones.
    if (old.exists && old.meta.tombstone) {
      g->batch.Delete(rows::GcQueueKey(old.meta.version, map, key));
    }
    if (tombstone) g->batch.Put(rows::GcQueueKey(version, map, key), rows::EncodeU64(seq));
    if (old.exists) (old.meta.tombstone ? g->tombs : g->live) -= 1;
    (tombstone ? g->tombs : g->live) += 1;

    // The key's Merkle item changes from the old version's to the new one's,
    // and its key-hash index row is rewritten with it.
    Digest128 delta = ItemDigest(map, key, version, tombstone);
    if (old.exists) delta ^= ItemDigest(map, key, old.meta.version, old.meta.tombstone);
    LeafDelta leaf{BucketOf(key_hash, tree_shape), delta, 0, 0};
    if (old.exists) (old.meta.tombstone ? leaf.tombstones : leaf.live) -= 1;
    (tombstone ? leaf.tombstones : leaf.live) += 1;
    g->leaf_deltas.push_back(leaf);
    rows::HashIndexKeyInto(&row_key_scratch, key_hash, map, key);
    rows::EncodeHashIndexValueInto(&value_scratch, meta);
    g->batch.Put(row_key_scratch, value_scratch);
    // Added before the commit: if it fails, a false positive is harmless.
    if (!old.exists) AddToKeyFilter(key_hash);

    ChangeKind kind = ChangeKind::kDelete;
    if (!tombstone) {
      kind = (old.exists && !old.meta.tombstone) ? ChangeKind::kUpdate : ChangeKind::kCreate;
    }
    g->events.push_back(PendingEvent{kind, map, key, value, version, seq, w->remote});
    if (track_keys) g->keys.insert_or_assign(group_key, KeyState{true, meta, content});
    if (w->remote) {
      if (!redelete) ++apply.applied;
    } else {
      versions.push_back(version);
    }
  }
  w->versions = std::move(versions);
  w->apply = std::move(apply);
  return Status::Ok();
}

void Replica::Impl::ProcessGroup(const std::vector<Writer*>& group) {
  uint64_t seq, live_count, tomb_count;
  Version watermark;  // over every bucket: most records are above it
  {
    MutexLock l(&state_mu);
    seq = last_seq;
    live_count = live;
    tomb_count = tombstones;
    watermark = gc_watermark;
  }
  size_t ops = 0;
  for (const Writer* w : group) ops += w->remote ? w->remote_records.size() : w->local->size();
  writes_since_open += ops;
  MaintainKeyFilter(live_count + tomb_count);

  // Every writer's ops go straight into one batch. A writer's ops are
  // all-or-nothing: when one fails (a read error), that writer gets the
  // error and the group is built again without it (stamps drawn by the
  // failed attempt are simply skipped).
  std::vector<Writer*>& writers_left = group_left;
  writers_left.assign(group.begin(), group.end());
  GroupBuild& g = group_build;
  for (bool built = false; !built;) {
    g.batch.Clear();
    g.keys.clear();
    g.events.clear();
    g.leaf_deltas.clear();
    g.oplog_entries.clear();
    g.seq = seq, g.live = live_count, g.tombs = tomb_count;
    built = true;
    for (auto it = writers_left.begin(); it != writers_left.end(); ++it) {
      Status s = AppendWriter(*it, watermark, /*track_keys=*/ops > 1, &g);
      if (!s.ok()) {
        (*it)->status = std::move(s);
        (*it)->versions.clear();
        (*it)->apply = ApplyResult{};
        writers_left.erase(it);
        built = false;
        break;
      }
    }
  }
  seq = g.seq, live_count = g.live, tomb_count = g.tombs;
  Batch& batch = g.batch;
  const std::vector<LeafDelta>& leaf_deltas = g.leaf_deltas;
  const std::vector<PendingEvent>& events = g.events;

  if (batch.empty()) {  // nothing won, or every writer failed
    ReleaseGroupBuild();
    return;
  }
  // Every op that won has its entry, so the oplog rows cover exactly the
  // records this batch writes.
  Oplog::AppendRows(g.oplog_entries, &batch);

  // Reserve the HLC bound ahead of every timestamp in this batch. Crossing it
  // forces a synced commit even in relaxed mode, so a restart (with the clock
  // set back, or after a machine crash) never reissues a timestamp.
  bool sync = options.durability == Durability::kSync;
  uint64_t new_bound = reserved_bound_ms;
  const uint64_t hlc_ms = hlc->Last().physical_ms();
  if (hlc_ms > reserved_bound_ms) {
    new_bound = hlc_ms + options.hlc_reserve_ms;
    batch.Put(rows::MetaKey(rows::kMetaHlcBound), rows::EncodeU64(new_bound));
    sync = true;
  }
  // Leaf rows and the state row are not rewritten by every commit: the first
  // group after checkpoint_interval_ms or checkpoint_rows_max oplog entries
  // carries a checkpoint of every leaf changed since the last one, atomically
  // with its own records. A crash in between is repaired at open from the
  // oplog rows after the checkpoint's seq (see Open).
  const uint64_t now_ms = options.clock->NowMillis();
  const bool checkpoint = seq - checkpoint_seq >= options.checkpoint_rows_max ||
                          now_ms < checkpoint_ms ||
                          now_ms - checkpoint_ms >= options.checkpoint_interval_ms;
  if (checkpoint) AppendCheckpoint(&batch, seq, leaf_deltas);

  const auto write_start = std::chrono::steady_clock::now();
  // In key order, a batch of 1000 new keys took about 10% less CPU and a
  // merge of 1000 remote records about 15% less (README, Durability).
  if (g.oplog_entries.size() >= kSortOpsMin) batch.SortByKey();
  const Status written = store->Write(&batch, sync);
  if (sync) {
    // A moving average (1/8 weight for the newest) for AwaitLastGroup.
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - write_start)
                           .count();
    const int64_t avg = sync_commit_ns.load(std::memory_order_relaxed);
    sync_commit_ns.store(avg == 0 ? ns : avg + (ns - avg) / 8, std::memory_order_relaxed);
  }
  if (!written.ok()) {
    for (Writer* w : writers_left) {
      w->status = written;
      w->versions.clear();
      w->apply = ApplyResult{};
    }
    ReleaseGroupBuild();
    return;
  }
  reserved_bound_ms = new_bound;
  {
    MutexLock l(&tree_mu);
    for (const LeafDelta& d : leaf_deltas) tree.Apply(d.bucket, d.digest);
  }
  for (const LeafDelta& d : leaf_deltas) {
    bucket_live[d.bucket] += static_cast<uint32_t>(d.live);  // wraps back: never below 0
    bucket_tombs[d.bucket] += static_cast<uint32_t>(d.tombstones);
    if (!checkpoint) MarkDirty(d.bucket);
  }
  if (checkpoint) CheckpointDone(seq, now_ms);
  {
    MutexLock l(&state_mu);
    last_seq = seq;
    live = live_count;
    tombstones = tomb_count;
  }
  Deliver(events);
  ReleaseGroupBuild();
}

void Replica::Impl::ReleaseGroupBuild() {
  GroupBuild& g = group_build;
  g.events.clear();  // views into the writers' ops, which are about to go
  g.oplog_entries.clear();
  g.keys.clear();
  if (g.batch.ApproximateBytes() > kGroupBuildKeptBytes) g = GroupBuild{};
}

void Replica::Impl::AppendCheckpoint(Batch* batch, uint64_t seq,
                                     std::span<const LeafDelta> pending) {
  // Changes of this batch, merged per bucket (only when checkpointing: rare).
  std::unordered_map<uint32_t, LeafDelta> merged;
  std::vector<uint32_t> pages = dirty;
  for (const LeafDelta& d : pending) {
    LeafDelta& m = merged.try_emplace(d.bucket, LeafDelta{d.bucket, {}, 0, 0}).first->second;
    m.digest ^= d.digest;
    m.live += d.live;
    m.tombstones += d.tombstones;
    if (const uint32_t page = rows::LeafPageOf(d.bucket); dirty_flag[page] == 0) {
      pages.push_back(page);
    }
  }
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  MutexLock l(&tree_mu);
  std::vector<rows::LeafValue> leaves;
  for (uint32_t page : pages) {
    const uint32_t first = page * rows::kLeavesPerPage;
    const uint32_t end = first + rows::LeavesInPage(page, tree.leaf_count());
    leaves.clear();
    for (uint32_t bucket = first; bucket < end; ++bucket) {
      rows::LeafValue leaf{tree.Leaf(bucket), bucket_live[bucket], bucket_tombs[bucket]};
      if (auto m = merged.find(bucket); m != merged.end()) {
        leaf.digest ^= m->second.digest;
        leaf.live += static_cast<uint64_t>(static_cast<int64_t>(m->second.live));
        leaf.tombstones += static_cast<uint64_t>(static_cast<int64_t>(m->second.tombstones));
      }
      leaves.push_back(leaf);
    }
    batch->Put(rows::MerklePageKey(page), rows::EncodeLeafPage(leaves));
  }
  batch->Put(rows::MetaKey(rows::kMetaState), rows::EncodeU64(seq));
}

void Replica::Impl::CheckpointDone(uint64_t seq, uint64_t now_ms) {
  for (uint32_t page : dirty) dirty_flag[page] = 0;
  dirty.clear();
  checkpoint_seq = seq;
  checkpoint_ms = now_ms;
}

Status Replica::Impl::Checkpoint(bool sync) {
  uint64_t seq;
  {
    MutexLock l(&state_mu);
    seq = last_seq;
  }
  if (dirty.empty() && seq == checkpoint_seq) return Status::Ok();
  Batch batch;
  AppendCheckpoint(&batch, seq, {});
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, sync));
  CheckpointDone(seq, options.clock->NowMillis());
  return Status::Ok();
}

void Replica::Impl::Deliver(const std::vector<PendingEvent>& events) {
  if (sub_count.load(std::memory_order_acquire) == 0) return;
  std::vector<Subscription> current;
  {
    MutexLock l(&subs_mu);
    for (const auto& [id, sub] : subs) current.push_back(sub);
  }
  for (const PendingEvent& e : events) {
    const ChangeEvent event{e.kind, e.map, e.key, e.value, e.version, e.seq, e.remote};
    for (const Subscription& sub : current) {
      if (sub.map.empty() || sub.map == e.map) (*sub.callback)(event);
    }
  }
}

Replica::Replica(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Replica::~Replica() {
  // Writers block in Commit() until their group is done, so none is in flight
  // once every caller returned; the owner must not destroy a replica in use.
  {
    MutexLock l(&impl_->mu);
    TIDEMAP_CHECK(impl_->writers.empty());
  }
  MutexLock commit(&impl_->commit_mu);
  // On a clean close, shrink the reserved HLC bound to what was really issued,
  // so that reopening (one CLI command after another) does not start the clock
  // up to hlc_reserve_ms ahead each time; and checkpoint, so that the next
  // open replays nothing. Best effort: if this write fails the larger reserved
  // bound stays, which is safe, and the next open replays the oplog tail.
  Batch batch;
  const uint64_t issued_ms = impl_->hlc->Last().physical_ms();
  if (issued_ms < impl_->reserved_bound_ms) {
    batch.Put(rows::MetaKey(rows::kMetaHlcBound), rows::EncodeU64(issued_ms));
  }
  uint64_t seq;
  {
    MutexLock l(&impl_->state_mu);
    seq = impl_->last_seq;
  }
  if (!impl_->dirty.empty() || seq != impl_->checkpoint_seq) {
    impl_->AppendCheckpoint(&batch, seq, {});
  }
  if (!batch.empty()) (void)impl_->store->Write(&batch, /*sync=*/true);
}

Result<std::unique_ptr<Replica>> Replica::Open(ReplicaOptions options) {
  TIDEMAP_CHECK(options.clock != nullptr);
  if (options.node_id == 0) return Status::InvalidArgument("node id must not be zero");
  auto impl = std::make_unique<Impl>();
  StoreOptions so;
  so.path = options.path;
  so.env = options.env;
  so.write_buffer_bytes = options.write_buffer_bytes;
  TIDEMAP_ASSIGN_OR_RETURN(impl->store, Store::Open(so));
  Store& store = *impl->store;

  auto version_bytes = store.Get(rows::MetaKey(rows::kMetaSchemaVersion));
  if (version_bytes.status().IsNotFound()) {
    // A new database, unless something is already in it.
    auto it = store.NewIterator();
    it->Seek("");
    if (it->Valid()) {
      return Status::Corruption("database " + options.path +
                                " has data but no schema version; it is not a tidemap replica");
    }
    TIDEMAP_RETURN_IF_ERROR(it->status());
    // The incarnation: random and never zero, so a database created again
    // under the same node id (a wiped disk) differs from its former self.
    uint64_t incarnation = 0;
    while (incarnation == 0) {
      if (options.random != nullptr) {
        incarnation = options.random->Next64();
      } else {
        crypto::RandomBytes(&incarnation, sizeof(incarnation));
      }
    }
    Batch init;
    init.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(rows::kSchemaVersion));
    init.Put(rows::MetaKey(rows::kMetaNodeId), rows::EncodeU64(options.node_id));
    init.Put(rows::MetaKey(rows::kMetaIncarnation), rows::EncodeU64(incarnation));
    init.Put(rows::MetaKey(rows::kMetaState), rows::EncodeU64(0));
    TIDEMAP_RETURN_IF_ERROR(store.Write(&init, /*sync=*/true));
  } else if (!version_bytes.ok()) {
    return version_bytes.status();
  } else {
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t schema, rows::DecodeU64(*version_bytes, "schema_version"));
    if (schema != rows::kSchemaVersion) {
      return Status::Refused("database " + options.path + " has schema version " +
                             std::to_string(schema) + "; this build reads version " +
                             std::to_string(rows::kSchemaVersion));
    }
  }

  TIDEMAP_ASSIGN_OR_RETURN(std::string node_bytes, store.Get(rows::MetaKey(rows::kMetaNodeId)));
  TIDEMAP_ASSIGN_OR_RETURN(uint64_t stored_node, rows::DecodeU64(node_bytes, "node_id"));
  if (stored_node != options.node_id) {
    return Status::Refused("database " + options.path + " belongs to node " +
                           NodeIdToString(stored_node) + ", not to this node " +
                           NodeIdToString(options.node_id));
  }

  TIDEMAP_ASSIGN_OR_RETURN(std::string incarnation_bytes,
                           store.Get(rows::MetaKey(rows::kMetaIncarnation)));
  TIDEMAP_ASSIGN_OR_RETURN(impl->incarnation, rows::DecodeU64(incarnation_bytes, "incarnation"));
  Version watermark;
  uint64_t purged = 0;
  if (auto wm = store.Get(rows::MetaKey(rows::kMetaGcWatermark)); wm.ok()) {
    TIDEMAP_ASSIGN_OR_RETURN(watermark, rows::DecodeVersion(*wm, "gc_watermark"));
    TIDEMAP_ASSIGN_OR_RETURN(std::string purged_bytes,
                             store.Get(rows::MetaKey(rows::kMetaGcPurged)));
    TIDEMAP_ASSIGN_OR_RETURN(purged, rows::DecodeU64(purged_bytes, "gc_purged"));
  } else if (!wm.status().IsNotFound()) {
    return wm.status();
  }

  TIDEMAP_ASSIGN_OR_RETURN(std::string state_bytes, store.Get(rows::MetaKey(rows::kMetaState)));
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t checkpoint_seq, rows::DecodeU64(state_bytes, "state"));

  uint64_t bound_ms = 0;
  auto bound_bytes = store.Get(rows::MetaKey(rows::kMetaHlcBound));
  if (bound_bytes.ok()) {
    TIDEMAP_ASSIGN_OR_RETURN(bound_ms, rows::DecodeU64(*bound_bytes, "hlc_bound"));
  } else if (!bound_bytes.status().IsNotFound()) {
    return bound_bytes.status();
  }
  impl->reserved_bound_ms = bound_ms;

  // The Merkle tree and the per-bucket counts as of the last checkpoint, from
  // the leaf rows (about 1.5 MB for the default shape)...
  uint64_t last_seq = checkpoint_seq;
  {
    MutexLock l(&impl->tree_mu);
    TIDEMAP_ASSIGN_OR_RETURN(impl->tree, MerkleTree::Create(impl->tree_shape));
    MerkleTree& tree = impl->tree;
    impl->dirty_flag.assign(rows::LeafPageCount(tree.leaf_count()), 0);
    auto it = store.NewIterator();
    TIDEMAP_RETURN_IF_ERROR(LoadLeafRows(it.get(), &tree, &impl->bucket_live, &impl->bucket_tombs)
                                .WithContext("database " + options.path));

    // ...then the changes since: every oplog row after the checkpoint names a
    // key whose bucket may have changed (every record change commits with an
    // oplog row, and the oplog is never pruned past the checkpoint). Those
    // buckets are recomputed exactly from their key-hash index rows, which
    // commit with their records, and stay dirty until the next checkpoint.
    // (A packed row never straddles the checkpoint, which is written with
    // the last row of a commit; ReadAfter would skip its older part anyway.)
    impl->oplog = std::make_unique<Oplog>(impl->store.get());
    std::vector<uint32_t> replayed;
    for (uint64_t after = checkpoint_seq;;) {
      TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> tail,
                               impl->oplog->ReadAfter(after, kReplayEntriesPerRead));
      if (tail.empty()) break;
      for (const OplogEntry& e : tail) {
        replayed.push_back(BucketOf(KeyHash(e.map, e.key), impl->tree_shape));
      }
      impl->recovered_rows += tail.size();
      after = last_seq = tail.back().seq;
    }
    std::sort(replayed.begin(), replayed.end());
    replayed.erase(std::unique(replayed.begin(), replayed.end()), replayed.end());
    for (uint32_t bucket : replayed) {
      Digest128 digest;
      uint32_t live = 0, tombs = 0;
      const auto [lo, hi] = tree.KeyHashRange(tree.depth(), bucket);
      TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
          it.get(), lo, hi,
          [&](uint64_t, std::string_view m, std::string_view k, const rows::RecordMeta& meta) {
            digest ^= ItemDigest(m, k, meta.version, meta.tombstone);
            ++(meta.tombstone ? tombs : live);
          }));
      TIDEMAP_RETURN_IF_ERROR(tree.LoadLeaf(bucket, digest));
      impl->bucket_live[bucket] = live;
      impl->bucket_tombs[bucket] = tombs;
      impl->MarkDirty(bucket);
    }
    impl->recovered_buckets = replayed.size();
    tree.RecomputeInner();
  }
  {
    // The per-bucket GC watermarks (one row per bucket that ever purged).
    MutexLock l(&impl->gc_mu);
    impl->bucket_watermark.assign(impl->bucket_live.size(), Version{});
    auto it = store.NewIterator();
    for (it->Seek(std::string(1, rows::kGcWatermarkPrefix));
         it->Valid() && !it->key().empty() && it->key()[0] == rows::kGcWatermarkPrefix;
         it->Next()) {
      uint32_t bucket = 0;
      if (!rows::ParseGcWatermarkKey(it->key(), &bucket) ||
          bucket >= impl->bucket_watermark.size()) {
        return Status::Corruption("database " + options.path + ": malformed GC watermark row");
      }
      TIDEMAP_ASSIGN_OR_RETURN(impl->bucket_watermark[bucket],
                               rows::DecodeVersion(it->value(), "bucket gc watermark"));
    }
    TIDEMAP_RETURN_IF_ERROR(it->status());
  }
  impl->checkpoint_seq = checkpoint_seq;
  impl->checkpoint_ms = options.clock->NowMillis();
  {
    uint64_t live = 0, tombstones = 0;
    for (uint32_t n : impl->bucket_live) live += n;
    for (uint32_t n : impl->bucket_tombs) tombstones += n;
    MutexLock l(&impl->state_mu);
    impl->last_seq = last_seq;
    impl->live = live;
    impl->tombstones = tombstones;
    impl->gc_watermark = watermark;
    impl->gc_purged = purged;
  }
  // Every timestamp issued before had physical time <= bound_ms, so starting
  // above (bound_ms, max logical) keeps the clock monotonic across restarts.
  const Timestamp floor =
      bound_ms == 0 ? Timestamp{} : Timestamp::FromParts(bound_ms, Timestamp::kLogicalMax);
  impl->hlc = std::make_unique<Hlc>(options.clock, options.hlc, floor);
  impl->options = std::move(options);
  if (impl->options.diff_read_threads == 0) {
    impl->options.diff_read_threads =
        std::clamp<uint32_t>(std::thread::hardware_concurrency(), 1, kDiffReadThreadsAuto);
  }
  return std::unique_ptr<Replica>(new Replica(std::move(impl)));
}

Result<Version> Replica::Put(std::string_view map, std::string_view key, std::string_view value) {
  WriteBatch b;
  b.Put(map, key, value);
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> v, Write(b));
  return v.front();
}

Result<Version> Replica::Delete(std::string_view map, std::string_view key) {
  WriteBatch b;
  b.Delete(map, key);
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> v, Write(b));
  return v.front();
}

Result<std::vector<Version>> Replica::Write(const WriteBatch& batch) {
  const Limits& limits = impl_->options.limits;
  size_t bytes = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const WriteBatch::Op op = batch.op(i);
    TIDEMAP_RETURN_IF_ERROR(CheckSizes(limits, op.map, op.key, op.value));
    bytes += op.map.size() + op.key.size() + op.value.size();
  }
  if (batch.size() == 0) return std::vector<Version>{};
  TIDEMAP_RETURN_IF_ERROR(CheckBatch(limits, batch.size(), bytes));
  Impl::Writer w(&impl_->mu);
  w.local = &batch;
  w.bytes = bytes;
  TIDEMAP_RETURN_IF_ERROR(impl_->Commit(&w));
  impl_->local_writes.fetch_add(w.versions.size(), std::memory_order_relaxed);
  return std::move(w.versions);
}

Result<ApplyResult> Replica::ApplyRemote(std::span<const KeyedRecord> records, uint64_t peer,
                                         StaleRecords stale) {
  const Limits& limits = impl_->options.limits;
  // Hlc::CheckOffset says "peer <name>: clock ... ahead"; other errors get
  // "from peer <name>" in front.
  const std::string peer_name = peer == 0 ? "(unknown)" : NodeIdToString(peer);
  const std::string context = "from peer " + peer_name;
  size_t bytes = 0;
  Timestamp newest;
  for (const KeyedRecord& r : records) {
    Status s = CheckSizes(limits, r.map, r.key, r.value);
    if (s.ok() && r.tombstone && !r.value.empty()) {
      s = Status::InvalidArgument("tombstone for " + rows::DescribeKey(r.map, r.key) +
                                  " carries a value");
    }
    if (s.ok() && r.version.origin == 0) {
      s = Status::InvalidArgument("record " + rows::DescribeKey(r.map, r.key) +
                                  " has origin node 0");
    }
    if (!s.ok()) return s.WithContext(context);
    newest = std::max(newest, r.version.hlc);
    bytes += r.map.size() + r.key.size() + r.value.size();
  }
  if (records.empty()) return ApplyResult{};
  // The newest timestamp stands for them all: when it is within
  // max_clock_offset, every one is.
  TIDEMAP_RETURN_IF_ERROR(impl_->hlc->CheckOffset(newest, peer_name));
  TIDEMAP_RETURN_IF_ERROR(CheckBatch(limits, records.size(), bytes).WithContext(context));
  // Merge the timestamps into our clock first, so every later local write is
  // stamped above what we just learned (the HLC receive rule). Merging is a
  // max, so merging the newest is merging them all.
  TIDEMAP_RETURN_IF_ERROR(impl_->hlc->Update(newest, peer_name));
  Impl::Writer w(&impl_->mu);
  w.remote = true;
  w.peer = peer;
  w.stale = stale;
  w.remote_records = records;
  w.bytes = bytes;
  TIDEMAP_RETURN_IF_ERROR(impl_->Commit(&w));
  impl_->remote_applied.fetch_add(w.apply.applied, std::memory_order_relaxed);
  impl_->below_watermark_tombstones.fetch_add(w.apply.below_watermark_tombstones,
                                              std::memory_order_relaxed);
  impl_->stale_dropped.fetch_add(w.apply.stale, std::memory_order_relaxed);
  return w.apply;
}

Result<Record> Replica::Get(std::string_view map, std::string_view key) const {
  impl_->reads.fetch_add(1, std::memory_order_relaxed);
  const std::string row_key = rows::RecordKey(map, key);
  auto bytes = impl_->store->Get(row_key);
  if (bytes.status().IsNotFound()) {
    return Status::NotFound(rows::DescribeKey(map, key) + " not found");
  }
  if (!bytes.ok()) return bytes.status();
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec, rows::DecodeRecord(row_key, *bytes));
  if (rec.tombstone) return Status::NotFound(rows::DescribeKey(map, key) + " not found (deleted)");
  return Record{std::move(rec.value), rec.version};
}

Result<ScanPage> Replica::Scan(std::string_view map, std::string_view prefix,
                               std::optional<std::string_view> after, size_t limit) const {
  impl_->reads.fetch_add(1, std::memory_order_relaxed);
  if (limit == 0 || limit > kScanLimitMax) {
    return Status::InvalidArgument("scan limit must be 1.." + std::to_string(kScanLimitMax) +
                                   ", not " + std::to_string(limit));
  }
  const std::string range_prefix = rows::RecordMapPrefix(map, prefix);
  std::string start = range_prefix;
  if (after.has_value() && rows::RecordKey(map, *after) >= start) {
    start = rows::RecordKey(map, *after);
    start.push_back('\0');  // the smallest row key strictly after `after`
  }
  ScanPage page;
  auto it = impl_->store->NewIterator();
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view row_key = it->key();
    if (row_key.substr(0, range_prefix.size()) != range_prefix) break;
    std::string_view m, k;
    if (!rows::ParseRecordKey(row_key, &m, &k)) {
      return Status::Corruption("malformed record key " + Printable(row_key));
    }
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec, rows::DecodeRecord(row_key, it->value()));
    if (rec.tombstone) continue;
    if (page.items.size() == limit) {
      page.next = page.items.back().key;
      break;
    }
    page.items.push_back(ScanItem{std::string(k), std::move(rec.value), rec.version});
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  return page;
}

Status Replica::ForEachKeyMeta(const std::function<bool(const KeyMeta&)>& fn) const {
  const std::string prefix(1, rows::kRecordPrefix);
  auto it = impl_->store->NewIterator();
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    const std::string_view row_key = it->key();
    if (row_key.empty() || row_key[0] != rows::kRecordPrefix) break;
    std::string_view m, k;
    if (!rows::ParseRecordKey(row_key, &m, &k)) {
      return Status::Corruption("malformed record key " + Printable(row_key));
    }
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta, rows::DecodeRecordMeta(row_key, it->value()));
    if (!fn(KeyMeta{m, k, meta.version, meta.tombstone})) return Status::Ok();
  }
  return it->status();
}

Replica::SubscriptionId Replica::Subscribe(std::string_view map, Callback callback) {
  MutexLock l(&impl_->subs_mu);
  const SubscriptionId id = impl_->next_sub_id++;
  impl_->subs[id] =
      Impl::Subscription{std::string(map), std::make_shared<Callback>(std::move(callback))};
  impl_->sub_count.store(impl_->subs.size(), std::memory_order_release);
  return id;
}

void Replica::Unsubscribe(SubscriptionId id) {
  MutexLock l(&impl_->subs_mu);
  impl_->subs.erase(id);
  impl_->sub_count.store(impl_->subs.size(), std::memory_order_release);
}

Result<std::optional<KeyedRecord>> Replica::ReadRecord(std::string_view map,
                                                       std::string_view key) const {
  const std::string row_key = rows::RecordKey(map, key);
  auto bytes = impl_->store->Get(row_key);
  if (bytes.status().IsNotFound()) return std::optional<KeyedRecord>();
  if (!bytes.ok()) return bytes.status();
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec, rows::DecodeRecord(row_key, *bytes));
  return std::optional<KeyedRecord>(KeyedRecord{std::string(map), std::string(key),
                                                std::move(rec.value), rec.version, rec.tombstone});
}

Result<size_t> Replica::RecordsByKeyHash(std::span<const uint64_t> key_hashes, size_t bytes_max,
                                         std::vector<KeyedRecord>* out) const {
  for (size_t i = 1; i < key_hashes.size(); ++i) TIDEMAP_CHECK(key_hashes[i] > key_hashes[i - 1]);
  // A window of hashes at a time is read in parallel slices, each seeking
  // forward with its own iterator and stopping once it alone has read what
  // is left of the byte budget; then the slices are taken in order until the
  // budget is spent. So memory stays within a budget (plus one hash's
  // records) per slice, and a slice's unread tail is never skipped: the
  // budget is always spent before it.
  const uint32_t threads = impl_->options.diff_read_threads;
  const size_t window_max = size_t{threads} * kParallelReadSliceMin * 4;
  struct Slice {
    std::vector<KeyedRecord> records;
    std::vector<uint32_t> per_hash;  // records read for each hash of the slice, in order
  };
  std::vector<Slice> slices;
  size_t bytes = 0, done = 0;
  while (done < key_hashes.size() && bytes < bytes_max) {
    const std::span<const uint64_t> window =
        key_hashes.subspan(done, std::min(window_max, key_hashes.size() - done));
    const size_t left = bytes_max - bytes;
    slices.assign(threads, Slice{});
    const Status status = ForEachReadSlice(
        window.size(), threads, [&](size_t slice, size_t begin, size_t end) -> Status {
          Slice& mine = slices[slice];
          auto it = impl_->store->NewIterator();
          std::vector<std::pair<std::string, std::string>> keys;
          size_t mine_bytes = 0;
          for (size_t i = begin; i < end && mine_bytes < left; ++i) {
            keys.clear();
            TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
                it.get(), window[i], window[i],
                [&](uint64_t, std::string_view m, std::string_view k, const rows::RecordMeta&) {
                  keys.emplace_back(std::string(m), std::string(k));
                }));
            uint32_t count = 0;
            for (const auto& [m, k] : keys) {
              TIDEMAP_ASSIGN_OR_RETURN(std::optional<KeyedRecord> rec, ReadRecord(m, k));
              if (!rec.has_value()) continue;
              mine_bytes += rec->map.size() + rec->key.size() + rec->value.size();
              mine.records.push_back(std::move(*rec));
              ++count;
            }
            mine.per_hash.push_back(count);
          }
          return Status::Ok();
        });
    if (!status.ok()) return status;
    for (Slice& slice : slices) {
      size_t next = 0;
      for (uint32_t count : slice.per_hash) {
        if (bytes >= bytes_max) break;
        for (uint32_t r = 0; r < count; ++r) {
          KeyedRecord& rec = slice.records[next++];
          bytes += rec.map.size() + rec.key.size() + rec.value.size();
          out->push_back(std::move(rec));
        }
        ++done;
      }
    }
  }
  return done;
}

Status Replica::BucketSummaries(const std::vector<uint32_t>& buckets,
                                std::vector<msg::SummaryEntry>* entries,
                                std::vector<uint32_t>* counts) const {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  {
    MutexLock l(&impl_->tree_mu);
    for (uint32_t bucket : buckets) {
      if (bucket >= impl_->tree.leaf_count()) {
        return Status::InvalidArgument("bucket " + std::to_string(bucket) + " out of range");
      }
      ranges.push_back(impl_->tree.KeyHashRange(impl_->tree.depth(), bucket));
    }
  }
  // Cold buckets cost a block read and decompression each: parallel slices,
  // each seeking forward with its own iterator, joined in bucket order. The
  // first slice appends to the output directly (the only one when the call
  // is small), the others to their own vectors, appended after it.
  const uint32_t threads = impl_->options.diff_read_threads;
  std::vector<std::vector<msg::SummaryEntry>> slice_entries(threads);
  std::vector<std::vector<uint32_t>> slice_counts(slice_entries.size());
  const Status status = ForEachReadSlice(
      ranges.size(), threads, [&](size_t slice, size_t begin, size_t end) -> Status {
        std::vector<msg::SummaryEntry>& mine = slice == 0 ? *entries : slice_entries[slice];
        std::vector<uint32_t>& mine_counts = slice == 0 ? *counts : slice_counts[slice];
        auto it = impl_->store->NewIterator();
        for (size_t i = begin; i < end; ++i) {
          const size_t before = mine.size();
          TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
              it.get(), ranges[i].first, ranges[i].second,
              [&](uint64_t h, std::string_view, std::string_view, const rows::RecordMeta& meta) {
                mine.push_back(msg::SummaryEntry{h, meta.version, meta.tombstone});
              }));
          mine_counts.push_back(static_cast<uint32_t>(mine.size() - before));
        }
        return Status::Ok();
      });
  if (!status.ok()) return status;
  for (size_t slice = 1; slice < slice_entries.size(); ++slice) {
    entries->insert(entries->end(), slice_entries[slice].begin(), slice_entries[slice].end());
    counts->insert(counts->end(), slice_counts[slice].begin(), slice_counts[slice].end());
  }
  return Status::Ok();
}

Status Replica::MerkleChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                                   std::vector<uint64_t>* out) const {
  MutexLock l(&impl_->tree_mu);
  for (uint32_t parent : parents) {
    if (!impl_->tree.IsInnerNode(level, parent)) {
      return Status::InvalidArgument("node (" + std::to_string(level) + ", " +
                                     std::to_string(parent) + ") is not an inner tree node");
    }
    for (const Digest128& d : impl_->tree.Children(level, parent)) out->push_back(d.lo);
  }
  return Status::Ok();
}

uint64_t Replica::LastSeq() const {
  MutexLock l(&impl_->state_mu);
  return impl_->last_seq;
}

Digest128 Replica::MerkleRoot() const {
  MutexLock l(&impl_->tree_mu);
  return impl_->tree.Root();
}

Result<ScrubReport> Replica::Scrub() {
  MutexLock commit(&impl_->commit_mu);  // no commit is half done while we look
  // Persist every leaf changed since the last checkpoint, so the rows on disk
  // should equal the rebuild exactly.
  TIDEMAP_RETURN_IF_ERROR(impl_->Checkpoint(/*sync=*/false));
  ScrubReport report;
  TIDEMAP_ASSIGN_OR_RETURN(MerkleTree rebuilt, MerkleTree::Create(impl_->tree_shape));
  std::vector<uint32_t> rebuilt_live(rebuilt.leaf_count()), rebuilt_tombs(rebuilt.leaf_count());
  Status index_status;
  uint64_t tombstones = 0;
  Status s = ForEachKeyMeta([&](const KeyMeta& m) {
    ++report.records;
    const uint64_t key_hash = KeyHash(m.map, m.key);
    const uint32_t bucket = BucketOf(key_hash, impl_->tree_shape);
    rebuilt.Apply(bucket, ItemDigest(m.map, m.key, m.version, m.tombstone));
    ++(m.tombstone ? rebuilt_tombs : rebuilt_live)[bucket];
    auto row = impl_->store->Get(rows::HashIndexKey(key_hash, m.map, m.key));
    if (!row.ok() && !row.status().IsNotFound()) {
      index_status = row.status();
      return false;
    }
    auto meta =
        row.ok() ? rows::DecodeHashIndexValue(*row) : Result<rows::RecordMeta>(row.status());
    if (!meta.ok() || meta->version != m.version || meta->tombstone != m.tombstone) {
      ++report.index_mismatches;
    }
    if (m.tombstone) {
      ++tombstones;
      auto queued = impl_->store->Get(rows::GcQueueKey(m.version, m.map, m.key));
      if (!queued.ok() && !queued.status().IsNotFound()) {
        index_status = queued.status();
        return false;
      }
      if (!queued.ok() || !rows::DecodeU64(*queued, "tombstone queue seq").ok()) {
        ++report.index_mismatches;
      }
    }
    return true;
  });
  TIDEMAP_RETURN_IF_ERROR(s);
  TIDEMAP_RETURN_IF_ERROR(index_status);

  // Index rows without a record show up as a count difference.
  uint64_t index_rows = 0;
  auto it = impl_->store->NewIterator();
  TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(it.get(), 0, UINT64_MAX,
                                          [&](uint64_t, std::string_view, std::string_view,
                                              const rows::RecordMeta&) { ++index_rows; }));
  if (index_rows > report.records) report.index_mismatches += index_rows - report.records;
  // Tombstone queue rows without their tombstone, likewise.
  uint64_t queue_rows = 0;
  for (it->Seek(std::string(1, rows::kGcPrefix));
       it->Valid() && !it->key().empty() && it->key()[0] == rows::kGcPrefix; it->Next()) {
    ++queue_rows;
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  if (queue_rows > tombstones) report.index_mismatches += queue_rows - tombstones;

  // The leaves as stored on disk (digests and counts), not as held in memory.
  TIDEMAP_ASSIGN_OR_RETURN(MerkleTree stored, MerkleTree::Create(impl_->tree_shape));
  std::vector<uint32_t> stored_live, stored_tombs;
  TIDEMAP_RETURN_IF_ERROR(LoadLeafRows(it.get(), &stored, &stored_live, &stored_tombs));
  stored.RecomputeInner();
  for (uint32_t b = 0; b < stored.leaf_count(); ++b) {
    if (stored.Leaf(b) != rebuilt.Leaf(b) || stored_live[b] != rebuilt_live[b] ||
        stored_tombs[b] != rebuilt_tombs[b] || impl_->bucket_live[b] != rebuilt_live[b] ||
        impl_->bucket_tombs[b] != rebuilt_tombs[b]) {
      ++report.leaf_mismatches;
    }
  }
  report.stored_root = stored.Root();
  report.rebuilt_root = rebuilt.Root();
  report.memory_root = MerkleRoot();
  return report;
}

void Replica::Compact() { impl_->store->CompactRange("", std::string(1, '\xff')); }

Result<PruneStats> Replica::PruneOplog() {
  // Open() replays the oplog rows after the last checkpoint, so none of them
  // may go: checkpoint first, then prune no further than it covers.
  uint64_t covered;
  {
    MutexLock commit(&impl_->commit_mu);
    TIDEMAP_RETURN_IF_ERROR(impl_->Checkpoint(/*sync=*/true));
    covered = impl_->checkpoint_seq;
  }
  return impl_->oplog->Prune(covered, impl_->options.retention);
}

// Tombstone GC
// ------------
// A tombstone keeps a deleted key's older versions from coming back: any of
// them arriving later loses to it. Purging it gives that up, so two rules
// make the loss safe.
//
// When. A tombstone is purged once (1) every known peer acknowledged the
// oplog row under which it won here: each of them then holds it or a newer
// version, and will neither lose it nor send us an older version of the key;
// and (2) it is older than the horizon H (tombstone_horizon_ms, by its hlc's
// physical time against our clock): time for it to reach the replicas we do
// not know (peers of peers, a node that joins later from one of them). A
// replica with no known peer has no acknowledgement to wait for, so the
// horizon alone decides: a lone replica is free to purge, and a peer it
// meets later is held to the watermark below like any stale peer. A replica
// in a cluster must therefore know its peers before it purges: the daemon
// registers its configured peers (Oplog::AddPeer) at every start, so a
// fresh or wiped database waits for them too. (The simulator found the
// alternative: a wiped node that had not met its peer yet purged its own
// delete, which that peer then never received, and refused the peer's older
// version of the key for good.) H = 0 disables GC.
//
// The watermark. Each purge raises the GC watermark of the key's Merkle
// bucket, the greatest version purged there ('w' rows, persisted in the batch
// of the purge; W, the greatest over every bucket, is what Hello and Stats
// report). A remote record for a key we do not hold whose version is at or
// below its bucket's watermark may be the old version of a key whose
// tombstone was purged, and is never stored as it is (Impl::ProcessGroup).
// A tombstone is dropped: absent already means deleted here, and storing it
// again would let it circulate between replicas that purged it. A live one
// (stale) is answered by restoring the delete: a tombstone at the bucket's
// watermark, which beats it, is stored in its place and flows back to the
// sender like any delete, then is purged again. Refusing the sender instead
// (StaleRecords::kDrop, for SyncOptions::refuse_stale_peers) was the first
// design; the simulator showed why it is not the default: a purge relies on
// the acks of the known peers, and a peer that acknowledged a tombstone and
// then lost its database (wiped before passing it on) leaves nodes behind it
// that never got the delete. Refused, they would hold the old version
// forever; answered with the delete, the cluster converges. A key we do hold
// is merged by LWW as always, so a write after a delete is never affected.
//
// Why H. The watermark stands for every key of its bucket: a legitimate
// write of another key of the bucket, stamped at or below the watermark,
// that reaches us for the first time after the purge (a partition, a backlog
// or a clock skew longer than H) is deleted too. So H must exceed the longest
// time a write may take to reach every replica, skew included (days in
// production). One watermark per bucket (65,536 by default, 1 MB) rather
// than one per replica makes that 65,536 times less likely (the simulator's
// slow seeds hit it with one per replica); one per key would be a tombstone.
//
// Trees. A purge removes the key's Merkle item, so a replica that purged and
// one that has not differ in those buckets until the other purges too (every
// replica purges the same tombstones once they are older than H everywhere
// and acknowledged). Diffs do not ship such tombstones back and forth: the
// side that purged does not ask for tombstones at or below its watermark of
// keys it lacks, and a side holding one does not send it to a peer whose
// watermark (from its Hello) covers it (replica/sync.cc).
//
// Atomicity. Records, key-hash index rows, queue rows, the watermark and the
// purge count go in one batch per up to kPurgeBatchMax tombstones, with a
// checkpoint of the Merkle leaves: a purge has no oplog row, so the leaf rows
// must be exact after it (Open only replays oplog rows). The queue ('g'
// rows, in version order) lists the stored tombstones with their seq, so a
// purge reads only tombstones older than the horizon, never every key.
Result<PurgeStats> Replica::PurgeTombstones(const std::function<void(const KeyMeta&)>& on_purged) {
  Impl& im = *impl_;
  PurgeStats stats;
  stats.watermark = gc_watermark();
  const uint64_t horizon_ms = im.options.tombstone_horizon_ms;
  const uint64_t now_ms = im.options.clock->NowMillis();
  if (horizon_ms == 0 || now_ms <= horizon_ms) return stats;
  const uint64_t cutoff_ms = now_ms - horizon_ms;  // purge tombstones stamped before it

  MutexLock commit(&im.commit_mu);  // no group is half done; writes wait
  TIDEMAP_ASSIGN_OR_RETURN(auto acks, im.oplog->PeerAcks());
  uint64_t acked_by_all = UINT64_MAX;  // no known peer: the horizon alone decides
  for (const auto& [peer, seq] : acks) acked_by_all = std::min(acked_by_all, seq);

  struct Purged {
    std::string map, key;
    Version version;
  };
  std::vector<Purged> purged;
  std::map<uint32_t, Version> raised;  // bucket watermarks this batch raises
  std::vector<LeafDelta> deltas;
  Batch batch;
  Version watermark = stats.watermark;
  uint64_t purged_total;
  {
    MutexLock l(&im.state_mu);
    purged_total = im.gc_purged;
  }
  auto commit_batch = [&]() -> Status {
    if (purged.empty()) return Status::Ok();
    uint64_t seq;
    {
      MutexLock l(&im.state_mu);
      seq = im.last_seq;
    }
    batch.Put(rows::MetaKey(rows::kMetaGcWatermark), rows::EncodeVersion(watermark));
    batch.Put(rows::MetaKey(rows::kMetaGcPurged), rows::EncodeU64(purged_total + purged.size()));
    for (const auto& [bucket, v] : raised) {
      batch.Put(rows::GcWatermarkKey(bucket), rows::EncodeVersion(v));
    }
    im.AppendCheckpoint(&batch, seq, deltas);
    TIDEMAP_RETURN_IF_ERROR(im.store->Write(&batch, /*sync=*/true));
    {
      MutexLock l(&im.tree_mu);
      for (const LeafDelta& d : deltas) im.tree.Apply(d.bucket, d.digest);
    }
    for (const LeafDelta& d : deltas) {
      im.bucket_tombs[d.bucket] += static_cast<uint32_t>(d.tombstones);  // wraps: -1
    }
    im.CheckpointDone(seq, now_ms);
    {
      MutexLock l(&im.gc_mu);
      for (const auto& [bucket, v] : raised) im.bucket_watermark[bucket] = v;
    }
    raised.clear();
    purged_total += purged.size();
    {
      MutexLock l(&im.state_mu);
      im.tombstones -= purged.size();
      im.gc_watermark = watermark;
      im.gc_purged = purged_total;
    }
    stats.purged += purged.size();
    stats.watermark = watermark;
    if (on_purged) {
      for (const Purged& p : purged) on_purged(KeyMeta{p.map, p.key, p.version, true});
    }
    purged.clear();
    deltas.clear();
    batch = Batch();
    return Status::Ok();
  };

  // The iterator reads a snapshot; the batches committed meanwhile delete
  // only rows it has passed.
  auto it = im.store->NewIterator();
  for (it->Seek(std::string(1, rows::kGcPrefix));
       it->Valid() && !it->key().empty() && it->key()[0] == rows::kGcPrefix; it->Next()) {
    Version version;
    std::string_view map, key;
    if (!rows::ParseGcQueueKey(it->key(), &version, &map, &key)) {
      return Status::Corruption("malformed tombstone queue row " + Printable(it->key()));
    }
    if (version.hlc.physical_ms() >= cutoff_ms) break;  // the rest is younger
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t seq, rows::DecodeU64(it->value(), "tombstone queue seq"));
    if (seq > acked_by_all) {
      ++stats.unacknowledged;
      continue;
    }
    const uint64_t key_hash = KeyHash(map, key);
    TIDEMAP_ASSIGN_OR_RETURN(KeyState st, im.LoadKeyState(key_hash, map, key));
    if (!st.exists || !st.meta.tombstone || st.meta.version != version) {
      return Status::Corruption("tombstone queue row of " + rows::DescribeKey(map, key) + " at " +
                                version.ToString() + " disagrees with the key-hash index");
    }
    batch.Delete(rows::RecordKey(map, key));
    batch.Delete(rows::HashIndexKey(key_hash, map, key));
    batch.Delete(std::string(it->key()));
    const uint32_t bucket = BucketOf(key_hash, im.tree_shape);
    deltas.push_back(LeafDelta{bucket, ItemDigest(map, key, version, /*tombstone=*/true), 0, -1});
    purged.push_back(Purged{std::string(map), std::string(key), version});
    watermark = std::max(watermark, version);
    auto [r, fresh] = raised.try_emplace(bucket, Version{});
    if (fresh) r->second = im.BucketWatermark(bucket);
    r->second = std::max(r->second, version);
    if (purged.size() >= kPurgeBatchMax) TIDEMAP_RETURN_IF_ERROR(commit_batch());
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  TIDEMAP_RETURN_IF_ERROR(commit_batch());
  return stats;
}

namespace {

// Appends the records for which keep(meta, map, key) holds to `out`, from
// after `*cursor` (empty: the first record) in (map, key) order, until they
// reach `page_bytes` (then `*cursor` is where to resume, and the result
// false) or the records end (true).
template <typename Keep>
Result<bool> ScanRecordsWhere(const Store& store, std::string* cursor, size_t page_bytes,
                              std::vector<KeyedRecord>* out, Keep&& keep) {
  auto it = store.NewIterator();
  size_t bytes = 0;
  if (cursor->empty()) {
    it->Seek(std::string(1, rows::kRecordPrefix));
  } else {
    it->Seek(*cursor);
    if (it->Valid() && it->key() == *cursor) it->Next();
  }
  for (; it->Valid(); it->Next()) {
    const std::string_view row_key = it->key();
    if (row_key.empty() || row_key[0] != rows::kRecordPrefix) break;
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta, rows::DecodeRecordMeta(row_key, it->value()));
    std::string_view m, k;
    if (!rows::ParseRecordKey(row_key, &m, &k)) {
      return Status::Corruption("malformed record key " + Printable(row_key));
    }
    if (!keep(meta, m, k)) continue;
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec, rows::DecodeRecord(row_key, it->value()));
    bytes += m.size() + k.size() + rec.value.size();
    out->push_back(KeyedRecord{std::string(m), std::string(k), std::move(rec.value), rec.version,
                               rec.tombstone});
    if (bytes >= page_bytes) {
      cursor->assign(row_key);
      TIDEMAP_RETURN_IF_ERROR(it->status());
      return false;
    }
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  return true;
}

}  // namespace

Result<bool> Replica::ScanRecords(const RecordScan& scan, std::string* cursor, size_t page_bytes,
                                  std::vector<KeyedRecord>* out) const {
  if (scan.origin.has_value()) {
    return ScanRecordsWhere(
        *impl_->store, cursor, page_bytes, out,
        [origin = *scan.origin](const rows::RecordMeta& meta, std::string_view, std::string_view) {
          return meta.version.origin == origin;
        });
  }
  return ScanRecordsWhere(*impl_->store, cursor, page_bytes, out,
                          [key_hashes = scan.key_hashes](const rows::RecordMeta&,
                                                         std::string_view m, std::string_view k) {
                            return std::binary_search(key_hashes.begin(), key_hashes.end(),
                                                      KeyHash(m, k));
                          });
}

uint64_t Replica::KeyCount() const {
  MutexLock l(&impl_->state_mu);
  return impl_->live + impl_->tombstones;
}

Result<ReplicaStats> Replica::Stats() const {
  ReplicaStats s;
  s.node_id = impl_->options.node_id;
  {
    MutexLock l(&impl_->state_mu);
    s.keys = impl_->live;
    s.tombstones = impl_->tombstones;
    s.oplog_last_seq = impl_->last_seq;
  }
  TIDEMAP_ASSIGN_OR_RETURN(s.oplog_first_seq, impl_->oplog->FirstSeq());
  TIDEMAP_ASSIGN_OR_RETURN(s.oplog_pruned_through, impl_->oplog->PrunedThrough());
  s.hlc_last = impl_->hlc->Last();
  s.recovered_oplog_rows = impl_->recovered_rows;
  s.recovered_buckets = impl_->recovered_buckets;
  s.local_writes = impl_->local_writes.load(std::memory_order_relaxed);
  s.remote_applied = impl_->remote_applied.load(std::memory_order_relaxed);
  s.reads = impl_->reads.load(std::memory_order_relaxed);
  s.oplog_bytes = impl_->store->ApproximateBytes(Oplog::RowKey(0), Oplog::RowKey(UINT64_MAX));
  s.disk_bytes = impl_->store->DiskBytes();
  s.incarnation = impl_->incarnation;
  {
    MutexLock l(&impl_->state_mu);
    s.gc_watermark = impl_->gc_watermark;
    s.tombstones_purged = impl_->gc_purged;
  }
  s.below_watermark_tombstones = impl_->below_watermark_tombstones.load(std::memory_order_relaxed);
  s.stale_records_dropped = impl_->stale_dropped.load(std::memory_order_relaxed);
  return s;
}

Version Replica::gc_watermark() const {
  MutexLock l(&impl_->state_mu);
  return impl_->gc_watermark;
}

Version Replica::gc_watermark(uint64_t key_hash) const {
  return impl_->BucketWatermark(BucketOf(key_hash, impl_->tree_shape));
}

uint64_t Replica::incarnation() const { return impl_->incarnation; }

uint64_t Replica::node_id() const { return impl_->options.node_id; }
Timestamp Replica::LastTimestamp() const { return impl_->hlc->Last(); }
const Limits& Replica::limits() const { return impl_->options.limits; }

Result<std::vector<OplogEntry>> Replica::ReadOplog(uint64_t after_seq, size_t entries_max) const {
  return impl_->oplog->ReadAfter(after_seq, entries_max);
}
Result<uint64_t> Replica::OplogPrunedThrough() const { return impl_->oplog->PrunedThrough(); }
Status Replica::AddPeer(uint64_t peer) { return impl_->oplog->AddPeer(peer); }
Result<std::map<uint64_t, uint64_t>> Replica::PeerAcks() const { return impl_->oplog->PeerAcks(); }

SyncStoreInfo Replica::Info() const {
  return SyncStoreInfo{impl_->options.node_id, impl_->incarnation, impl_->tree_shape.fanout_bits,
                       impl_->tree_shape.depth, impl_->options.limits.batch_ops_max};
}

Result<SyncSnapshot> Replica::Snapshot() const {
  SyncSnapshot s;
  s.last_seq = LastSeq();  // first: the root read next covers every row up to it
  TIDEMAP_ASSIGN_OR_RETURN(s.pruned_through, impl_->oplog->PrunedThrough());
  s.merkle_root = MerkleRoot();
  s.gc_watermark = gc_watermark();
  s.records = KeyCount();
  return s;
}

Version Replica::GcWatermark(std::optional<uint64_t> key_hash) const {
  return key_hash.has_value() ? gc_watermark(*key_hash) : gc_watermark();
}

Result<std::optional<PeerState>> Replica::LoadPeer(uint64_t peer) {
  auto state = impl_->oplog->Peer(peer);
  if (state.status().IsNotFound()) {
    TIDEMAP_RETURN_IF_ERROR(impl_->oplog->AddPeer(peer));
    return std::optional<PeerState>();
  }
  if (!state.ok()) return state.status();
  return std::optional<PeerState>(*state);
}

Status Replica::SavePeerAcked(uint64_t peer, uint64_t seq) {
  return impl_->oplog->SetPeerAck(peer, seq);
}
Status Replica::SavePeerReceived(uint64_t peer, uint64_t seq) {
  return impl_->oplog->SetPeerReceived(peer, seq);
}
Status Replica::ReplacePeer(uint64_t peer, const PeerState& state) {
  return impl_->oplog->SetPeer(peer, state);
}

Status Replica::CheckClockOffset(Timestamp remote, std::string_view peer) const {
  return impl_->hlc->CheckOffset(remote, peer);
}

Result<ApplyResult> Replica::ApplyPeerRecords(std::span<const KeyedRecord> records, uint64_t peer,
                                              StaleRecords stale) {
  return ApplyRemote(records, peer, stale);
}

Oplog& ReplicaTestAccess::oplog(Replica& replica) { return *replica.impl_->oplog; }
Hlc& ReplicaTestAccess::hlc(Replica& replica) { return *replica.impl_->hlc; }

}  // namespace tidemap
