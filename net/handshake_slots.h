// HandshakeSlots: who may hold one of a node's pre-handshake slots. Sans-I/O
// bookkeeping for net::Node's accept path (the node owns the sockets, the
// timers and the closing); it only decides.
//
// Every accepted connection takes a slot until its handshake ends. Slots are
// numbered in accept order, so a lower slot is an older connection. A
// pending connection is "silent" while it has not sent its whole first
// handshake message (the caller answers that question, see Admit). Three
// rules, applied to each new connection from source address `host`:
//
//   1. Per address: when `host` already holds per_host_max slots, the new
//      connection takes the slot of the oldest silent connection from the
//      same `host`; if none of them is silent, it is refused ("busy_address").
//   2. In total: otherwise, when total_max slots are taken, it takes the slot
//      of the oldest silent connection from any address; if none is silent,
//      it is refused ("busy").
//   3. Otherwise it takes a free slot.
//
// Together with the node's first-message deadline (a silent connection is
// closed after first_message_timeout_ms), connections that send nothing
// cannot keep an honest one out: each newcomer replaces the oldest silent
// connection, so a flood of idle sockets mostly replaces its own members, and
// an honest connection is at risk only in the moment before its hello
// arrives (its dialer then retries). Where all sources share one address
// (loopback, NAT) the per-address cap still lets a newcomer in, by eviction.
// What one source can hold for longer is at most per_host_max slots of
// connections that did send a whole first message, each until the handshake
// timeout; the total cap bounds what many sources can hold that way.
//
// Not thread-safe: the node's event loop owns it.
#ifndef TIDEMAP_NET_HANDSHAKE_SLOTS_H_
#define TIDEMAP_NET_HANDSHAKE_SLOTS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace tidemap::net {

class HandshakeSlots {
 public:
  // total_max: slots in all (0 refuses every connection). per_host_max: slots
  // one source address may hold (0: no per-address cap).
  HandshakeSlots(size_t total_max, size_t per_host_max);

  struct Decision {
    bool admitted = false;
    uint64_t slot = 0;                // the new connection's slot, when admitted
    std::optional<uint64_t> evicted;  // a silent connection's slot, now free: close it
    std::string refused;              // why not admitted: "busy" or "busy_address"
  };

  // Decides for a new connection from `host` (its source address, in any
  // text form that is equal for connections from the same source).
  // `silent(slot)` tells whether the connection holding `slot` is silent; it
  // is asked about the oldest slots first and only as far as needed.
  Decision Admit(const std::string& host, const std::function<bool(uint64_t)>& silent);

  // Frees `slot` (its handshake ended). A slot already freed, by eviction or
  // an earlier call, is ignored.
  void Release(uint64_t slot);

  size_t taken() const { return hosts_.size(); }
  size_t taken_by(const std::string& host) const;

 private:
  // The oldest slot that is silent and, when `host` is given, held from it.
  std::optional<uint64_t> OldestSilent(const std::string* host,
                                       const std::function<bool(uint64_t)>& silent) const;

  const size_t total_max_;
  const size_t per_host_max_;
  uint64_t next_slot_ = 1;
  std::map<uint64_t, std::string> hosts_;  // slot -> source address, oldest first
  std::map<std::string, size_t> per_host_;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_HANDSHAKE_SLOTS_H_
