#include <tidemap/replica/tree_state_internal.h>

#include <algorithm>
#include <string>
#include <unordered_map>

#include <tidemap/replica/readers_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Oplog entries ReplayOplogTail reads at a time.
constexpr size_t kReplayEntriesPerRead = 4096;

// Loads every persisted Merkle page row (leaf digests and counts) into
// `tree`, `live` and `tombs` (each leaf_count() long, zero where no row
// exists), reusing `it`. Leaves the tree's inner nodes stale (RecomputeInner follows).
Status LoadLeafRows(StoreIterator* it, MerkleTree* tree, std::vector<uint32_t>* live,
                    std::vector<uint32_t>* tombs) {
  live->assign(tree->leaf_count(), 0);
  tombs->assign(tree->leaf_count(), 0);
  PrefixIterator pages(it, std::string_view(&rows::kMerklePrefix, 1));
  for (pages.SeekToFirst(); pages.Valid(); pages.Next()) {
    uint32_t page = 0;
    if (!rows::ParseMerklePageKey(pages.key(), &page) ||
        page >= rows::LeafPageCount(tree->leaf_count())) {
      return Status::Corruption("malformed Merkle page row key");
    }
    auto leaves = rows::DecodeLeafPage(pages.value());
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
  return pages.status();
}

}  // namespace

TreeState::TreeState(const TreeShape& shape, uint64_t checkpoint_interval_ms,
                     uint64_t checkpoint_rows_max)
    : shape_(shape),
      checkpoint_interval_ms_(checkpoint_interval_ms),
      checkpoint_rows_max_(checkpoint_rows_max) {}

Status TreeState::Load(const Store& store, uint64_t checkpoint_seq, uint64_t now_ms) {
  MutexLock l(&mu_);
  TIDEMAP_ASSIGN_OR_RETURN(tree_, MerkleTree::Create(shape_));
  dirty_flag_.assign(rows::LeafPageCount(tree_.leaf_count()), 0);
  dirty_.clear();
  auto it = store.NewIterator();
  TIDEMAP_RETURN_IF_ERROR(LoadLeafRows(it.get(), &tree_, &live_, &tombs_));
  checkpoint_seq_ = checkpoint_seq;
  checkpoint_ms_ = now_ms;
  return Status::Ok();
}

Result<ReplayStats> TreeState::ReplayOplogTail(const Store& store, const Oplog& oplog) {
  MutexLock l(&mu_);
  // Every oplog row after the checkpoint names a key whose bucket may have
  // changed (every record change commits with an oplog row, and the oplog is
  // never pruned past the checkpoint). Those buckets are recomputed exactly
  // from their key-hash index rows, which commit with their records, and
  // stay dirty until the next checkpoint. (A packed row never straddles the
  // checkpoint, which is written with the last row of a commit; ReadAfter
  // would skip its older part anyway.)
  ReplayStats stats;
  stats.last_seq = checkpoint_seq_;
  std::vector<uint32_t> replayed;
  for (uint64_t after = checkpoint_seq_;;) {
    TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> tail,
                             oplog.ReadAfter(after, kReplayEntriesPerRead));
    if (tail.empty()) break;
    for (const OplogEntry& e : tail) replayed.push_back(BucketOf(KeyHash(e.map, e.key), shape_));
    stats.entries += tail.size();
    after = stats.last_seq = tail.back().seq;
  }
  std::sort(replayed.begin(), replayed.end());
  replayed.erase(std::unique(replayed.begin(), replayed.end()), replayed.end());
  auto it = store.NewIterator();
  for (uint32_t bucket : replayed) TIDEMAP_RETURN_IF_ERROR(RecomputeBucket(it.get(), bucket));
  stats.buckets = replayed.size();
  tree_.RecomputeInner();
  return stats;
}

Status TreeState::RecomputeBucket(StoreIterator* it, uint32_t bucket) {
  Digest128 digest;
  uint32_t live = 0, tombs = 0;
  const auto [lo, hi] = tree_.KeyHashRange(tree_.depth(), bucket);
  TIDEMAP_RETURN_IF_ERROR(ForEachIndexRow(
      it, lo, hi,
      [&](uint64_t, std::string_view m, std::string_view k, const rows::RecordMeta& meta) {
        digest ^= ItemDigest(m, k, meta.version, meta.tombstone);
        ++(meta.tombstone ? tombs : live);
      }));
  TIDEMAP_RETURN_IF_ERROR(tree_.LoadLeaf(bucket, digest));
  live_[bucket] = live;
  tombs_[bucket] = tombs;
  MarkDirty(bucket);
  return Status::Ok();
}

Result<TreeRebuild> TreeState::RebuildFromRecords(
    const Store& store, const TreeShape& shape,
    const std::function<Status(const KeyMeta&, uint64_t key_hash)>& visit) {
  TreeRebuild rebuilt;
  TIDEMAP_ASSIGN_OR_RETURN(rebuilt.tree, MerkleTree::Create(shape));
  rebuilt.live.assign(rebuilt.tree.leaf_count(), 0);
  rebuilt.tombs.assign(rebuilt.tree.leaf_count(), 0);
  Status visited;
  TIDEMAP_RETURN_IF_ERROR(ForEachRecordMeta(store, [&](const KeyMeta& m) {
    ++rebuilt.records;
    const uint64_t key_hash = KeyHash(m.map, m.key);
    const uint32_t bucket = BucketOf(key_hash, shape);
    rebuilt.tree.Apply(bucket, ItemDigest(m.map, m.key, m.version, m.tombstone));
    ++(m.tombstone ? rebuilt.tombs : rebuilt.live)[bucket];
    if (visit) visited = visit(m, key_hash);
    return visited.ok();
  }));
  TIDEMAP_RETURN_IF_ERROR(visited);
  return rebuilt;
}

Digest128 TreeState::Root() const {
  MutexLock l(&mu_);
  return tree_.Root();
}

uint32_t TreeState::leaf_count() const {
  MutexLock l(&mu_);
  return tree_.leaf_count();
}

std::pair<uint64_t, uint64_t> TreeState::Totals() const {
  MutexLock l(&mu_);
  uint64_t live = 0, tombstones = 0;
  for (uint32_t n : live_) live += n;
  for (uint32_t n : tombs_) tombstones += n;
  return {live, tombstones};
}

Status TreeState::BucketRanges(const std::vector<uint32_t>& buckets,
                               std::vector<std::pair<uint64_t, uint64_t>>* ranges) const {
  MutexLock l(&mu_);
  for (uint32_t bucket : buckets) {
    if (bucket >= tree_.leaf_count()) {
      return Status::InvalidArgument("bucket " + std::to_string(bucket) + " out of range");
    }
    ranges->push_back(tree_.KeyHashRange(tree_.depth(), bucket));
  }
  return Status::Ok();
}

Status TreeState::ChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                               std::vector<uint64_t>* out) const {
  MutexLock l(&mu_);
  for (uint32_t parent : parents) {
    if (!tree_.IsInnerNode(level, parent)) {
      return Status::InvalidArgument("node (" + std::to_string(level) + ", " +
                                     std::to_string(parent) + ") is not an inner tree node");
    }
    for (const Digest128& d : tree_.Children(level, parent)) out->push_back(d.lo);
  }
  return Status::Ok();
}

Status TreeState::CompareWithRebuild(const Store& store, const TreeRebuild& rebuilt,
                                     ScrubReport* report) const {
  // The leaves as stored on disk (digests and counts), not as held in memory.
  TIDEMAP_ASSIGN_OR_RETURN(MerkleTree stored, MerkleTree::Create(shape_));
  std::vector<uint32_t> stored_live, stored_tombs;
  auto it = store.NewIterator();
  TIDEMAP_RETURN_IF_ERROR(LoadLeafRows(it.get(), &stored, &stored_live, &stored_tombs));
  stored.RecomputeInner();
  MutexLock l(&mu_);
  for (uint32_t b = 0; b < stored.leaf_count(); ++b) {
    if (stored.Leaf(b) != rebuilt.tree.Leaf(b) || stored_live[b] != rebuilt.live[b] ||
        stored_tombs[b] != rebuilt.tombs[b] || live_[b] != rebuilt.live[b] ||
        tombs_[b] != rebuilt.tombs[b]) {
      ++report->leaf_mismatches;
    }
  }
  report->stored_root = stored.Root();
  report->rebuilt_root = rebuilt.tree.Root();
  report->memory_root = tree_.Root();
  return Status::Ok();
}

bool TreeState::CheckpointDue(uint64_t seq, uint64_t now_ms) const {
  MutexLock l(&mu_);
  return seq - checkpoint_seq_ >= checkpoint_rows_max_ || now_ms < checkpoint_ms_ ||
         now_ms - checkpoint_ms_ >= checkpoint_interval_ms_;
}

bool TreeState::NeedsCheckpoint(uint64_t seq) const {
  MutexLock l(&mu_);
  return !dirty_.empty() || seq != checkpoint_seq_;
}

void TreeState::AppendCheckpoint(Batch* batch, uint64_t seq,
                                 std::span<const LeafDelta> pending) const {
  MutexLock l(&mu_);
  // Changes of this batch, merged per bucket (only when checkpointing: rare).
  std::unordered_map<uint32_t, LeafDelta> merged;
  std::vector<uint32_t> pages = dirty_;
  for (const LeafDelta& d : pending) {
    LeafDelta& m = merged.try_emplace(d.bucket, LeafDelta{d.bucket, {}, 0, 0}).first->second;
    m.digest ^= d.digest;
    m.live += d.live;
    m.tombstones += d.tombstones;
    if (const uint32_t page = rows::LeafPageOf(d.bucket); dirty_flag_[page] == 0) {
      pages.push_back(page);
    }
  }
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  std::vector<rows::LeafValue> leaves;
  for (uint32_t page : pages) {
    const uint32_t first = page * rows::kLeavesPerPage;
    const uint32_t end = first + rows::LeavesInPage(page, tree_.leaf_count());
    leaves.clear();
    for (uint32_t bucket = first; bucket < end; ++bucket) {
      rows::LeafValue leaf{tree_.Leaf(bucket), live_[bucket], tombs_[bucket]};
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

void TreeState::ApplyLocked(std::span<const LeafDelta> deltas) {
  for (const LeafDelta& d : deltas) {
    tree_.Apply(d.bucket, d.digest);
    live_[d.bucket] += static_cast<uint32_t>(d.live);  // wraps back: never below 0
    tombs_[d.bucket] += static_cast<uint32_t>(d.tombstones);
  }
}

void TreeState::Apply(std::span<const LeafDelta> deltas) {
  MutexLock l(&mu_);
  ApplyLocked(deltas);
  for (const LeafDelta& d : deltas) MarkDirty(d.bucket);
}

void TreeState::ApplyCheckpointed(std::span<const LeafDelta> deltas, uint64_t seq,
                                  uint64_t now_ms) {
  MutexLock l(&mu_);
  ApplyLocked(deltas);
  for (uint32_t page : dirty_) dirty_flag_[page] = 0;
  dirty_.clear();
  checkpoint_seq_ = seq;
  checkpoint_ms_ = now_ms;
}

Status TreeState::Checkpoint(Store* store, uint64_t seq, bool sync, Clock* clock) {
  if (!NeedsCheckpoint(seq)) return Status::Ok();
  Batch batch;
  AppendCheckpoint(&batch, seq, {});
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, sync));
  ApplyCheckpointed({}, seq, clock->NowMillis());
  return Status::Ok();
}

uint64_t TreeState::checkpoint_seq() const {
  MutexLock l(&mu_);
  return checkpoint_seq_;
}

void TreeState::Reset(TreeRebuild rebuilt) {
  MutexLock l(&mu_);
  tree_ = std::move(rebuilt.tree);
  live_ = std::move(rebuilt.live);
  tombs_ = std::move(rebuilt.tombs);
  for (uint32_t bucket = 0; bucket < tree_.leaf_count(); bucket += rows::kLeavesPerPage) {
    MarkDirty(bucket);
  }
}

void TreeState::MarkDirty(uint32_t bucket) {
  const uint32_t page = rows::LeafPageOf(bucket);
  if (dirty_flag_[page] == 0) {
    dirty_flag_[page] = 1;
    dirty_.push_back(page);
  }
}

}  // namespace tidemap
