// Connection, socket side: the handshake, the read and write loops, closing,
// keepalives and the stats it publishes to the node. The session side is in
// connection_session.cc.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <spdlog/spdlog.h>

#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/net/node_internal.h>

namespace tidemap::net {

using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

Status NetError(const error_code& ec, std::string_view what) {
  return Status::Unavailable(std::string(what) + ": " + ec.message());
}

}  // namespace

Connection::Connection(Node::Impl* node, tcp::socket socket, Handshake::Role role,
                       std::string address)
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

awaitable<void> Connection::Run(std::shared_ptr<Connection> self) {
  node_->connections.insert(self);
  last_rx_ms_ = last_tx_ms_ = NowMs();
  Status s = co_await DoHandshake();
  node_->ReleaseSlot(slot_);
  slot_ = 0;
  if (s.ok()) {
    s = co_await RunSession();
  } else {
    ReportRefused(s);
  }
  if (!s.ok() && close_reason_.empty()) close_reason_ = s.message();
  CloseSocket();
  signal_.cancel();
  read_resume_.cancel();
  timer_.cancel();
  if (established_) {
    PublishStats();
    const std::string peer = NodeIdToString(peer_id_);
    const std::string reason = close_reason_.empty() ? "closed" : close_reason_;
    LogEvent(*node_->log, spdlog::level::info, "peer_disconnected", peer,
             fmt::format("peer {} ({}) disconnected: {}", peer, address_, reason),
             {{"address", address_}, {"reason", reason}});
  }
  node_->OnClosed(self);
}

void Connection::ReportRefused(const Status& s) {
  const std::string reason = RefusedReason();
  node_->CountRefused(reason);
  if (initiator()) {
    MutexLock lock(&node_->mu);
    node_->dial_errors[address_] = s.message();
  }
  // Silent connections come and go by the hundred under a flood of idle
  // sockets: their counters say how many, the log only with debug.
  const auto level = reason == "evicted" || reason == "first_message_timeout" ? spdlog::level::debug
                                                                              : spdlog::level::warn;
  const char* direction = initiator() ? "to" : "from";
  LogEvent(*node_->log, level, "connection_refused", "",
           fmt::format("connection {} {}: refused: {}", direction, address_, s.message()),
           {{"direction", direction},
            {"address", address_},
            {"reason", reason},
            {"error", s.message()}});
}

std::string Connection::RefusedReason() const {
  if (!refused_reason_.empty()) return refused_reason_;
  if (handshake_.refused_by_peer()) return "refused_by_peer";
  switch (handshake_.refusal().value_or(RefusalReason::kMalformed)) {
    case RefusalReason::kUntrusted:
      return "untrusted";  // the key is not in the trust list, and only that
    case RefusalReason::kBadSignature:
      return "bad_signature";
    case RefusalReason::kSelf:
      return "self";
    case RefusalReason::kVersion:
      return "version";
    case RefusalReason::kMalformed:
    case RefusalReason::kTooLarge:
      break;
  }
  return "handshake";  // malformed or oversized messages, timeouts, I/O errors
}

bool Connection::Silent() const {
  if (initiator() || handshake_.first_message_received()) return false;
  error_code ec;
  const size_t unread = socket_.available(ec);
  // Unread bytes may complete the hello: an honest peer's hello is often
  // still in the socket when the accept loop asks.
  return ec || unread == 0;
}

void Connection::Evict() {
  cut_reason_ = "evicted: its slot went to a newer connection before its hello came";
  refused_reason_ = "evicted";
  CloseSocket();
}

void Connection::ArmHandshakeTimer(asio::steady_timer::time_point deadline, bool first_message) {
  // Re-arming cancels the previous wait (its handler sees operation_aborted).
  timer_.expires_at(deadline);
  timer_.async_wait([self = shared_from_this(), first_message](const error_code& ec) {
    if (ec || self->established_ || self->socket_closed_) return;
    if (first_message) {
      self->cut_reason_ = "no handshake message within " +
                          std::to_string(self->node_->options.first_message_timeout_ms) + " ms";
      self->refused_reason_ = "first_message_timeout";
    } else {
      self->cut_reason_ = "handshake timed out";
    }
    self->CloseSocket();
  });
}

awaitable<Status> Connection::DoHandshake() {
  const auto started = asio::steady_timer::clock_type::now();
  const NodeOptions& o = node_->options;
  bool first_deadline = !initiator() && o.first_message_timeout_ms > 0 &&
                        o.first_message_timeout_ms < o.handshake_timeout_ms;
  ArmHandshakeTimer(
      started + Ms(first_deadline ? o.first_message_timeout_ms : o.handshake_timeout_ms),
      first_deadline);
  std::string out;
  Status s = handshake_.Start(&out);
  if (!s.ok()) co_return s;
  std::string pending;
  while (true) {
    if (!out.empty()) {
      error_code ec;
      co_await asio::async_write(socket_, asio::buffer(out), redirect_error(use_awaitable, ec));
      if (ec) {
        co_return cut_reason_.empty() ? NetError(ec, "handshake write")
                                      : Status::Unavailable(cut_reason_);
      }
      bytes_out_ += out.size();
      out.clear();
    }
    if (!s.ok() || handshake_.done()) break;
    error_code ec;
    const size_t n = co_await socket_.async_read_some(asio::buffer(read_buf_),
                                                      redirect_error(use_awaitable, ec));
    if (ec) {
      co_return cut_reason_.empty() ? NetError(ec, "handshake read")
                                    : Status::Unavailable(cut_reason_);
    }
    bytes_in_ += n;
    pending.append(read_buf_.data(), n);
    size_t consumed = 0;
    s = handshake_.Feed(pending, &out, &consumed);
    pending.erase(0, consumed);
    if (first_deadline && handshake_.first_message_received()) {
      first_deadline = false;  // the rest of the handshake has the rest of its time
      ArmHandshakeTimer(started + Ms(o.handshake_timeout_ms), false);
    }
  }
  if (!s.ok()) co_return s;
  timer_.cancel();
  leftover_ = std::move(pending);
  co_return Status::Ok();
}

awaitable<Status> Connection::RunSession() {
  auto self = shared_from_this();
  auto channel = handshake_.TakeChannel(node_->options.decode.frame_bytes_max);
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
  const std::string peer = NodeIdToString(peer_id_);
  const char* how = initiator() ? "dialed" : "accepted";
  LogEvent(*node_->log, spdlog::level::info, "peer_connected", peer,
           fmt::format("peer {} ({}) connected, {}", peer, address_, how),
           {{"address", address_}, {"direction", how}, {"public_key", peer_key_text_}});
  Status s = co_await StartSession();
  if (!s.ok()) co_return s;
  asio::co_spawn(node_->io, WriteLoop(self),
                 [log = node_->log](std::exception_ptr e) { LogFailure(*log, e); });
  if (!leftover_.empty()) {
    const std::string first_bytes = std::move(leftover_);
    leftover_.clear();
    s = TakeBytes(first_bytes);
    if (!s.ok()) co_return s;
  }
  co_return co_await ReadLoop();
}

awaitable<Status> Connection::ReadLoop() {
  while (!socket_closed_) {
    if (ReadPaused()) {
      // Backpressure: the peer sends faster than we answer or than the
      // session takes its messages; stop reading until the writer or the
      // session job catches up (each cancels read_resume_).
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
    Status s = TakeBytes(std::string_view(read_buf_.data(), n));
    if (!s.ok()) co_return s;
    if (channel_->peer_closed()) Close("peer closed the connection", true);
  }
  co_return Status::Ok();
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

void Connection::LogSyncDone(const SyncStats& st, double seconds) {
  const bool notable = st.diffs_completed == 1 || seconds >= 1.0;
  const std::string peer = NodeIdToString(peer_id_);
  LogEvent(*node_->log, notable ? spdlog::level::info : spdlog::level::debug, "sync_done", peer,
           fmt::format("peer {}: tree diff done in {:.1f} s ({} records applied, {} sent "
                       "over this connection)",
                       peer, seconds, st.records_applied, st.records_sent),
           {{"seconds", seconds},
            {"records_applied", st.records_applied},
            {"records_sent", st.records_sent},
            {"rounds", st.diffs_completed}});
}

// Moves this connection's counters and its session's progress (as of the
// session's last job) into the node's status map.
void Connection::PublishStats() {
  // A peer whose key a reload removed is gone from the status for good.
  if (!established_ || node_->released.count(peer_id_) != 0) return;
  const SyncStats& st = stats_;
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
    const std::string peer = NodeIdToString(peer_id_);
    LogEvent(*node_->log, spdlog::level::warn, "peer_error", peer,
             fmt::format("peer {}: {}", peer, st.last_error), {{"error", st.last_error}});
  }
  // A diff that began and ended between two publishes took no measurable time.
  if (st.diffs_completed > published_.diffs_completed) LogSyncDone(st, round_seconds);
  p.last_error = !st.last_error.empty() ? st.last_error : close_reason_;
  if (round_done) node_->counters.sync_round_seconds.Observe(round_seconds);
  bytes_in_ = bytes_out_ = frames_in_ = frames_out_ = 0;
  published_ = st;
}

}  // namespace tidemap::net
