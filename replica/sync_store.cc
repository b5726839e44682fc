// Replica as the sync core's SyncStore (replica/sync_store.h): each
// operation forwards to the room that owns it.
#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

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

}  // namespace tidemap
