// The admission rules of net/handshake_slots.h.
#include <tidemap/net/handshake_slots.h>

namespace tidemap::net {

HandshakeSlots::HandshakeSlots(size_t total_max, size_t per_host_max)
    : total_max_(total_max), per_host_max_(per_host_max) {}

HandshakeSlots::Decision HandshakeSlots::Admit(const std::string& host,
                                               const std::function<bool(uint64_t)>& silent) {
  Decision d;
  if (per_host_max_ > 0 && taken_by(host) >= per_host_max_) {
    d.evicted = OldestSilent(&host, silent);
    if (!d.evicted) {
      d.refused = "busy_address";
      return d;
    }
  } else if (hosts_.size() >= total_max_) {
    // With total_max_ == 0 nothing is held, so nothing can be evicted either.
    d.evicted = OldestSilent(nullptr, silent);
    if (!d.evicted) {
      d.refused = "busy";
      return d;
    }
  }
  if (d.evicted) Release(*d.evicted);
  d.admitted = true;
  d.slot = next_slot_++;
  hosts_.emplace(d.slot, host);
  ++per_host_[host];
  return d;
}

void HandshakeSlots::Release(uint64_t slot) {
  auto it = hosts_.find(slot);
  if (it == hosts_.end()) return;
  auto count = per_host_.find(it->second);
  if (count != per_host_.end() && --count->second == 0) per_host_.erase(count);
  hosts_.erase(it);
}

size_t HandshakeSlots::taken_by(const std::string& host) const {
  auto it = per_host_.find(host);
  return it == per_host_.end() ? 0 : it->second;
}

std::optional<uint64_t> HandshakeSlots::OldestSilent(
    const std::string* host, const std::function<bool(uint64_t)>& silent) const {
  for (const auto& [slot, from] : hosts_) {
    if (host != nullptr && from != *host) continue;
    if (silent(slot)) return slot;
  }
  return std::nullopt;
}

}  // namespace tidemap::net
