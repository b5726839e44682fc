// Node: a replica's peers over TCP. It listens, dials the configured peers
// (and keeps redialing them with jittered exponential backoff), runs the
// authenticated handshake of net/handshake.h on every connection, then drives
// one SyncSession per connection over encrypted frames (net/frame.h).
//
// One connection per peer pair carries both directions of sync: when two
// nodes dial each other, both keep the connection opened by the node with the
// lower node id and close the other. A node that only dials out (behind NAT)
// therefore syncs both ways over its own connection.
//
// Limits: a frame is at most decode.frame_bytes_max (checked before the body
// is read); a connection whose unsent frames exceed send_queue_bytes_max stops
// reading from its peer until they drain, and the sync core bounds its own
// in-flight batches, so a slow or stalled peer costs bounded memory. A
// handshake that takes longer than handshake_timeout_ms, or a connection that
// receives nothing for idle_timeout_ms (keepalive frames are sent every
// keepalive_interval_ms), is closed.
//
// Pre-handshake slots (net/handshake_slots.h): at most handshakes_pending_max
// inbound handshakes run at once, at most handshakes_pending_per_address_max
// of them from one source address (an IPv4 address, or an IPv6 /64: one host's
// usual share). An inbound connection is "silent" until its whole first
// handshake message (the hello) is in, and one still silent after
// first_message_timeout_ms is closed. When the new connection's address
// already holds its share, it takes the slot of that address's oldest silent
// connection; else when all slots are taken, the slot of the oldest silent one
// from anywhere; a connection that finds no silent one to replace is closed at
// accept. So idle sockets, even from many addresses or all from loopback,
// cannot keep an honest peer out: they replace each other, each lives at most
// first_message_timeout_ms, and an honest connection is silent only until its
// hello arrives (bytes waiting unread in its socket count as arrived; if it is
// replaced even so, its dialer retries). A connection that has sent its hello
// keeps its slot until its handshake ends (at most handshake_timeout_ms); one
// address holds at most its share of those.
//
// Threading: the node runs its own event-loop thread, which owns every
// connection and never blocks. What may wait on the disk (each connection's
// SyncSession: remote applies, oplog reads, the scans of a diff; and the
// periodic oplog prune and tombstone purge) runs on the node's WorkerPool
// (net/worker_pool.h, worker_threads threads); results come back to the loop.
// A connection has at most one session job in flight, so its peer's messages
// are handled, and the replies sent, in order; at most inbox_bytes_max of its
// peer's messages wait for the session before the connection stops reading.
// Start, Snapshot, RequestDiff and Stop may be called from any thread (but
// not from a replica Subscribe callback). The replica, the identity and the
// clock are borrowed and must outlive the node; the clock is read from the loop
// and the workers. The trust list is copied at Start and replaced by
// Reconfigure (both on the loop thread, where handshakes read it). The logger
// is shared; null logs nothing.
#ifndef TIDEMAP_NET_NODE_H_
#define TIDEMAP_NET_NODE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/net/address.h>
#include <tidemap/net/peer_status.h>
#include <tidemap/net/trust.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/storage/identity.h>

namespace spdlog {
class logger;
}

namespace tidemap::net {

class Connection;

// What a Node::Reconfigure changed.
struct PeerChanges {
  std::vector<std::string> addresses_added;    // now dialed (HOST:PORT)
  std::vector<std::string> addresses_removed;  // no longer dialed
  std::vector<std::string> keys_added;         // newly trusted (public keys, text form)
  std::vector<std::string> keys_removed;       // no longer trusted; their cursors released
};

// The name of a node's event-loop thread (see base/thread_name.h).
inline constexpr const char* kEventLoopThreadName = "tidemap-net";

struct NodeOptions {
  std::string listen;              // HOST:PORT to accept on; empty: dial out only
  std::vector<std::string> peers;  // HOST:PORT to dial and keep connected
  SyncOptions sync;
  DecodeLimits decode;  // frame and message limits for bytes from peers
  uint64_t handshake_timeout_ms = 5'000;
  // An inbound connection must send its whole hello within this (capped by
  // handshake_timeout_ms; 0: only the handshake timeout applies).
  uint64_t first_message_timeout_ms = 1'000;
  uint64_t idle_timeout_ms = 30'000;
  uint64_t keepalive_interval_ms = 5'000;
  size_t handshakes_pending_max = 64;             // inbound handshakes at once
  size_t handshakes_pending_per_address_max = 8;  // of them from one source address (0: no cap)
  size_t send_queue_bytes_max = size_t{8} << 20;  // per connection
  size_t inbox_bytes_max = size_t{8} << 20;       // per connection: received, not yet handled
  size_t worker_threads = 2;                      // the pool that runs replica work (>= 1)
  uint64_t dial_backoff_min_ms = 100;
  uint64_t dial_backoff_max_ms = 30'000;
  uint64_t tick_interval_ms = 100;            // sync Poll cadence besides write wake-ups
  uint64_t maintenance_interval_ms = 10'000;  // oplog prune and tombstone purge
  // The oplog keeps what a watch stream gone this long needs to resume, even
  // when every peer acknowledged it (the replica's retention cap still
  // applies; see net/watch_hold.h). 0: only the peers' cursors count.
  uint64_t watch_retention_ms = 0;
  uint64_t close_timeout_ms = 2'000;  // Stop waits this long for peers' final frames
};

class Node {
 public:
  // Binds the listener (port 0 picks a free one) and starts the event loop.
  // Every trusted key is registered as a peer (Replica::AddPeer), and every
  // peer the replica keeps a cursor for whose key is not trusted is forgotten
  // (Replica::RemovePeer), so only trusted nodes hold back pruning and GC.
  // Errors: InvalidArgument for a malformed HOST:PORT, Unavailable when the
  // address cannot be bound (the message names it).
  static Result<std::unique_ptr<Node>> Start(NodeOptions options, Replica* replica,
                                             const Identity* identity, const TrustList* trust,
                                             Clock* clock, std::shared_ptr<spdlog::logger> log);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The bound listening port (0 when not listening).
  uint16_t listen_port() const;

  // A snapshot of every known peer (trusted keys, configured addresses,
  // cursors in the oplog) and the node's counters.
  NetStatus Snapshot() const;

  // Asks every connected peer for a tree diff now.
  void RequestDiff();

  // Replaces the trust list and the addresses to dial, as a config reload
  // does. An added address is dialed at once; a removed one is no longer
  // dialed and the connection we dialed to it closes. An added key is a
  // known peer as at Start (Replica::AddPeer). A removed key's connection
  // closes, it is refused from then on, and its cursor is released
  // (Replica::RemovePeer, repeated by the maintenance rounds should a late
  // acknowledgement of the closing session write it again), so it no longer
  // holds back oplog pruning or tombstone GC. InvalidArgument for a
  // malformed address (then nothing changes); Unavailable once Stop began.
  // Blocks until the loop applied it. Any thread but the loop's.
  Result<PeerChanges> Reconfigure(const TrustList& trust, const std::vector<std::string>& peers);

  // Stops accepting and dialing, sends the final frame on every connection,
  // waits up to close_timeout_ms for the peers' own, closes and joins the
  // event loop. Idempotent; the destructor calls it.
  void Stop();

 private:
  friend class Connection;  // one peer connection, run by Impl (node_internal.h)
  struct Impl;
  explicit Node(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_NODE_H_
