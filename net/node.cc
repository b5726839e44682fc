// Node::Impl's loops (accept, dial, tick, maintenance) and Node's API. The
// connections are in connection.cc and connection_session.cc.
#include <tidemap/net/node.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include <tidemap/base/crypto.h>
#include <tidemap/base/thread_name.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/net/node_internal.h>

namespace tidemap::net {

using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

// The source address the per-address cap counts by: the IPv4 address (also
// when mapped into IPv6), or the /64 prefix of an IPv6 address, which one
// host typically holds whole.
std::string SourceKey(const asio::ip::address& addr) {
  if (addr.is_v4()) return addr.to_string();
  const asio::ip::address_v6 v6 = addr.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  asio::ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

std::string EndpointText(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  std::string host = addr.to_string();
  if (addr.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

}  // namespace

void LogFailure(spdlog::logger& log, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log.error("event loop task failed: {}", ex.what());
  } catch (...) {
    log.error("event loop task failed");
  }
}

// --- Node::Impl ---

uint64_t Node::Impl::JitteredMs(uint64_t ms) {
  // Uniform in [ms/2, ms]: peers that lost each other at the same moment do
  // not all come back at the same moment.
  std::uniform_int_distribution<uint64_t> d(ms / 2, ms);
  return d(rng);
}

awaitable<void> Node::Impl::AcceptLoop() {
  auto self = shared_from_this();
  while (!stopping) {
    error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(redirect_error(use_awaitable, ec));
    if (stopping) break;
    if (ec) {
      log->warn("accept on {}: {}", options.listen, ec.message());
      // e.g. out of file descriptors: pause rather than spin.
      asio::steady_timer pause(io, Ms(100));
      co_await pause.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    error_code ep_ec;
    const auto remote = socket.remote_endpoint(ep_ec);
    if (ep_ec) continue;  // already reset by the peer: nothing to run
    Admit(std::move(socket), SourceKey(remote.address()), EndpointText(remote));
  }
}

void Node::Impl::Admit(tcp::socket socket, const std::string& host, const std::string& address) {
  HandshakeSlots::Decision d = slots.Admit(host, [this](uint64_t slot) {
    auto it = pending_inbound.find(slot);
    return it == pending_inbound.end() || it->second->Silent();
  });
  if (d.evicted) {
    auto it = pending_inbound.find(*d.evicted);
    if (it != pending_inbound.end()) {
      const std::shared_ptr<Connection> victim = std::move(it->second);
      pending_inbound.erase(it);
      victim->Evict();
    }
  }
  if (!d.admitted) {
    CountRefused(d.refused);
    LogEvent(*log, spdlog::level::warn, "connection_refused", "",
             fmt::format("connection from {} refused: {} handshakes pending ({} from {}), "
                         "none silent",
                         address, slots.taken(), slots.taken_by(host), host),
             {{"direction", "from"}, {"address", address}, {"reason", d.refused}});
    error_code ignored;
    socket.close(ignored);
    return;
  }
  auto conn =
      std::make_shared<Connection>(this, std::move(socket), Handshake::Role::kResponder, address);
  conn->set_slot(d.slot);
  pending_inbound.emplace(d.slot, conn);
  asio::co_spawn(io, conn->Run(conn), [log = log](std::exception_ptr e) { LogFailure(*log, e); });
}

void Node::Impl::ReleaseSlot(uint64_t slot) {
  if (slot == 0) return;
  slots.Release(slot);
  pending_inbound.erase(slot);
}

void Node::Impl::StartDialing(const std::string& address) {
  if (dial_targets.count(address) != 0) return;  // listed twice: one loop
  auto target = std::make_shared<DialTarget>(io, address);
  dial_targets[address] = target;
  asio::co_spawn(io, DialLoop(std::move(target)),
                 [log = log](std::exception_ptr e) { LogFailure(*log, e); });
}

awaitable<void> Node::Impl::DialLoop(std::shared_ptr<DialTarget> target) {
  auto self = shared_from_this();
  const std::string& address = target->address;
  asio::steady_timer& timer = target->timer;
  uint64_t backoff_ms = options.dial_backoff_min_ms;
  while (!stopping && !target->removed) {
    uint64_t wait_ms = 0;
    auto known = address_node.find(address);
    if (known != address_node.end() && established.count(known->second) != 0) {
      // Already connected to that node (it dialed us): check again later.
      wait_ms = options.dial_backoff_max_ms / 4 + 1;
    } else {
      wait_ms = co_await DialOnce(address, timer, &backoff_ms);
    }
    if (stopping || target->removed) break;
    timer.expires_after(Ms(wait_ms));
    error_code ec;
    co_await timer.async_wait(redirect_error(use_awaitable, ec));
  }
}

awaitable<uint64_t> Node::Impl::DialOnce(const std::string& address, asio::steady_timer& timer,
                                         uint64_t* backoff_ms) {
  auto parsed = ParseHostPort(address);
  if (!parsed.ok()) co_return options.dial_backoff_max_ms;  // checked at Start
  tcp::resolver resolver(io);
  error_code ec;
  auto endpoints = co_await resolver.async_resolve(parsed->host, std::to_string(parsed->port),
                                                   redirect_error(use_awaitable, ec));
  // Shared with the connect timeout's handler, which may run after this
  // call has moved the socket on.
  auto socket = std::make_shared<tcp::socket>(io);
  if (!ec) {
    timer.expires_after(Ms(options.handshake_timeout_ms));
    timer.async_wait([socket](const error_code& e) {
      if (!e) {
        error_code ignored;
        socket->close(ignored);
      }
    });
    co_await asio::async_connect(*socket, endpoints, redirect_error(use_awaitable, ec));
    timer.cancel();
  }
  if (stopping) co_return 0;
  if (ec) {
    {
      MutexLock lock(&mu);
      dial_errors[address] = "dial: " + ec.message();
    }
    log->debug("dial {}: {}", address, ec.message());
    const uint64_t wait_ms = JitteredMs(*backoff_ms);
    *backoff_ms = std::min(*backoff_ms * 2, options.dial_backoff_max_ms);
    co_return wait_ms;
  }
  auto conn =
      std::make_shared<Connection>(this, std::move(*socket), Handshake::Role::kInitiator, address);
  co_await conn->Run(conn);
  if (conn->is_established()) {
    MutexLock lock(&mu);
    dial_errors.erase(address);
    *backoff_ms = options.dial_backoff_min_ms;
  } else {
    *backoff_ms = std::min(*backoff_ms * 2, options.dial_backoff_max_ms);
  }
  co_return JitteredMs(*backoff_ms);
}

awaitable<void> Node::Impl::TickLoop() {
  auto self = shared_from_this();
  while (!stopping) {
    tick_timer.expires_after(Ms(options.tick_interval_ms));
    error_code ec;
    co_await tick_timer.async_wait(redirect_error(use_awaitable, ec));
    if (stopping) break;
    const uint64_t now = clock->NowMillis();
    // Copy: Tick may close a connection, which edits the set.
    std::vector<std::shared_ptr<Connection>> snapshot(connections.begin(), connections.end());
    for (auto& c : snapshot) c->Tick(now);
  }
}

namespace {

// What one maintenance round did, for the loop to log.
struct MaintenanceResult {
  Result<PruneStats> pruned = Status::Internal("not run");
  Result<PurgeStats> purged = Status::Internal("not run");
};

}  // namespace

awaitable<void> Node::Impl::MaintenanceLoop() {
  auto self = shared_from_this();
  while (!stopping) {
    maintenance_timer.expires_after(Ms(options.maintenance_interval_ms));
    error_code ec;
    co_await maintenance_timer.async_wait(redirect_error(use_awaitable, ec));
    if (stopping) break;
    const uint64_t now = clock->NowMillis();
    watch_hold.Record(now, replica->LastSeq());
    const uint64_t hold_after = watch_hold.HoldAfter(now);
    // Synced batches of up to thousands of rows: on a worker, never the loop.
    auto round = [r = replica, hold_after, released = released]() -> Result<MaintenanceResult> {
      MaintenanceResult m;
      if (!released.empty()) {
        // A session that was closing when its key was removed may have
        // acknowledged once more, writing the cursor back.
        TIDEMAP_ASSIGN_OR_RETURN(auto acks, r->PeerAcks());
        for (uint64_t id : released) {
          if (acks.count(id) != 0) TIDEMAP_RETURN_IF_ERROR(r->RemovePeer(id));
        }
      }
      m.pruned = r->PruneOplog(hold_after);
      m.purged = r->PurgeTombstones();
      return m;
    };
    Result<MaintenanceResult> done =
        co_await workers.Run(io.get_executor(), std::move(round), use_awaitable);
    if (!done.ok()) {
      LogEvent(*log, spdlog::level::warn, "maintenance_failed", "",
               "oplog prune and tombstone purge: " + done.status().message(),
               {{"error", done.status().message()}});
      continue;
    }
    if (!done->pruned.ok()) {
      LogEvent(*log, spdlog::level::warn, "oplog_prune_failed", "",
               "oplog prune: " + done->pruned.status().message(),
               {{"error", done->pruned.status().message()}});
    } else if (done->pruned->rows_pruned > 0) {
      LogEvent(*log, spdlog::level::info, "oplog_pruned", "",
               fmt::format("oplog pruned {} rows", done->pruned->rows_pruned),
               {{"rows", done->pruned->rows_pruned},
                {"pruned_through", done->pruned->pruned_through},
                {"watch_hold_after", hold_after}});
    }
    if (!done->purged.ok()) {
      LogEvent(*log, spdlog::level::warn, "tombstone_purge_failed", "",
               "tombstone purge: " + done->purged.status().message(),
               {{"error", done->purged.status().message()}});
    } else if (done->purged->purged > 0) {
      const std::string watermark = done->purged->watermark.hlc.ToString();
      LogEvent(
          *log, spdlog::level::info, "tombstones_purged", "",
          fmt::format("purged {} tombstones (GC watermark {})", done->purged->purged, watermark),
          {{"tombstones", done->purged->purged}, {"gc_watermark", watermark}});
    }
  }
}

void Node::Impl::CountRefused(const std::string& reason) {
  MutexLock lock(&mu);
  ++counters.refused_connections[reason];
}

bool Node::Impl::OnEstablished(const std::shared_ptr<Connection>& c) {
  const uint64_t self_id = identity->node_id();
  if (c->initiator()) address_node[c->address()] = c->peer_id();
  auto it = established.find(c->peer_id());
  if (it != established.end() && it->second != c) {
    // Both sides apply the same rule, so they keep the same connection: the
    // one dialed by the lower node id; between two of the same dialer, the newer.
    const std::shared_ptr<Connection> old = it->second;
    const uint64_t old_dialer = old->initiator() ? self_id : old->peer_id();
    const uint64_t new_dialer = c->initiator() ? self_id : c->peer_id();
    if (new_dialer > old_dialer) return false;
    old->Close("replaced by a newer connection", true);
  }
  established[c->peer_id()] = c;
  commits_held.store(false);  // the new connection holds nothing yet
  MutexLock lock(&mu);
  PeerStatus& p = peers[c->peer_id()];
  p.node_id = c->peer_id();
  p.public_key = c->public_key_text();
  p.address = c->address();
  p.connected = true;
  p.last_error.clear();
  return true;
}

void Node::Impl::OnClosed(const std::shared_ptr<Connection>& c) {
  connections.erase(c);
  auto it = established.find(c->peer_id());
  if (it != established.end() && it->second == c) {
    established.erase(it);
    MutexLock lock(&mu);
    auto p = peers.find(c->peer_id());
    if (p != peers.end()) {
      p->second.connected = false;
      p->second.sync_in_progress = false;
    }
  }
}

void Node::Impl::PollAll() {
  // Cleared before the seq is read: a commit whose callback still found the
  // flag set is at or below the seq read here, so the polls below see it.
  poll_posted.store(false);
  polled_seq.store(replica->LastSeq());
  bool held = !established.empty();
  for (auto& [id, c] : established) {
    c->Poll();
    held = held && c->HoldsStreamPoll();
  }
  commits_held.store(held);
}

void Node::Impl::BeginStop() {
  if (stopping) return;
  stopping = true;
  error_code ignored;
  acceptor.close(ignored);
  tick_timer.cancel();
  maintenance_timer.cancel();
  for (auto& [address, t] : dial_targets) t->timer.cancel();
  std::vector<std::shared_ptr<Connection>> snapshot(connections.begin(), connections.end());
  for (auto& c : snapshot) c->Close("node shutting down", true);
}

Status Node::Impl::Listen() {
  TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options.listen));
  error_code ec;
  // An empty host listens on every interface.
  const auto address = hp.host.empty() ? asio::ip::address(asio::ip::address_v6::any())
                                       : asio::ip::make_address(hp.host, ec);
  if (ec) {
    return Status::InvalidArgument("listen address \"" + options.listen + "\": not an IP address");
  }
  const tcp::endpoint endpoint(address, hp.port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::Unavailable("cannot listen on " + options.listen + ": " + ec.message());
  port = acceptor.local_endpoint(ec).port();
  return Status::Ok();
}

// --- Node ---

Node::Node(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Node::~Node() { Stop(); }

Result<std::unique_ptr<Node>> Node::Start(NodeOptions options, Replica* replica,
                                          const Identity* identity, const TrustList* trust,
                                          Clock* clock, std::shared_ptr<spdlog::logger> log) {
  TIDEMAP_CHECK(replica != nullptr && identity != nullptr && trust != nullptr && clock != nullptr);
  if (log == nullptr) {
    log = std::make_shared<spdlog::logger>("tidemap-net",
                                           std::make_shared<spdlog::sinks::null_sink_mt>());
  }
  for (const std::string& peer : options.peers) {
    TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(peer));
    if (hp.host.empty()) return Status::InvalidArgument("peer address " + peer + ": no host");
  }
  auto impl =
      std::make_shared<Impl>(std::move(options), replica, identity, trust, clock, std::move(log));
  if (!impl->options.listen.empty()) TIDEMAP_RETURN_IF_ERROR(impl->Listen());
  // Every trusted key is a known peer from the start: the oplog keeps its
  // rows (up to the retention cap) and tombstones wait for its acknowledgement
  // before they are purged, even while it has never connected.
  for (const auto& key : trust->keys()) {
    const uint64_t id = crypto::NodeIdOf(key);
    if (id == identity->node_id()) continue;
    TIDEMAP_RETURN_IF_ERROR(replica->AddPeer(id));
    MutexLock lock(&impl->mu);
    PeerStatus& p = impl->peers[id];
    p.node_id = id;
    p.public_key = crypto::PublicKeyToText(key);
  }
  TIDEMAP_RETURN_IF_ERROR(impl->ReleaseUntrustedPeers());
  impl->watch_hold.Record(clock->NowMillis(), replica->LastSeq());
  {
    MutexLock lock(&impl->mu);
    impl->dial_addresses = impl->options.peers;
  }
  Impl* raw = impl.get();
  impl->subscription = replica->Subscribe("", [raw](const ChangeEvent& e) {
    // Any thread: coalesce wake-ups into one Poll on the loop. The events of
    // one commit come after the commit, so the PollAll that the first of
    // them woke has read a seq that covers the rest: one wake-up per commit,
    // not per record.
    // While every connection holds its stream Poll for a batch's answer,
    // the answer's job polls: no wake-up either.
    if (e.seq != 0 && (e.seq <= raw->polled_seq.load() || raw->commits_held.load())) return;
    if (!raw->poll_posted.exchange(true)) {
      asio::post(raw->io, [raw] { raw->PollAll(); });
    }
  });
  const auto on_done = [log = impl->log](std::exception_ptr e) { LogFailure(*log, e); };
  if (impl->acceptor.is_open()) asio::co_spawn(impl->io, impl->AcceptLoop(), on_done);
  for (const std::string& peer : impl->options.peers) impl->StartDialing(peer);
  asio::co_spawn(impl->io, impl->TickLoop(), on_done);
  asio::co_spawn(impl->io, impl->MaintenanceLoop(), on_done);
  impl->thread = std::thread([raw] {
    NameThisThread(kEventLoopThreadName);
    try {
      raw->io.run();
    } catch (const std::exception& e) {
      raw->log->critical("event loop stopped: {}", e.what());
    }
  });
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

uint16_t Node::listen_port() const { return impl_->port; }

void Node::RequestDiff() {
  Impl* raw = impl_.get();
  asio::post(raw->io, [raw] {
    for (auto& [id, c] : raw->established) c->RequestDiff();
    raw->PollAll();
  });
}

NetStatus Node::Snapshot() const {
  NetStatus out;
  const uint64_t last_seq = impl_->replica->LastSeq();
  std::map<uint64_t, uint64_t> acks;
  if (auto a = impl_->replica->PeerAcks(); a.ok()) acks = std::move(*a);
  {
    MutexLock lock(&impl_->mu);
    std::map<uint64_t, PeerStatus> peers = impl_->peers;
    for (const auto& [id, seq] : acks) {
      PeerStatus& p = peers[id];
      p.node_id = id;
      p.acked_seq = seq;
    }
    std::set<std::string> addressed;
    for (const auto& [id, p] : peers) addressed.insert(p.address);
    for (auto& [id, p] : peers) {
      if (!p.connected && p.last_error.empty() && !p.address.empty()) {
        auto e = impl_->dial_errors.find(p.address);
        if (e != impl_->dial_errors.end()) p.last_error = e->second;
      }
      out.peers.push_back(p);
    }
    // Configured addresses whose node we have not met yet.
    for (const std::string& address : impl_->dial_addresses) {
      if (addressed.count(address) != 0) continue;
      PeerStatus p;
      p.address = address;
      auto e = impl_->dial_errors.find(address);
      if (e != impl_->dial_errors.end()) p.last_error = e->second;
      out.peers.push_back(std::move(p));
    }
    out.counters = impl_->counters;
  }
  const uint64_t now = impl_->clock->NowMillis();
  for (PeerStatus& p : out.peers) {
    if (p.node_id == 0) continue;
    auto lag = impl_->peer_lag.Count(p.node_id, p.acked_seq, last_seq);
    p.lag = lag.ok() ? *lag : last_seq - std::min(last_seq, p.acked_seq);
    if (p.lag == 0) continue;
    auto rows = impl_->replica->ReadOplog(p.acked_seq, 1);
    if (rows.ok() && !rows->empty()) {
      const uint64_t written_ms = rows->front().version.hlc.physical_ms();
      p.lag_seconds = now > written_ms ? static_cast<double>(now - written_ms) / 1000.0 : 0;
    }
  }
  return out;
}

void Node::Stop() {
  if (impl_->stop_called.exchange(true)) return;
  Impl* raw = impl_.get();
  raw->replica->Unsubscribe(raw->subscription);
  asio::post(raw->io, [raw] { raw->BeginStop(); });
  // Every task ends once its connection has closed (each bounded by
  // close_timeout_ms) and its timer was cancelled; the join below is therefore
  // bounded, with io.stop() as the backstop.
  auto done = std::async(std::launch::async, [raw] {
    if (raw->thread.joinable()) raw->thread.join();
  });
  if (done.wait_for(Ms(raw->options.close_timeout_ms + 1000)) != std::future_status::ready) {
    raw->io.stop();
    done.wait();
  }
  // Session and maintenance jobs still running finish here (their
  // completions, posted to a loop that no longer runs, go with it).
  raw->workers.Join();
  // Connections left in the sets (io.stop() cut them short) hold sockets of
  // this io_context: release them before it goes.
  raw->established.clear();
  raw->connections.clear();
  raw->pending_inbound.clear();
}

}  // namespace tidemap::net
