// Pending writes: the changes of this node that a peer has not acknowledged,
// for `tidemap pending` and GET /v1/pending (the README's "Pending writes").
//
// A peer's pending writes are the entries of our oplog after its cursor (the
// seq it acknowledged) that did not come from it: written here, or received
// from a third node, but neither written by that peer nor received from it,
// which are never streamed back. Their number is what status shows as the
// peer's `lag` (net/peer_lag.h), so the two always agree. Entries pruned
// before the peer acknowledged them (the retention caps) count, but are no
// longer listed: the peer gets them by a tree diff.
//
// Threading: the functions read the replica (any thread) and share nothing.
#ifndef TIDEMAP_SERVER_PENDING_H_
#define TIDEMAP_SERVER_PENDING_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <tidemap/base/status.h>
#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

inline constexpr size_t kPendingDefaultItems = 100;
inline constexpr size_t kPendingItemsMax = 1000;

// One page of one peer's pending writes.
struct PendingPage {
  net::PeerStatus peer;  // who, its cursor (acked_seq), and the count (lag)
  // Age at the time of the call of the oldest pending write; 0 when none.
  double oldest_age_seconds = 0;
  std::vector<OplogEntry> items;  // ascending seq, all after max(cursor, after)
  // Where the next page starts (pass as `after`); nullopt at the oplog's end.
  std::optional<uint64_t> next;
};

// Reads up to `limit` (1..kPendingItemsMax) of `peer`'s pending writes after
// seq `after` (0: from its cursor). A page may hold fewer than `limit` items
// and still have a `next`: one call reads a bounded number of oplog entries.
Result<PendingPage> ReadPending(const Replica& replica, const net::PeerStatus& peer, uint64_t after,
                                size_t limit, uint64_t now_ms);

// The peer of `peers` that `text` names: a public key (64 hex digits) or a
// node id (16 hex digits). NotFound when none does, InvalidArgument when
// `text` is neither form.
Result<net::PeerStatus> FindPeer(const std::vector<net::PeerStatus>& peers, std::string_view text);

// {"peers": [{"node_id", "public_key", "acked_seq", "count", "oldest_age_seconds",
//   "items": [{"seq", "op": "put"|"delete"|"clear", "map"|"map_base64",
//   "key"|"key_base64", "hlc", "origin"}], "next": seq-or-null}]}
// A clear (Replica::ClearMap) is listed with the map and an empty key.
nlohmann::json PendingJson(const std::vector<PendingPage>& pages);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_PENDING_H_
