// Opening a replica (a short sequence of named steps) and closing it cleanly.
#include <algorithm>
#include <string>
#include <thread>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/base/crypto.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/readers_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// The incarnation of a new database: random and never zero, so a database
// created again under the same node id (a wiped disk) differs from its
// former self.
uint64_t DrawIncarnation(Random* random) {
  uint64_t incarnation = 0;
  while (incarnation == 0) {
    if (random != nullptr) {
      incarnation = random->Next64();
    } else {
      crypto::RandomBytes(&incarnation, sizeof(incarnation));
    }
  }
  return incarnation;
}

// The seq the last checkpoint covers (the meta state row).
Result<uint64_t> LoadCheckpointSeq(const Store& store) {
  TIDEMAP_ASSIGN_OR_RETURN(std::string state_bytes, store.Get(rows::MetaKey(rows::kMetaState)));
  return rows::DecodeU64(state_bytes, "state");
}

}  // namespace

Replica::Impl::Impl(ReplicaOptions opts)
    : options(std::move(opts)),
      tree_shape(),
      queue(CommitQueueOptions{options.durability, options.group_commit_bytes_max,
                               options.group_commit_wait_max_us, options.group_commit_spin_max_us}),
      quota(options.storage_quota_bytes),
      tree(tree_shape, options.checkpoint_interval_ms, options.checkpoint_rows_max) {
  if (options.diff_read_threads == 0) {
    options.diff_read_threads =
        std::clamp<uint32_t>(std::thread::hardware_concurrency(), 1, kDiffReadThreadsAuto);
  }
}

Replica::Impl::~Impl() = default;

Replica::Replica(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Replica>> Replica::Open(ReplicaOptions options) {
  TIDEMAP_CHECK(options.clock != nullptr);
  if (options.node_id == 0) return Status::InvalidArgument("node id must not be zero");
  if (options.read_only && options.new_incarnation) {
    return Status::InvalidArgument("a read-only replica cannot draw a new incarnation");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  TIDEMAP_RETURN_IF_ERROR(impl->OpenStore());
  TIDEMAP_RETURN_IF_ERROR(impl->LoadOrCreateMeta());
  uint64_t bound_ms = 0;
  {
    MutexLock l(&impl->commit_mu);
    TIDEMAP_RETURN_IF_ERROR(impl->LoadDerivedState());
    if (impl->expiry_migration_due) TIDEMAP_RETURN_IF_ERROR(impl->MigrateExpiryQueue());
    bound_ms = impl->reserved_bound_ms;
  }
  // Every timestamp issued before had physical time <= bound_ms, so starting
  // above (bound_ms, max logical) keeps the clock monotonic across restarts.
  const Timestamp floor =
      bound_ms == 0 ? Timestamp{} : Timestamp::FromParts(bound_ms, Timestamp::kLogicalMax);
  impl->hlc = std::make_unique<Hlc>(impl->options.clock, impl->options.hlc, floor);
  impl->open_last_seq = impl->LastSeq();
  (void)impl->quota.SetMeasured(impl->store->DiskBytes(), 0);
  return std::unique_ptr<Replica>(new Replica(std::move(impl)));
}

Status Replica::Impl::LoadDerivedState() {
  TIDEMAP_RETURN_IF_ERROR(gc.LoadMeta(*store));
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t checkpoint_seq, LoadCheckpointSeq(*store));
  TIDEMAP_ASSIGN_OR_RETURN(reserved_bound_ms, LoadHlcBound());
  TIDEMAP_RETURN_IF_ERROR(LoadTree(checkpoint_seq));
  TIDEMAP_RETURN_IF_ERROR(expiry_index.Load(*store));
  TIDEMAP_RETURN_IF_ERROR(expiry_index.Recover(*store, *oplog, checkpoint_seq));
  TIDEMAP_RETURN_IF_ERROR(clears.Load(*store));
  return gc.LoadBuckets(*store, options.path, tree.leaf_count());
}

Status Replica::Impl::OpenStore() {
  StoreOptions so;
  so.path = options.path;
  so.env = options.env;
  so.create_if_missing = options.create_if_missing;
  so.read_only = options.read_only;
  so.write_buffer_bytes = options.write_buffer_bytes;
  TIDEMAP_ASSIGN_OR_RETURN(store, Store::Open(so));
  oplog = std::make_unique<Oplog>(store.get());
  return Status::Ok();
}

// Creates the meta rows of a new database, or checks those of an existing
// one (schema version, node id), and loads the incarnation.
Status Replica::Impl::LoadOrCreateMeta() {
  auto version_bytes = store->Get(rows::MetaKey(rows::kMetaSchemaVersion));
  if (version_bytes.status().IsNotFound()) {
    // A new database, unless something is already in it.
    PrefixIterator any(*store, "");
    any.SeekToFirst();
    if (any.Valid()) {
      return Status::Corruption("database " + options.path +
                                " has data but no schema version; it is not a tidemap replica");
    }
    TIDEMAP_RETURN_IF_ERROR(any.status());
    Batch init;
    init.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(rows::kSchemaVersion));
    init.Put(rows::MetaKey(rows::kMetaNodeId), rows::EncodeU64(options.node_id));
    init.Put(rows::MetaKey(rows::kMetaIncarnation),
             rows::EncodeU64(DrawIncarnation(options.random)));
    init.Put(rows::MetaKey(rows::kMetaState), rows::EncodeU64(0));
    TIDEMAP_RETURN_IF_ERROR(store->Write(&init, /*sync=*/true));
  } else if (!version_bytes.ok()) {
    return version_bytes.status();
  } else {
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t schema, rows::DecodeU64(*version_bytes, "schema_version"));
    // A version 4 database differs only in its expiry queue: migrated once
    // the derived state is loaded.
    expiry_migration_due = schema == rows::kSchemaVersionMigrated;
    if (schema != rows::kSchemaVersion && !expiry_migration_due) {
      return Status::Refused("database " + options.path + " has schema version " +
                             std::to_string(schema) + "; this build reads version " +
                             std::to_string(rows::kSchemaVersion));
    }
  }
  TIDEMAP_ASSIGN_OR_RETURN(std::string node_bytes, store->Get(rows::MetaKey(rows::kMetaNodeId)));
  TIDEMAP_ASSIGN_OR_RETURN(uint64_t stored_node, rows::DecodeU64(node_bytes, "node_id"));
  if (stored_node != options.node_id) {
    return Status::Refused("database " + options.path + " belongs to node " +
                           NodeIdToString(stored_node) + ", not to this node " +
                           NodeIdToString(options.node_id));
  }
  if (options.new_incarnation) {
    Batch renew;
    renew.Put(rows::MetaKey(rows::kMetaIncarnation),
              rows::EncodeU64(DrawIncarnation(options.random)));
    TIDEMAP_RETURN_IF_ERROR(store->Write(&renew, /*sync=*/true));
  }
  TIDEMAP_ASSIGN_OR_RETURN(std::string incarnation_bytes,
                           store->Get(rows::MetaKey(rows::kMetaIncarnation)));
  TIDEMAP_ASSIGN_OR_RETURN(const uint64_t stored,
                           rows::DecodeU64(incarnation_bytes, "incarnation"));
  incarnation = stored;
  return Status::Ok();
}

Result<uint64_t> Replica::Impl::LoadHlcBound() const {
  auto bound_bytes = store->Get(rows::MetaKey(rows::kMetaHlcBound));
  if (bound_bytes.status().IsNotFound()) return uint64_t{0};
  if (!bound_bytes.ok()) return bound_bytes.status();
  return rows::DecodeU64(*bound_bytes, "hlc_bound");
}

// The Merkle tree and the per-bucket counts as of the last checkpoint, from
// the leaf rows, then the changes since from the oplog tail; then the
// committed counts from them.
Status Replica::Impl::LoadTree(uint64_t checkpoint_seq) {
  TIDEMAP_RETURN_IF_ERROR(tree.Load(*store, checkpoint_seq, options.clock->NowMillis())
                              .WithContext("database " + options.path));
  TIDEMAP_ASSIGN_OR_RETURN(const ReplayStats replay, tree.ReplayOplogTail(*store, *oplog));
  recovered_rows = replay.entries;
  recovered_buckets = replay.buckets;
  const auto [live_keys, tombstone_keys] = tree.Totals();
  MutexLock l(&state_mu);
  last_seq = replay.last_seq;
  live = live_keys;
  tombstones = tombstone_keys;
  return Status::Ok();
}

Replica::~Replica() {
  // Writers block in Commit() until their group is done, so none is in flight
  // once every caller returned; the owner must not destroy a replica in use.
  TIDEMAP_CHECK(impl_->queue.empty());
  MutexLock commit(&impl_->commit_mu);
  impl_->Close();
}

void Replica::Impl::Close() {
  // The reserved HLC bound shrinks to what was really issued, so that
  // reopening (one CLI command after another) does not start the clock up to
  // hlc_reserve_ms ahead each time; and a checkpoint, so that the next open
  // replays nothing. Best effort: if this write fails the larger reserved
  // bound stays, which is safe, and the next open replays the oplog tail.
  Batch batch;
  const uint64_t issued_ms = hlc->Last().physical_ms();
  if (issued_ms < reserved_bound_ms) {
    batch.Put(rows::MetaKey(rows::kMetaHlcBound), rows::EncodeU64(issued_ms));
  }
  const uint64_t seq = LastSeq();
  if (NeedsCheckpoint(seq)) AppendCheckpoint(&batch, seq, {});
  if (!batch.empty()) (void)store->Write(&batch, /*sync=*/true);
}

}  // namespace tidemap
