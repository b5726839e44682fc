// Gathering what `status` shows, for the CLI's --data target and for the HTTP
// API's GET /v1/status, so both render one document (server/json.h).
#ifndef TIDEMAP_SERVER_STATUS_H_
#define TIDEMAP_SERVER_STATUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/json.h>

namespace tidemap {

// The replica's side of status: its stats, its Merkle root and `public_key`.
Result<StatusInfo> CollectStatusInfo(Replica* replica, std::string public_key);

// The peers as the oplog alone knows them (no transport): one per cursor,
// not connected, with acked_seq, lag (our changes it lacks, counted as the
// running node counts them: net/peer_lag.h) and lag_seconds (the age, at
// `now_ms`, of the oldest retained row the peer has not acknowledged; 0 when
// it acknowledged everything). `last_seq` is the replica's highest seq.
Result<std::vector<net::PeerStatus>> PeersFromOplog(Replica* replica, uint64_t last_seq,
                                                    uint64_t now_ms);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_STATUS_H_
