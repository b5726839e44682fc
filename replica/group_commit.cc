// The write path of one group: the leader's ProcessGroup builds one LevelDB
// batch from its writers' ops (stamping local ones, merging remote ones),
// commits it, then updates the tree, the counts and the subscribers.
#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// A group's buffers are kept for the next group unless its batch was larger.
constexpr size_t kGroupBuildKeptBytes = size_t{1} << 20;
// How far ahead of the op it processes a commit hashes keys and prefetches
// their key filter blocks (see HashesAhead).
constexpr size_t kHashesAhead = 8;
// A group of at least this many ops goes into LevelDB in key order (see
// Batch::SortByKey); smaller ones, a single put's three rows for one, are
// left in the order they were built.
constexpr size_t kSortOpsMin = 16;

// The key hashes of a writer's ops, computed kHashesAhead ops ahead of the op
// processed, each key's filter block prefetched then: the filter's cache
// misses (one per op, in a table of megabytes) overlap instead of stalling
// one after another.
class HashesAhead {
 public:
  HashesAhead(const Writer& w, const KeyFilterKeeper& filter)
      : w_(w), filter_(filter), n_(w.size()) {
    for (size_t i = 0; i < std::min(n_, kHashesAhead); ++i) Compute(i);
  }
  size_t size() const { return n_; }
  // The hash of op `i`; ops must be taken in order.
  uint64_t Take(size_t i) {
    const uint64_t h = ring_[i % kHashesAhead];
    if (i + kHashesAhead < n_) Compute(i + kHashesAhead);
    return h;
  }

 private:
  void Compute(size_t i) {
    const WriterOp op = w_.op(i);
    ring_[i % kHashesAhead] = KeyHash(op.map, op.key);
    filter_.Prefetch(ring_[i % kHashesAhead]);
  }
  const Writer& w_;
  const KeyFilterKeeper& filter_;
  const size_t n_;
  std::array<uint64_t, kHashesAhead> ring_;
};

// The key's Merkle item changes from the old version's to the new one's.
LeafDelta LeafDeltaOf(const WriterOp& op, uint32_t bucket, const KeyState& old) {
  Digest128 delta = ItemDigest(op.map, op.key, op.version, op.tombstone);
  if (old.exists) delta ^= ItemDigest(op.map, op.key, old.meta.version, old.meta.tombstone);
  LeafDelta leaf{bucket, delta, 0, 0};
  if (old.exists) (old.meta.tombstone ? leaf.tombstones : leaf.live) -= 1;
  (op.tombstone ? leaf.tombstones : leaf.live) += 1;
  return leaf;
}

// Refused (and w->condition_failed set) unless w->condition holds for the
// key's state `old` at `now_ms` (an expired record is not live).
Status CheckCondition(const KeyState& old, uint64_t now_ms, Writer* w) {
  const bool expired = old.meta.expiry_ms != 0 && old.meta.expiry_ms <= now_ms;
  const bool live = old.exists && !old.meta.tombstone && !expired;
  const WriteCondition& c = *w->condition;
  const bool holds = live && (c.any_version || std::find(c.versions.begin(), c.versions.end(),
                                                         old.meta.version) != c.versions.end());
  if (holds) return Status::Ok();
  w->condition_failed = true;
  if (live) w->current = old.meta.version;
  return Status::Refused(live ? "the key's version differs from the one required"
                              : "the key does not exist");
}

ChangeKind KindOf(const WriterOp& op, const KeyState& old) {
  if (op.key == kClearKey) return ChangeKind::kClear;
  if (op.tombstone) return ChangeKind::kDelete;
  return old.exists && !old.meta.tombstone ? ChangeKind::kUpdate : ChangeKind::kCreate;
}

}  // namespace

Status Replica::Impl::Commit(Writer* w) {
  std::vector<Writer*> group;
  if (!queue.JoinOrLead(w, &group)) return w->status;
  {
    MutexLock l(&commit_mu);
    ProcessGroup(group);
  }
  queue.FinishGroup(w, group);
  return w->status;
}

void Replica::Impl::ProcessGroup(const std::vector<Writer*>& all) {
  if (const Status ready = CheckStorage(/*now=*/false); !ready.ok()) {
    for (Writer* w : all) w->status = ready;
    return;
  }
  std::vector<Writer*> kept;
  const std::vector<Writer*>& group = quota.full() ? RefuseOverQuota(all, &kept) : all;
  if (group.empty()) return;
  const CommittedCounts start = Counts();
  const Version watermark = gc.watermark();  // over every bucket: most records are above it
  size_t ops = 0;
  for (const Writer* w : group) ops += w->size();
  writes_since_open += ops;
  key_filter.Maintain(*store, start.live + start.tombs, writes_since_open);
  BuildGroup(group, start, watermark, /*track_keys=*/ops > 1);
  GroupBuild& g = group_build;
  if (g.batch.empty()) {  // nothing won, or every writer failed
    ReleaseGroupBuild();
    return;
  }
  // Every op that won has its entry, so the oplog rows cover exactly the
  // records this batch writes.
  Oplog::AppendRows(g.oplog_entries, &g.batch);
  uint64_t new_bound = 0;
  const bool bound_moved = ReserveHlcBound(&g.batch, &new_bound);
  const bool sync = bound_moved || options.durability == Durability::kSync;
  // Leaf rows and the state row are not rewritten by every commit: the first
  // group after checkpoint_interval_ms or checkpoint_rows_max oplog entries
  // carries a checkpoint of every leaf changed since the last one (see
  // TreeState).
  const uint64_t now_ms = options.clock->NowMillis();
  const bool checkpoint = tree.CheckpointDue(g.seq, now_ms);
  if (checkpoint) AppendCheckpoint(&g.batch, g.seq, g.leaf_deltas, &g.expiries);
  const Status written = WriteGroup(&g.batch, g.oplog_entries.size(), sync);
  if (!written.ok()) {
    {
      MutexLock l(&storage_mu);
      last_storage_error = written.message();
    }
    storage_write_errors.fetch_add(1, std::memory_order_relaxed);
    storage_retry_at_ms = now_ms + options.storage_retry_interval_ms;
    if (IsNoSpace(written) && quota.SetDiskFull(true)) AnnounceQuota();
    const Status failed =
        IsNoSpace(written)    ? Status::QuotaExceeded("storage full: " + written.message())
        : written.IsIOError() ? Status::IOError("storage error: " + written.message())
                              : written;
    for (Writer* w : group_left) {
      w->status = failed;
      w->versions.clear();
      w->apply = ApplyResult{};
    }
    ReleaseGroupBuild();
    return;
  }
  reserved_bound_ms = new_bound;
  const bool quota_changed = quota.AddWritten(g.batch.ApproximateBytes());
  if (checkpoint) {
    Checkpointed(g.leaf_deltas, g.seq, now_ms);
  } else {
    tree.Apply(g.leaf_deltas);
    expiry_index.Add(g.expiries);
  }
  {
    MutexLock l(&state_mu);
    last_seq = g.seq;
    live = g.live;
    tombstones = g.tombs;
  }
  for (const auto& [map, version] : g.clears) clears.Committed(map, version);
  subscriptions.Deliver(g.events);
  if (quota_changed) AnnounceQuota();
  ReleaseGroupBuild();
}

void Replica::Impl::BuildGroup(const std::vector<Writer*>& group, const CommittedCounts& start,
                               const Version& watermark, bool track_keys) {
  // Every writer's ops go straight into one batch. A writer's ops are
  // all-or-nothing: when one fails (a read error), that writer gets the
  // error and the group is built again without it (stamps drawn by the
  // failed attempt are simply skipped).
  group_left.assign(group.begin(), group.end());
  GroupBuild& g = group_build;
  for (bool built = false; !built;) {
    g.batch.Clear();
    g.keys.clear();
    g.events.clear();
    g.leaf_deltas.clear();
    g.oplog_entries.clear();
    g.clears.clear();
    g.expiries.Clear();
    g.seq = start.seq, g.live = start.live, g.tombs = start.tombs;
    built = true;
    for (auto it = group_left.begin(); it != group_left.end(); ++it) {
      Status s = AppendWriter(*it, watermark, track_keys, &g);
      if (!s.ok()) {
        (*it)->status = std::move(s);
        (*it)->versions.clear();
        (*it)->apply = ApplyResult{};
        group_left.erase(it);
        built = false;
        break;
      }
    }
  }
}

Status Replica::Impl::AppendWriter(Writer* w, const Version& watermark, bool track_keys,
                                   GroupBuild* g) {
  std::vector<Version> versions;
  ApplyResult apply;
  HashesAhead hashes(*w, key_filter);
  for (size_t i = 0; i < hashes.size(); ++i) {
    WriterOp op = w->op(i);
    const uint64_t key_hash = hashes.Take(i);
    const GroupKey group_key{op.map, op.key, key_hash};
    // Older than its map's clear: deleted by the clear, never stored (a
    // local write is stamped above every clear the HLC has seen).
    if (w->remote && op.key != kClearKey && Cleared(*g, op.map, op.version)) {
      ++apply.ignored;
      continue;
    }
    // The key's state as of everything before this op.
    KeyState old;
    auto o = track_keys ? g->keys.find(group_key) : g->keys.end();
    if (o != g->keys.end()) {
      old = o->second;
    } else if (key_filter.MayContain(key_hash)) {  // else certainly not stored: no read
      TIDEMAP_ASSIGN_OR_RETURN(old, LoadKeyState(key_hash, op.map, op.key));
    }
    bool redelete = false;
    if (w->remote) {
      TIDEMAP_ASSIGN_OR_RETURN(
          const bool wins, MergeRemoteOp(*w, key_hash, watermark, &old, &op, &redelete, &apply));
      if (!wins) continue;
    } else {
      if (w->condition != nullptr) {
        // A record older than its map's clear is not live, removed or not.
        KeyState visible = old;
        visible.exists = old.exists && !Cleared(*g, op.map, old.meta.version);
        TIDEMAP_RETURN_IF_ERROR(CheckCondition(visible, options.clock->NowMillis(), w));
      }
      // The HLC is above every stored version (its floor comes from the
      // reserved bound), so a local write wins; raising the clock past the
      // old version keeps that true even if a bound was lost.
      if (old.exists) hlc->RaiseFloor(old.meta.version.hlc);
      op.version = Version{hlc->Now(), options.node_id};
      // Computed once, here: the expiry replicates with the version.
      if (op.ttl_ms != 0) op.expiry_ms = op.version.hlc.physical_ms() + op.ttl_ms;
    }
    // A restored delete is this replica's doing: it must reach the sender.
    const uint64_t via = w->remote && !redelete ? w->peer : 0;
    AppendChange(op, key_hash, old, via, w->remote, g);
    if (track_keys) {
      g->keys.insert_or_assign(
          group_key, KeyState{true, rows::RecordMeta{op.version, op.tombstone, op.expiry_ms},
                              ContentDigest(op.tombstone, op.value)});
    }
    if (!w->remote) {
      versions.push_back(op.version);
    } else if (!redelete) {
      ++apply.applied;
    }
  }
  w->versions = std::move(versions);
  w->apply = std::move(apply);
  return Status::Ok();
}

Result<bool> Replica::Impl::MergeRemoteOp(const Writer& w, uint64_t key_hash,
                                          const Version& watermark, KeyState* old, WriterOp* op,
                                          bool* redelete, ApplyResult* apply) {
  // Only a key not held, at or below the greatest watermark, needs its
  // bucket's: above that, no bucket's watermark stops it (zero stands in).
  // Nor does it stop a map's clear, which is never purged, so it cannot be
  // the old version of a purged key.
  const Version bucket_watermark = !old->exists && op->version <= watermark && op->key != kClearKey
                                       ? gc.BucketWatermark(BucketOf(key_hash, tree_shape))
                                       : Version{};
  IncomingVersion incoming{op->version, op->tombstone, {}, false};
  if (!old->exists && op->version <= bucket_watermark && op->expiry_ms != 0) {
    incoming.expired = op->expiry_ms <= options.clock->NowMillis();
  }
  if (NeedsHeldContent(*old, op->version)) {
    if (!old->content.has_value()) {
      rows::RecordKeyInto(&row_key_scratch, op->map, op->key);
      TIDEMAP_ASSIGN_OR_RETURN(old->content, LoadContent(row_key_scratch));
    }
    incoming.content = ContentDigest(op->tombstone, op->value);
  }
  const MergeDecision decision = DecideMerge(*old, incoming, bucket_watermark, w.stale);
  switch (decision) {
    case MergeDecision::kStore:
      return true;
    case MergeDecision::kIgnore:
      ++apply->ignored;
      return false;
    case MergeDecision::kDropTombstone:
      ++apply->below_watermark_tombstones;
      return false;
    case MergeDecision::kRedelete:
    case MergeDecision::kDropStale:
      break;
  }
  if (apply->stale++ == 0) {
    apply->first_stale = rows::DescribeKey(op->map, op->key) + " at " + op->version.ToString();
    apply->first_stale_watermark = bucket_watermark;
  }
  if (decision == MergeDecision::kDropStale) return false;
  // The purged delete, restored at the watermark: it beats the stale version.
  *redelete = true;
  op->version = bucket_watermark;
  op->tombstone = true;
  op->value = std::string_view();
  op->expiry_ms = 0;
  return true;
}

uint64_t Replica::Impl::AppendChange(const WriterOp& op, uint64_t key_hash, const KeyState& old,
                                     uint64_t via, bool remote, GroupBuild* g) {
  rows::RecordKeyInto(&row_key_scratch, op.map, op.key);
  const rows::RecordMeta meta{op.version, op.tombstone, op.expiry_ms};
  rows::EncodeRecordInto(&value_scratch, row_key_scratch, meta,
                         op.expiry_ms != 0 ? std::optional<uint64_t>(op.expiry_ms) : std::nullopt,
                         op.value, options.value_cipher);
  g->batch.Put(row_key_scratch, value_scratch);
  const uint64_t seq = ++g->seq;
  g->oplog_entries.push_back(OplogEntryRef{seq, op.map, op.key, op.version, op.tombstone, via});
  // The tombstone queue holds exactly the stored tombstones. The expiry
  // index gets an entry for a live record with an expiry, in memory until
  // the next checkpoint; the old version's entry just stops being valid
  // (replica/expiry_index_internal.h).
  if (old.exists && old.meta.tombstone) {
    g->batch.Delete(rows::GcQueueKey(old.meta.version, op.map, op.key));
  }
  if (op.key == kClearKey) {
    // The map's clear: its removal of older records starts over.
    g->batch.Put(rows::ClearRowKey(op.map), rows::EncodeClearRow({op.version, false, {}}));
    g->clears.emplace_back(op.map, op.version);
  }
  if (op.tombstone) {
    g->batch.Put(rows::GcQueueKey(op.version, op.map, op.key), rows::EncodeU64(seq));
  } else if (op.expiry_ms != 0) {
    g->expiries.Add(rows::ExpiryEntryRef{op.expiry_ms, op.version, seq, op.map, op.key});
  }
  if (old.exists) (old.meta.tombstone ? g->tombs : g->live) -= 1;
  (op.tombstone ? g->tombs : g->live) += 1;
  // The key's key-hash index row is rewritten with its Merkle item.
  g->leaf_deltas.push_back(LeafDeltaOf(op, BucketOf(key_hash, tree_shape), old));
  rows::HashIndexKeyInto(&row_key_scratch, key_hash, op.map, op.key);
  rows::EncodeHashIndexValueInto(&value_scratch, meta);
  g->batch.Put(row_key_scratch, value_scratch);
  // Added before the commit: if it fails, a false positive is harmless.
  if (!old.exists) key_filter.Add(key_hash);
  g->events.push_back(PendingEvent{KindOf(op, old), op.map, op.key, op.value, op.version,
                                   op.expiry_ms, seq, remote});
  return seq;
}

bool Replica::Impl::ReserveHlcBound(Batch* batch, uint64_t* new_bound) {
  // The bound is reserved ahead of every timestamp in the batch. Crossing it
  // forces a synced commit even in relaxed mode, so a restart (with the
  // clock set back, or after a machine crash) never reissues a timestamp.
  *new_bound = reserved_bound_ms;
  const uint64_t hlc_ms = hlc->Last().physical_ms();
  if (hlc_ms <= reserved_bound_ms) return false;
  *new_bound = hlc_ms + options.hlc_reserve_ms;
  batch->Put(rows::MetaKey(rows::kMetaHlcBound), rows::EncodeU64(*new_bound));
  return true;
}

Status Replica::Impl::WriteGroup(Batch* batch, size_t ops, bool sync) {
  const auto write_start = std::chrono::steady_clock::now();
  // A large batch goes in key order, which LevelDB's memtable inserts faster.
  if (ops >= kSortOpsMin) batch->SortByKey();
  const Status written = store->Write(batch, sync);
  if (sync) queue.RecordSyncCommit(std::chrono::steady_clock::now() - write_start);
  return written;
}

void Replica::Impl::ReleaseGroupBuild() {
  GroupBuild& g = group_build;
  g.events.clear();  // views into the writers' ops, which are about to go
  g.oplog_entries.clear();
  g.clears.clear();
  g.keys.clear();
  g.expiries.Clear();
  if (g.batch.ApproximateBytes() > kGroupBuildKeptBytes) g = GroupBuild{};
}

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
  TIDEMAP_ASSIGN_OR_RETURN(rows::RecordValue rec,
                           rows::DecodeRecord(row_key, bytes, options.value_cipher));
  return ContentDigest(rec.tombstone, rec.value);
}

}  // namespace tidemap
