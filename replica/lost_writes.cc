// Lost writes: a peer's Hello says which of our seqs it holds (the cursor it
// acknowledged into our oplog, with the incarnation it is about). Our seqs
// are assigned without gaps and reach a peer only through our sessions, so a
// peer of our current incarnation can hold no seq above what we could have
// sent it: our last seq at open until our first session with it since then,
// and our last seq afterwards. Holding more means our database lost writes
// the peer acknowledged: a truncated log, a restored backup, a disk that
// lied about an fsync. When our Hello's last seq is below the peer's cursor,
// the peer sees it too and repairs and resyncs us (replica/sync.cc). When it
// is not, we already issued those seqs again for other writes, which the peer
// would take for ones it has; so we take a new incarnation: every peer then
// repairs us by a tree diff and resyncs the records we wrote, which brings
// back whatever of ours it holds, and the cursors our peers acknowledged are
// pulled back to what we still have.
#include <string>

#include <tidemap/base/hash.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

Status Replica::CheckHeldByPeer(uint64_t peer, uint64_t held_incarnation, uint64_t held_seq,
                                uint64_t announced_last_seq) {
  Impl& s = *impl_;
  bool first = false;
  {
    MutexLock l(&s.lost_writes_mu);
    first = s.peers_heard.insert(peer).second;
  }
  if (held_incarnation == 0 || held_incarnation != s.incarnation.load()) return Status::Ok();
  const uint64_t could_have_sent = first ? s.open_last_seq : s.LastSeq();
  if (held_seq <= could_have_sent) return Status::Ok();
  MutexLock commit(&s.commit_mu);
  if (s.incarnation.load() != held_incarnation) {
    return Status::Unavailable("this node took a new incarnation: reconnecting");
  }
  std::string what = "this node lost writes that peer " + NodeIdToString(peer) +
                     " holds: it acknowledged our seq " + std::to_string(held_seq) +
                     ", but this database had only seq " + std::to_string(could_have_sent) +
                     " to send it (a truncated log, a restored backup?)";
  Status result = Status::Ok();
  if (held_seq > announced_last_seq) {
    // Our Hello's last seq is below what the peer holds: it sees that our
    // database went back, and repairs and resyncs it in this session.
    what += "; the peer repairs this node and resyncs the records it wrote";
  } else {
    // We already issued those seqs again: the peer cannot tell.
    TIDEMAP_ASSIGN_OR_RETURN(const uint64_t renewed, s.RenewIncarnation());
    what += "; this node took the new incarnation " + NodeIdToString(renewed) +
            ", so that its peers repair it and resync the records it wrote";
    result = Status::Corruption(what);
  }
  s.lost_writes_detected.fetch_add(1, std::memory_order_relaxed);
  MutexLock l(&s.storage_mu);
  s.last_lost_writes = what;
  return result;
}

Result<uint64_t> Replica::Impl::RenewIncarnation() {
  const uint64_t last = LastSeq();
  TIDEMAP_ASSIGN_OR_RETURN(const auto acks, oplog->PeerAcks());
  for (const auto& [peer, acked] : acks) {
    if (acked <= last) continue;
    TIDEMAP_ASSIGN_OR_RETURN(PeerState state, oplog->Peer(peer));
    state.acked = last;
    TIDEMAP_RETURN_IF_ERROR(oplog->SetPeer(peer, state));
  }
  // Derived from the old one and the seq, not drawn: a simulation replays it.
  uint64_t renewed = incarnation.load();
  for (uint64_t salt = last; renewed == incarnation.load() || renewed == 0; ++salt) {
    const std::string seed = rows::EncodeU64(incarnation.load()) + rows::EncodeU64(salt);
    renewed = Hash64(seed, options.node_id);
  }
  Batch batch;
  batch.Put(rows::MetaKey(rows::kMetaIncarnation), rows::EncodeU64(renewed));
  TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, /*sync=*/true));
  incarnation.store(renewed);
  return renewed;
}

}  // namespace tidemap
