#include <tidemap/server/status.h>

#include <utility>

#include <tidemap/net/peer_lag.h>

namespace tidemap {

Result<StatusInfo> CollectStatusInfo(Replica* replica, std::string public_key) {
  TIDEMAP_ASSIGN_OR_RETURN(ReplicaStats stats, replica->Stats());
  return StatusInfo{std::move(public_key), stats, replica->MerkleRoot()};
}

Result<std::vector<net::PeerStatus>> PeersFromOplog(Replica* replica, uint64_t last_seq,
                                                    uint64_t now_ms) {
  TIDEMAP_ASSIGN_OR_RETURN(auto acks, replica->PeerAcks());
  net::PeerLag lag(replica);
  std::vector<net::PeerStatus> peers;
  peers.reserve(acks.size());
  for (const auto& [node, acked] : acks) {
    net::PeerStatus p;
    p.node_id = node;
    p.acked_seq = acked;
    TIDEMAP_ASSIGN_OR_RETURN(p.lag, lag.Count(node, acked, last_seq));
    if (p.lag > 0) {
      TIDEMAP_ASSIGN_OR_RETURN(auto rows, replica->ReadOplog(acked, 1));
      if (!rows.empty()) {
        const uint64_t written_ms = rows.front().version.hlc.physical_ms();
        if (now_ms > written_ms) p.lag_seconds = static_cast<double>(now_ms - written_ms) / 1000.0;
      }
    }
    peers.push_back(std::move(p));
  }
  return peers;
}

}  // namespace tidemap
