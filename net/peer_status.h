// What the daemon knows of its peers and its connections, as plain values:
// net/ fills them, server/ renders them (status JSON, the human status lines,
// Prometheus metrics). Snapshots; nothing here is shared or locked.
#ifndef TIDEMAP_NET_PEER_STATUS_H_
#define TIDEMAP_NET_PEER_STATUS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <tidemap/base/histogram.h>

namespace tidemap::net {

// One peer: a trusted key, a configured address, or a cursor left in the oplog.
struct PeerStatus {
  uint64_t node_id = 0;
  std::string public_key;  // text form (crypto::PublicKeyToText); empty when unknown
  std::string address;     // HOST:PORT dialed or the remote endpoint; empty when unknown
  bool connected = false;
  uint64_t acked_seq = 0;  // its cursor into our oplog
  // Our changes it lacks: the oplog entries after acked_seq that did not come
  // from it (records; see net/peer_lag.h). Those it sent us are not counted,
  // so the receiving side of a bootstrap does not show the source's whole log.
  uint64_t lag = 0;
  double lag_seconds = 0;         // age of our oldest change it has not acknowledged
  int64_t clock_offset_ms = 0;    // its clock minus ours, as last measured (0: unknown)
  std::string last_error;         // e.g. "peer 3f2a…: clock 94 s ahead, limit 60 s"
  bool sync_in_progress = false;  // a tree diff or a bootstrap is running
  double sync_percent = 0;        // 0..100 while sync_in_progress
  uint64_t bytes_in = 0;          // on the wire, this connection and the ones before
  uint64_t bytes_out = 0;
  uint64_t frames_in = 0;
  uint64_t frames_out = 0;
  uint64_t records_sent = 0;
  uint64_t records_applied = 0;  // received records that won here
  uint64_t sync_rounds = 0;      // completed tree diffs
};

// Node-wide transport counters.
//
// refused_connections, by reason:
//   busy, busy_address     closed at accept: no pre-handshake slot (in all, or
//                          for its source address) and none silent to replace
//   evicted                a silent connection whose slot a newer one took
//   first_message_timeout  no whole hello within first_message_timeout_ms
//   untrusted              the peer's key is not in our trust list (only that)
//   bad_signature          the peer's handshake signature does not verify
//   self, version          the peer has our key; speaks another handshake version
//   refused_by_peer        the peer refused us (its log says why)
//   handshake              anything else: malformed or oversized handshake
//                          messages, the handshake timeout, I/O errors
// decode_errors counts frames after the handshake that fail to decrypt, to
// parse (a length over the limit, bytes after the closing frame) or to decode
// as a message; each also closes its connection. Garbage during the handshake
// is not counted there: anyone who can reach the port can send it, before
// any key is proven, and it is already counted once in refused_connections
// (as "handshake"); decode_errors stays a signal about authenticated peers.
struct NetCounters {
  std::map<std::string, uint64_t> refused_connections;  // by reason, see above
  uint64_t decode_errors = 0;                           // see above
  uint64_t handshakes_completed = 0;
  Histogram sync_round_seconds{Histogram::DefaultSecondsBounds()};  // tree diff durations
};

struct NetStatus {
  std::vector<PeerStatus> peers;
  NetCounters counters;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_PEER_STATUS_H_
