// Checkpoints: the Merkle tree's (replica/tree_state_internal.h) and the
// expiry index's pending entries (replica/expiry_index_internal.h) go into
// one batch, so after a crash both are rebuilt from the same oplog tail.
#include <tidemap/replica/impl_internal.h>

namespace tidemap {

void Replica::Impl::AppendCheckpoint(Batch* batch, uint64_t seq, std::span<const LeafDelta> deltas,
                                     const ExpiryPending* expiries) {
  tree.AppendCheckpoint(batch, seq, deltas);
  expiry_index.AppendFlush(batch, expiries);
}

void Replica::Impl::Checkpointed(std::span<const LeafDelta> deltas, uint64_t seq, uint64_t now_ms) {
  tree.ApplyCheckpointed(deltas, seq, now_ms);
  expiry_index.Flushed();
}

bool Replica::Impl::NeedsCheckpoint(uint64_t seq) const {
  return tree.NeedsCheckpoint(seq) || expiry_index.HasPending();
}

Status Replica::Impl::Checkpoint(uint64_t seq, bool sync) {
  if (!NeedsCheckpoint(seq)) return Status::Ok();
  Batch batch;
  AppendCheckpoint(&batch, seq, {});
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, sync));
  Checkpointed({}, seq, options.clock->NowMillis());
  return Status::Ok();
}

}  // namespace tidemap
