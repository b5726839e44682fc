#include "net/node.h"

// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "base/coding.h"
#include "base/crypto.h"
#include "base/mutex.h"
#include "base/thread_name.h"
#include "hlc/hlc.h"
#include "net/frame.h"
#include "net/handshake.h"

namespace tidemap::net {

namespace asio = boost::asio;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kReadChunkBytes = 64 * 1024;
constexpr size_t kWriteChunkBytes = 1 << 20;  // frames gathered into one write

std::chrono::milliseconds Ms(uint64_t ms) {
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

Status NetError(const error_code& ec, std::string_view what) {
  return Status::Unavailable(std::string(what) + ": " + ec.message());
}

std::string EndpointText(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  std::string host = addr.to_string();
  if (addr.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

// A coroutine ended by an exception (Asio's, or bad_alloc): log it. Our own
// code reports errors as Status and does not throw.
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

}  // namespace

class Connection;

struct Node::Impl : std::enable_shared_from_this<Node::Impl> {
  Impl(NodeOptions o, Replica* r, const Identity* id, const TrustList* t, Clock* c,
       std::shared_ptr<spdlog::logger> l)
      : options(std::move(o)),
        replica(r),
        identity(id),
        trust(t),
        clock(c),
        log(std::move(l)),
        rng(std::random_device{}()) {}

  // --- event-loop thread only ---
  awaitable<void> AcceptLoop();
  awaitable<void> DialLoop(std::string address);
  awaitable<void> TickLoop();
  awaitable<void> MaintenanceLoop();
  // Registers a connection whose handshake completed. False: an older
  // connection with the same peer wins and `c` must close.
  bool OnEstablished(const std::shared_ptr<Connection>& c);
  void OnClosed(const std::shared_ptr<Connection>& c);
  void PollAll();
  uint64_t JitteredMs(uint64_t ms);
  void BeginStop();

  NodeOptions options;
  Replica* replica;
  const Identity* identity;
  const TrustList* trust;
  Clock* clock;
  std::shared_ptr<spdlog::logger> log;

  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer tick_timer{io};
  asio::steady_timer maintenance_timer{io};
  std::vector<std::unique_ptr<asio::steady_timer>> dial_timers;
  uint16_t port = 0;
  bool stopping = false;
  size_t handshakes_pending = 0;
  std::set<std::shared_ptr<Connection>> connections;
  std::map<uint64_t, std::shared_ptr<Connection>> established;
  std::map<std::string, uint64_t> address_node;  // dialed address -> its node id, once known
  std::mt19937_64 rng;

  // --- any thread ---
  std::thread thread;
  std::atomic<bool> poll_posted{false};
  std::atomic<bool> stop_called{false};
  Replica::SubscriptionId subscription = 0;

  mutable Mutex mu;
  std::map<uint64_t, PeerStatus> peers TIDEMAP_GUARDED_BY(mu);            // by node id
  std::map<std::string, std::string> dial_errors TIDEMAP_GUARDED_BY(mu);  // by address
  NetCounters counters TIDEMAP_GUARDED_BY(mu);
};

// One TCP connection: handshake, then a SyncSession over encrypted frames.
// Owned by shared_ptr from its coroutines and the node's sets; lives on the
// node's event-loop thread only.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Node::Impl* node, tcp::socket socket, Handshake::Role role, std::string address)
      : node_(node),
        socket_(std::move(socket)),
        role_(role),
        address_(std::move(address)),
        handshake_(role, HandshakeConfig{std::string(node->identity->secret_key()),
                                         node->identity->public_key(), node->trust}),
        signal_(node->io),
        read_resume_(node->io),
        timer_(node->io) {
    // The sync protocol is request/response (batches wait for acks, a diff
    // descends level by level): Nagle's algorithm would hold each small frame
    // back for the previous one's ACK. Dialed and accepted sockets both come
    // through here. A failure only costs latency, so it is ignored.
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
  }

  // Runs the connection to its end (returns when it is closed). `self` is
  // this connection: the coroutine frame holds it alive.
  awaitable<void> Run(std::shared_ptr<Connection> self);

  // Closes: `graceful` sends our final frame first and lets the peer answer
  // with its own (bounded by close_timeout_ms); otherwise the socket closes now.
  void Close(const std::string& reason, bool graceful);

  // Timer work: idle timeout, keepalive, sync Poll.
  void Tick(uint64_t now_ms);
  void Poll();
  void RequestDiff() {
    if (session_) session_->RequestDiff();
  }

  bool initiator() const { return role_ == Handshake::Role::kInitiator; }
  bool is_established() const { return established_; }
  uint64_t peer_id() const { return peer_id_; }
  const std::string& address() const { return address_; }
  const std::string& public_key_text() const { return peer_key_text_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  awaitable<Status> DoHandshake();
  awaitable<Status> RunSession();
  awaitable<void> WriteLoop(std::shared_ptr<Connection> self);
  Status HandleFrames();
  void Send(std::vector<msg::Message>* messages);
  void Enqueue(std::string frame);
  void CloseSocket();
  void PublishStats();
  uint64_t NowMs() const { return node_->clock->NowMillis(); }

  Node::Impl* node_;
  tcp::socket socket_;
  Handshake::Role role_;
  std::string address_;
  Handshake handshake_;
  std::unique_ptr<SecureChannel> channel_;
  std::unique_ptr<SyncSession> session_;
  std::string leftover_;  // bytes after the handshake: the first frames

  asio::steady_timer signal_;       // wakes the writer (cancel = notify)
  asio::steady_timer read_resume_;  // wakes a reader paused by backpressure
  asio::steady_timer timer_;        // handshake, then close timeout
  std::deque<std::string> out_queue_;
  size_t out_queue_bytes_ = 0;
  std::array<char, kReadChunkBytes> read_buf_{};

  bool established_ = false;
  bool closing_ = false;
  bool final_queued_ = false;
  bool socket_closed_ = false;
  bool timed_out_ = false;
  bool handshake_counted_ = false;
  uint64_t peer_id_ = 0;
  std::string peer_key_text_;
  std::string close_reason_;
  uint64_t last_rx_ms_ = 0;
  uint64_t last_tx_ms_ = 0;
  uint64_t diff_started_ms_ = 0;
  bool diff_was_running_ = false;

  // Counters since the last PublishStats.
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t frames_in_ = 0;
  uint64_t frames_out_ = 0;
  SyncStats published_{};  // session stats as of the last PublishStats
};

// --- Connection ---

awaitable<void> Connection::Run(std::shared_ptr<Connection> self) {
  node_->connections.insert(self);
  if (!initiator()) {
    ++node_->handshakes_pending;
    handshake_counted_ = true;
  }
  last_rx_ms_ = last_tx_ms_ = NowMs();
  Status s = co_await DoHandshake();
  if (handshake_counted_) {
    --node_->handshakes_pending;
    handshake_counted_ = false;
  }
  if (s.ok()) {
    s = co_await RunSession();
  } else {
    const std::string reason = s.IsRefused() ? "untrusted" : "handshake";
    {
      MutexLock lock(&node_->mu);
      ++node_->counters.refused_connections[reason];
      if (initiator()) node_->dial_errors[address_] = s.message();
    }
    node_->log->warn("connection {} {}: refused: {}", initiator() ? "to" : "from", address_,
                     s.message());
  }
  if (!s.ok() && close_reason_.empty()) close_reason_ = s.message();
  CloseSocket();
  signal_.cancel();
  read_resume_.cancel();
  timer_.cancel();
  if (established_) {
    PublishStats();
    node_->log->info("peer {} ({}) disconnected: {}", NodeIdToString(peer_id_), address_,
                     close_reason_.empty() ? "closed" : close_reason_);
  }
  node_->OnClosed(self);
}

awaitable<Status> Connection::DoHandshake() {
  auto self = shared_from_this();
  timer_.expires_after(Ms(node_->options.handshake_timeout_ms));
  timer_.async_wait([self](const error_code& ec) {
    if (!ec && !self->established_) {
      self->timed_out_ = true;
      self->CloseSocket();
    }
  });
  std::string out;
  Status s = handshake_.Start(&out);
  if (!s.ok()) co_return s;
  std::string pending;
  while (true) {
    if (!out.empty()) {
      error_code ec;
      co_await asio::async_write(socket_, asio::buffer(out), redirect_error(use_awaitable, ec));
      if (ec) co_return NetError(ec, "handshake write");
      bytes_out_ += out.size();
      out.clear();
    }
    if (!s.ok() || handshake_.done()) break;
    error_code ec;
    const size_t n = co_await socket_.async_read_some(asio::buffer(read_buf_),
                                                      redirect_error(use_awaitable, ec));
    if (ec) {
      co_return timed_out_ ? Status::Unavailable("handshake timed out")
                           : NetError(ec, "handshake read");
    }
    bytes_in_ += n;
    pending.append(read_buf_.data(), n);
    size_t consumed = 0;
    s = handshake_.Feed(pending, &out, &consumed);
    pending.erase(0, consumed);
  }
  if (!s.ok()) co_return s;
  timer_.cancel();
  leftover_ = std::move(pending);
  co_return Status::Ok();
}

awaitable<Status> Connection::RunSession() {
  auto self = shared_from_this();
  const size_t frame_max = node_->options.decode.frame_bytes_max;
  auto channel = handshake_.TakeChannel(frame_max);
  if (!channel.ok()) co_return channel.status();
  channel_ = std::move(*channel);
  peer_id_ = handshake_.peer_node_id();
  peer_key_text_ = crypto::PublicKeyToText(handshake_.peer_public_key());
  if (!node_->OnEstablished(self)) {
    co_return Status::Refused("a connection with this peer already exists");
  }
  established_ = true;
  {
    MutexLock lock(&node_->mu);
    ++node_->counters.handshakes_completed;
  }
  node_->log->info("peer {} ({}) connected, {}", NodeIdToString(peer_id_), address_,
                   initiator() ? "dialed" : "accepted");

  session_ = std::make_unique<SyncSession>(node_->replica, peer_id_, node_->options.sync);
  std::vector<msg::Message> messages;
  Status s = session_->Start(NowMs(), &messages);
  if (!s.ok()) co_return s;
  Send(&messages);
  asio::co_spawn(node_->io, WriteLoop(self),
                 [log = node_->log](std::exception_ptr e) { LogFailure(*log, e); });

  if (!leftover_.empty()) {
    s = channel_->Feed(leftover_);
    leftover_.clear();
    if (s.ok()) s = HandleFrames();
    if (!s.ok()) co_return s;
  }
  while (!socket_closed_) {
    if (out_queue_bytes_ > node_->options.send_queue_bytes_max) {
      // Backpressure: the peer reads slower than it asks; stop reading until
      // the writer drains (it cancels read_resume_ after every write).
      read_resume_.expires_after(Ms(node_->options.idle_timeout_ms));
      error_code ec;
      co_await read_resume_.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    error_code ec;
    const size_t n = co_await socket_.async_read_some(asio::buffer(read_buf_),
                                                      redirect_error(use_awaitable, ec));
    if (ec) {
      if (channel_->peer_closed() || closing_) co_return Status::Ok();
      co_return ec == asio::error::eof ? Status::Unavailable("stream cut without the final frame")
                                       : NetError(ec, "read");
    }
    bytes_in_ += n;
    last_rx_ms_ = NowMs();
    s = channel_->Feed(std::string_view(read_buf_.data(), n));
    if (s.ok()) s = HandleFrames();
    if (!s.ok()) co_return s;
    if (channel_->peer_closed()) Close("peer closed the connection", true);
  }
  co_return Status::Ok();
}

// Decrypts, decodes and handles every complete frame in the channel.
Status Connection::HandleFrames() {
  std::vector<msg::Message> replies;
  while (true) {
    auto next = channel_->Next();
    if (!next.ok()) {
      MutexLock lock(&node_->mu);
      ++node_->counters.decode_errors;
      return next.status();
    }
    if (!next->has_value()) break;
    ++frames_in_;
    const std::string& payload = **next;
    if (payload.empty()) continue;  // keepalive
    auto message = DecodeMessage(payload, node_->options.decode);
    if (!message.ok()) {
      MutexLock lock(&node_->mu);
      ++node_->counters.decode_errors;
      return message.status();
    }
    if (closing_) continue;  // draining after our final frame: nothing more to answer
    Status s = session_->Receive(*message, NowMs(), &replies);
    if (!s.ok()) return s;
  }
  if (!closing_ && out_queue_bytes_ <= node_->options.send_queue_bytes_max) {
    Status s = session_->Poll(NowMs(), &replies);
    if (!s.ok()) return s;
  }
  Send(&replies);
  PublishStats();
  return Status::Ok();
}

void Connection::Send(std::vector<msg::Message>* messages) {
  for (const auto& m : *messages) {
    auto payload = EncodeMessage(m);
    if (!payload.ok()) {
      Close("cannot encode a message: " + payload.status().message(), false);
      break;
    }
    std::string frame;
    Status s = channel_->Seal(*payload, &frame);
    if (!s.ok()) {
      Close("cannot seal a frame: " + s.message(), false);
      break;
    }
    Enqueue(std::move(frame));
  }
  messages->clear();
}

void Connection::Enqueue(std::string frame) {
  if (socket_closed_ || final_queued_) return;
  out_queue_bytes_ += frame.size();
  out_queue_.push_back(std::move(frame));
  ++frames_out_;
  signal_.cancel();
}

awaitable<void> Connection::WriteLoop(std::shared_ptr<Connection> self) {
  (void)self;  // held by the frame: the connection outlives this loop
  std::string chunk;
  while (!socket_closed_) {
    if (out_queue_.empty()) {
      if (closing_ && final_queued_) {
        // Everything including our final frame is out: half-close, and let
        // the reader wait for the peer's final frame or EOF.
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        break;
      }
      signal_.expires_at(asio::steady_timer::time_point::max());
      error_code ec;
      co_await signal_.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    chunk.clear();
    while (!out_queue_.empty() && chunk.size() < kWriteChunkBytes) {
      chunk += out_queue_.front();
      out_queue_bytes_ -= out_queue_.front().size();
      out_queue_.pop_front();
    }
    error_code ec;
    co_await asio::async_write(socket_, asio::buffer(chunk), redirect_error(use_awaitable, ec));
    if (ec) {
      if (close_reason_.empty()) close_reason_ = "write: " + ec.message();
      CloseSocket();
      break;
    }
    bytes_out_ += chunk.size();
    last_tx_ms_ = NowMs();
    read_resume_.cancel();
    // Room again: the session may have more to send (the next window of a
    // diff's records) without waiting for the next tick.
    if (out_queue_bytes_ <= node_->options.send_queue_bytes_max / 2) Poll();
  }
}

void Connection::Close(const std::string& reason, bool graceful) {
  if (close_reason_.empty()) close_reason_ = reason;
  if (socket_closed_) return;
  if (!graceful || !established_) {
    CloseSocket();
    return;
  }
  if (closing_) return;
  closing_ = true;
  std::string frame;
  if (channel_->SealFinal(&frame).ok()) {
    Enqueue(std::move(frame));
  }
  final_queued_ = true;
  signal_.cancel();
  auto self = shared_from_this();
  timer_.expires_after(Ms(node_->options.close_timeout_ms));
  timer_.async_wait([self](const error_code& ec) {
    if (!ec) self->CloseSocket();
  });
}

void Connection::CloseSocket() {
  if (socket_closed_) return;
  socket_closed_ = true;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  signal_.cancel();
  read_resume_.cancel();
}

void Connection::Poll() {
  if (!established_ || closing_ || socket_closed_) return;
  if (out_queue_bytes_ > node_->options.send_queue_bytes_max) return;
  std::vector<msg::Message> messages;
  Status s = session_->Poll(NowMs(), &messages);
  if (!s.ok()) {
    node_->log->warn("peer {}: {}", NodeIdToString(peer_id_), s.message());
    Close(s.message(), true);
    return;
  }
  Send(&messages);
}

void Connection::Tick(uint64_t now_ms) {
  if (!established_ || socket_closed_) return;
  if (now_ms > last_rx_ms_ + node_->options.idle_timeout_ms) {
    Close("idle timeout: nothing received for " +
              std::to_string(node_->options.idle_timeout_ms / 1000) + " s",
          false);
    return;
  }
  Poll();
  if (!closing_ && out_queue_.empty() &&
      now_ms >= last_tx_ms_ + node_->options.keepalive_interval_ms) {
    std::string frame;
    if (channel_->Seal("", &frame).ok()) Enqueue(std::move(frame));
    last_tx_ms_ = now_ms;
  }
  PublishStats();
}

// Moves this connection's counters and its session's progress into the
// node's status map.
void Connection::PublishStats() {
  if (!established_) return;
  const SyncStats& st = session_->stats();
  const uint64_t now = NowMs();
  bool round_done = false;
  double round_seconds = 0;
  if (st.diff_in_progress && !diff_was_running_) diff_started_ms_ = now;
  if (!st.diff_in_progress && diff_was_running_ &&
      st.diffs_completed > published_.diffs_completed) {
    round_done = true;
    round_seconds = static_cast<double>(now - diff_started_ms_) / 1000.0;
  }
  diff_was_running_ = st.diff_in_progress;
  MutexLock lock(&node_->mu);
  PeerStatus& p = node_->peers[peer_id_];
  p.node_id = peer_id_;
  p.public_key = peer_key_text_;
  if (!address_.empty()) p.address = address_;
  p.connected = !socket_closed_;
  p.bytes_in += bytes_in_;
  p.bytes_out += bytes_out_;
  p.frames_in += frames_in_;
  p.frames_out += frames_out_;
  p.records_sent += st.records_sent - published_.records_sent;
  p.records_applied += st.records_applied - published_.records_applied;
  p.sync_rounds += st.diffs_completed - published_.diffs_completed;
  p.sync_in_progress = st.diff_in_progress && !socket_closed_;
  p.clock_offset_ms = st.peer_clock_offset_ms;
  p.sync_percent = st.sync_percent;
  if (!st.last_error.empty() && st.last_error != published_.last_error) {
    node_->log->warn("peer {}: {}", NodeIdToString(peer_id_), st.last_error);
  }
  p.last_error = !st.last_error.empty() ? st.last_error : close_reason_;
  if (round_done) node_->counters.sync_round_seconds.Observe(round_seconds);
  bytes_in_ = bytes_out_ = frames_in_ = frames_out_ = 0;
  published_ = st;
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
    const std::string address = ep_ec ? "?" : EndpointText(remote);
    if (handshakes_pending >= options.handshakes_pending_max) {
      {
        MutexLock lock(&mu);
        ++counters.refused_connections["busy"];
      }
      log->warn("connection from {} refused: {} handshakes pending", address, handshakes_pending);
      socket.close(ep_ec);
      continue;
    }
    auto conn =
        std::make_shared<Connection>(this, std::move(socket), Handshake::Role::kResponder, address);
    asio::co_spawn(io, conn->Run(conn), [log = log](std::exception_ptr e) { LogFailure(*log, e); });
  }
}

awaitable<void> Node::Impl::DialLoop(std::string address) {
  auto self = shared_from_this();
  auto parsed = ParseHostPort(address);
  if (!parsed.ok()) co_return;  // checked at Start
  const std::string host = parsed->host;
  const uint16_t port_number = parsed->port;
  asio::steady_timer& timer = *dial_timers.emplace_back(std::make_unique<asio::steady_timer>(io));
  tcp::resolver resolver(io);
  uint64_t backoff_ms = options.dial_backoff_min_ms;
  while (!stopping) {
    uint64_t wait_ms = 0;
    auto known = address_node.find(address);
    if (known != address_node.end() && established.count(known->second) != 0) {
      // Already connected to that node (it dialed us): check again later.
      wait_ms = options.dial_backoff_max_ms / 4 + 1;
    } else {
      error_code ec;
      auto endpoints = co_await resolver.async_resolve(host, std::to_string(port_number),
                                                       redirect_error(use_awaitable, ec));
      // Shared with the connect timeout's handler, which may run after this
      // iteration has moved the socket on.
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
      if (stopping) break;
      if (ec) {
        {
          MutexLock lock(&mu);
          dial_errors[address] = "dial: " + ec.message();
        }
        log->debug("dial {}: {}", address, ec.message());
        wait_ms = JitteredMs(backoff_ms);
        backoff_ms = std::min(backoff_ms * 2, options.dial_backoff_max_ms);
      } else {
        auto conn = std::make_shared<Connection>(this, std::move(*socket),
                                                 Handshake::Role::kInitiator, address);
        co_await conn->Run(conn);
        if (conn->is_established()) {
          MutexLock lock(&mu);
          dial_errors.erase(address);
          backoff_ms = options.dial_backoff_min_ms;
        } else {
          backoff_ms = std::min(backoff_ms * 2, options.dial_backoff_max_ms);
        }
        wait_ms = JitteredMs(backoff_ms);
      }
    }
    if (stopping) break;
    timer.expires_after(Ms(wait_ms));
    error_code ec;
    co_await timer.async_wait(redirect_error(use_awaitable, ec));
  }
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

awaitable<void> Node::Impl::MaintenanceLoop() {
  auto self = shared_from_this();
  while (!stopping) {
    maintenance_timer.expires_after(Ms(options.maintenance_interval_ms));
    error_code ec;
    co_await maintenance_timer.async_wait(redirect_error(use_awaitable, ec));
    if (stopping) break;
    auto pruned = replica->PruneOplog();
    if (!pruned.ok()) {
      log->warn("oplog prune: {}", pruned.status().message());
    } else if (pruned->rows_pruned > 0) {
      log->info("oplog pruned {} rows", pruned->rows_pruned);
    }
    auto purged = replica->PurgeTombstones();
    if (!purged.ok()) {
      log->warn("tombstone purge: {}", purged.status().message());
    } else if (purged->purged > 0) {
      log->info("purged {} tombstones (GC watermark {})", purged->purged,
                purged->watermark.hlc.ToString());
    }
  }
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
  poll_posted.store(false, std::memory_order_relaxed);
  for (auto& [id, c] : established) c->Poll();
}

void Node::Impl::BeginStop() {
  if (stopping) return;
  stopping = true;
  error_code ignored;
  acceptor.close(ignored);
  tick_timer.cancel();
  maintenance_timer.cancel();
  for (auto& t : dial_timers) t->cancel();
  std::vector<std::shared_ptr<Connection>> snapshot(connections.begin(), connections.end());
  for (auto& c : snapshot) c->Close("node shutting down", true);
}

// --- Node ---

Node::Node(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Node::~Node() { Stop(); }

Result<std::unique_ptr<Node>> Node::Start(NodeOptions options, Replica* replica,
                                          const Identity* identity, const TrustList* trust,
                                          Clock* clock, std::shared_ptr<spdlog::logger> log) {
  TIDEMAP_CHECK(replica != nullptr && identity != nullptr && trust != nullptr && clock != nullptr &&
                log != nullptr);
  for (const std::string& peer : options.peers) {
    TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(peer));
    if (hp.host.empty()) return Status::InvalidArgument("peer address " + peer + ": no host");
  }
  auto impl =
      std::make_shared<Impl>(std::move(options), replica, identity, trust, clock, std::move(log));
  if (!impl->options.listen.empty()) {
    TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(impl->options.listen));
    error_code ec;
    // An empty host listens on every interface.
    const auto address = hp.host.empty() ? asio::ip::address(asio::ip::address_v6::any())
                                         : asio::ip::make_address(hp.host, ec);
    if (ec) {
      return Status::InvalidArgument("listen address \"" + impl->options.listen +
                                     "\": not an IP address");
    }
    const tcp::endpoint endpoint(address, hp.port);
    impl->acceptor.open(endpoint.protocol(), ec);
    if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) impl->acceptor.bind(endpoint, ec);
    if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status::Unavailable("cannot listen on " + impl->options.listen + ": " + ec.message());
    }
    impl->port = impl->acceptor.local_endpoint(ec).port();
  }
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
  Impl* raw = impl.get();
  impl->subscription = replica->Subscribe("", [raw](const ChangeEvent&) {
    // Any thread: coalesce wake-ups into one Poll on the loop.
    if (!raw->poll_posted.exchange(true, std::memory_order_relaxed)) {
      asio::post(raw->io, [raw] { raw->PollAll(); });
    }
  });
  const auto on_done = [log = impl->log](std::exception_ptr e) { LogFailure(*log, e); };
  if (impl->acceptor.is_open()) asio::co_spawn(impl->io, impl->AcceptLoop(), on_done);
  for (const std::string& peer : impl->options.peers) {
    asio::co_spawn(impl->io, impl->DialLoop(peer), on_done);
  }
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
    for (const std::string& address : impl_->options.peers) {
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
    p.lag = last_seq > p.acked_seq ? last_seq - p.acked_seq : 0;
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
  // Connections left in the sets (io.stop() cut them short) hold sockets of
  // this io_context: release them before it goes.
  raw->established.clear();
  raw->connections.clear();
}

}  // namespace tidemap::net
