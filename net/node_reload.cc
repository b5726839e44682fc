// Node::Reconfigure: the trust list and the dialed addresses replaced while
// the node runs (a config reload). The loop side swaps them and closes what
// was removed; the caller's thread then registers and releases the peers'
// cursors in the replica, which may wait on the disk.
#include <boost/asio/post.hpp>

#include <spdlog/spdlog.h>

#include <future>
#include <set>

#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/net/node_internal.h>

namespace tidemap::net {

namespace {

// The loop answers a Reconfigure within this, or the node is not running.
constexpr uint64_t kReconfigureWaitMs = 10'000;

std::set<std::string> KeyTexts(const TrustList& trust) {
  std::set<std::string> out;
  for (const auto& key : trust.keys()) out.insert(crypto::PublicKeyToText(key));
  return out;
}

uint64_t NodeIdOfText(const std::string& text) {
  auto key = crypto::PublicKeyFromText(text);
  return key.ok() ? crypto::NodeIdOf(*key) : 0;
}

}  // namespace

PeerChanges Node::Impl::ApplyPeers(TrustList new_trust, const std::vector<std::string>& addresses) {
  PeerChanges ch;
  const std::set<std::string> old_keys = KeyTexts(trust_owned);
  const std::set<std::string> new_keys = KeyTexts(new_trust);
  for (const auto& k : new_keys) {
    if (old_keys.count(k) == 0) ch.keys_added.push_back(k);
  }
  for (const auto& k : old_keys) {
    if (new_keys.count(k) == 0) ch.keys_removed.push_back(k);
  }
  const std::set<std::string> wanted(addresses.begin(), addresses.end());
  for (const auto& [address, target] : dial_targets) {
    if (wanted.count(address) == 0) ch.addresses_removed.push_back(address);
  }
  for (const auto& address : wanted) {
    if (dial_targets.count(address) == 0) ch.addresses_added.push_back(address);
  }
  trust_owned = std::move(new_trust);
  options.peers = addresses;
  for (const auto& address : ch.addresses_removed) {
    dial_targets[address]->removed = true;
    dial_targets[address]->timer.cancel();
    dial_targets.erase(address);
    address_node.erase(address);
  }
  for (const auto& address : ch.addresses_added) StartDialing(address);

  const std::set<std::string> gone_keys(ch.keys_removed.begin(), ch.keys_removed.end());
  const std::set<std::string> gone_addresses(ch.addresses_removed.begin(),
                                             ch.addresses_removed.end());
  // Copy: Close edits the set.
  std::vector<std::shared_ptr<Connection>> snapshot(connections.begin(), connections.end());
  for (auto& c : snapshot) {
    if (gone_keys.count(c->public_key_text()) != 0) {
      c->Close("removed from the trust list", true);
    } else if (c->initiator() && gone_addresses.count(c->address()) != 0) {
      c->Close("removed from the peers to dial", true);
    }
  }
  MutexLock lock(&mu);
  dial_addresses = addresses;
  for (const auto& address : ch.addresses_removed) dial_errors.erase(address);
  for (const auto& k : ch.keys_removed) {
    const uint64_t id = NodeIdOfText(k);
    peers.erase(id);
    released.insert(id);
  }
  for (const auto& k : ch.keys_added) {
    const uint64_t id = NodeIdOfText(k);
    if (id == identity->node_id()) continue;
    released.erase(id);
    PeerStatus& p = peers[id];
    p.node_id = id;
    p.public_key = k;
  }
  return ch;
}

Status Node::Impl::ReleaseUntrustedPeers() {
  std::set<uint64_t> trusted;
  for (const auto& key : trust_owned.keys()) trusted.insert(crypto::NodeIdOf(key));
  TIDEMAP_ASSIGN_OR_RETURN(const auto acks, replica->PeerAcks());
  for (const auto& [id, acked] : acks) {
    if (trusted.count(id) != 0 || id == identity->node_id()) continue;
    TIDEMAP_RETURN_IF_ERROR(replica->RemovePeer(id));
    {
      MutexLock lock(&mu);
      released.insert(id);
    }
    const std::string peer = NodeIdToString(id);
    LogEvent(*log, spdlog::level::info, "peer_released", peer,
             "peer " + peer + " is not in the trust list: its oplog cursor (seq " +
                 std::to_string(acked) + ") is released",
             {{"acked", acked}});
  }
  return Status::Ok();
}

Result<PeerChanges> Node::Reconfigure(const TrustList& trust,
                                      const std::vector<std::string>& peers) {
  for (const std::string& peer : peers) {
    TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(peer));
    if (hp.host.empty()) return Status::InvalidArgument("peer address " + peer + ": no host");
  }
  Impl* raw = impl_.get();
  if (raw->stop_called.load()) return Status::Unavailable("the node is stopping");
  auto done = std::make_shared<std::promise<PeerChanges>>();
  std::future<PeerChanges> applied = done->get_future();
  asio::post(raw->io,
             [raw, done, trust, peers] { done->set_value(raw->ApplyPeers(trust, peers)); });
  if (applied.wait_for(Ms(kReconfigureWaitMs)) != std::future_status::ready) {
    return Status::Unavailable("the node's event loop did not answer");
  }
  PeerChanges ch = applied.get();
  for (const auto& k : ch.keys_added) {
    const uint64_t id = NodeIdOfText(k);
    if (id != raw->identity->node_id()) TIDEMAP_RETURN_IF_ERROR(raw->replica->AddPeer(id));
  }
  for (const auto& k : ch.keys_removed) {
    TIDEMAP_RETURN_IF_ERROR(raw->replica->RemovePeer(NodeIdOfText(k)));
  }
  spdlog::logger& log = *raw->log;
  for (const auto& a : ch.addresses_added) {
    LogEvent(log, spdlog::level::info, "peer_address_added", "", "reload: dialing " + a,
             {{"address", a}});
  }
  for (const auto& a : ch.addresses_removed) {
    LogEvent(log, spdlog::level::info, "peer_address_removed", "", "reload: no longer dialing " + a,
             {{"address", a}});
  }
  for (const auto& k : ch.keys_added) {
    LogEvent(log, spdlog::level::info, "peer_trusted", NodeIdToString(NodeIdOfText(k)),
             "reload: trusting " + k, {{"public_key", k}});
  }
  for (const auto& k : ch.keys_removed) {
    LogEvent(log, spdlog::level::info, "peer_untrusted", NodeIdToString(NodeIdOfText(k)),
             "reload: no longer trusting " + k + ": its cursor is released", {{"public_key", k}});
  }
  return ch;
}

}  // namespace tidemap::net
