// Internals of net::Node shared by its source files (not installed):
//   node.cc               Node::Impl: accept, dial, tick and maintenance loops; Node's API
//   connection.cc         Connection: handshake, socket reads and writes, close, stats
//   connection_session.cc Connection: the SyncSession, driven on the worker pool
//   node_reload.cc        Node::Reconfigure: trust list and dialed addresses at run time
//
// Threading: Node::Impl's loop fields and every Connection belong to the
// event-loop thread. A Connection's SyncSession is touched only by the one
// session job it has in flight (on a worker) or, between jobs, by nobody: the
// loop hands the session to a worker and gets it back with the job's result
// (see Connection::Pump). Node::Impl's `mu` guards what Snapshot reads from
// other threads.
#ifndef TIDEMAP_NET_NODE_INTERNAL_H_
#define TIDEMAP_NET_NODE_INTERNAL_H_

// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_slots.h>
#include <tidemap/net/log_event.h>
#include <tidemap/net/node.h>
#include <tidemap/net/peer_lag.h>
#include <tidemap/net/watch_hold.h>
#include <tidemap/net/worker_pool.h>

namespace tidemap::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

inline std::chrono::milliseconds Ms(uint64_t ms) {
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

// Logs a coroutine that ended by an exception (Asio's, or bad_alloc). Our
// own code reports errors as Status and does not throw.
void LogFailure(spdlog::logger& log, std::exception_ptr e);

// One address a node keeps dialing (a configured peer).
struct DialTarget {
  DialTarget(asio::io_context& io, std::string a) : address(std::move(a)), timer(io) {}
  std::string address;
  asio::steady_timer timer;  // backoff waits and the connect timeout
  bool removed = false;      // ApplyPeers dropped it: its DialLoop ends
};

struct Node::Impl : std::enable_shared_from_this<Node::Impl> {
  Impl(NodeOptions o, Replica* r, const Identity* id, const TrustList* t, Clock* c,
       std::shared_ptr<spdlog::logger> l)
      : options(std::move(o)),
        replica(r),
        identity(id),
        trust_owned(*t),
        clock(c),
        log(std::move(l)),
        slots(options.handshakes_pending_max, options.handshakes_pending_per_address_max),
        rng(std::random_device{}()),
        workers(options.worker_threads) {}

  // Binds and opens the listener on options.listen (before the loop runs).
  Status Listen();

  // --- event-loop thread only ---
  asio::awaitable<void> AcceptLoop();
  // Gives an accepted connection from `host` (its source address as the
  // per-address cap counts it) a pre-handshake slot,
  // closing the silent connection it replaces, and runs it; or refuses it.
  void Admit(tcp::socket socket, const std::string& host, const std::string& address);
  // Frees an inbound connection's slot once its handshake has ended (0: none).
  void ReleaseSlot(uint64_t slot);
  // Keeps `target` dialed until it is removed or the node stops.
  asio::awaitable<void> DialLoop(std::shared_ptr<DialTarget> target);
  // Adds a dial target for `address` and spawns its DialLoop.
  void StartDialing(const std::string& address);
  // Reconfigure's loop side (node_reload.cc): swaps the trust list and the
  // dial targets, closes what was removed, updates the peers' status.
  PeerChanges ApplyPeers(TrustList trust, const std::vector<std::string>& addresses);
  // Start's side of the same (node_reload.cc): forgets every peer the replica
  // keeps a cursor for whose key the trust list does not hold (one taken out
  // of the trust file while the node was stopped), as a reload would.
  Status ReleaseUntrustedPeers();
  // One dial of `address` and, once connected, the connection's whole life.
  // Returns how long to wait before the next dial; updates `backoff_ms`.
  asio::awaitable<uint64_t> DialOnce(const std::string& address, asio::steady_timer& timer,
                                     uint64_t* backoff_ms);
  asio::awaitable<void> TickLoop();
  asio::awaitable<void> MaintenanceLoop();
  // Registers a connection whose handshake completed. False: an older
  // connection with the same peer wins and `c` must close.
  bool OnEstablished(const std::shared_ptr<Connection>& c);
  void OnClosed(const std::shared_ptr<Connection>& c);
  void PollAll();
  uint64_t JitteredMs(uint64_t ms);
  void BeginStop();
  // Adds one to the refusal counter `reason`.
  void CountRefused(const std::string& reason) TIDEMAP_EXCLUDES(mu);

  NodeOptions options;
  Replica* replica;
  const Identity* identity;
  TrustList trust_owned;  // replaced by ApplyPeers on the loop thread
  const TrustList* trust = &trust_owned;
  Clock* clock;
  std::shared_ptr<spdlog::logger> log;

  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer tick_timer{io};
  asio::steady_timer maintenance_timer{io};
  std::map<std::string, std::shared_ptr<DialTarget>> dial_targets;  // by address
  uint16_t port = 0;
  bool stopping = false;
  HandshakeSlots slots;  // pre-handshake slots of inbound connections
  std::map<uint64_t, std::shared_ptr<Connection>> pending_inbound;  // by slot, oldest first
  std::set<std::shared_ptr<Connection>> connections;
  std::map<uint64_t, std::shared_ptr<Connection>> established;
  std::map<std::string, uint64_t> address_node;  // dialed address -> its node id, once known
  std::mt19937_64 rng;
  WatchHold watch_hold{options.watch_retention_ms};
  PeerLag peer_lag{replica};  // for Snapshot, from any thread
  // Node ids whose key ApplyPeers removed from the trust list: each
  // maintenance round releases their cursor again if a late acknowledgement
  // wrote it back.
  std::set<uint64_t> released;

  // --- any thread ---
  // Session jobs and maintenance; joined by Stop() after the loop has ended.
  // Declared after `io`: destroyed first, with no job left.
  WorkerPool workers;
  std::thread thread;
  // Wake-ups of the loop by commits (see PollAll and the subscription in
  // Node::Start): set from when a PollAll is posted until it runs.
  std::atomic<bool> poll_posted{false};
  // The replica's last seq as the latest PollAll read it, after clearing
  // poll_posted: the polls it started cover every change up to it, so the
  // callbacks of those changes need no wake-up of their own. Written by the
  // loop only, so it never decreases.
  std::atomic<uint64_t> polled_seq{0};
  // Set by PollAll when every established connection holds its stream Poll
  // for a batch's answer (Connection::HoldsStreamPoll): the job that handles
  // each answer polls, so commits meanwhile need no wake-up. Cleared by the
  // loop before it reads the last seq, whenever a connection stops holding
  // (Connection::OnJobDone) and when one is established.
  std::atomic<bool> commits_held{false};
  std::atomic<bool> stop_called{false};
  Replica::SubscriptionId subscription = 0;

  mutable Mutex mu;
  std::map<uint64_t, PeerStatus> peers TIDEMAP_GUARDED_BY(mu);            // by node id
  std::map<std::string, std::string> dial_errors TIDEMAP_GUARDED_BY(mu);  // by address
  std::vector<std::string> dial_addresses TIDEMAP_GUARDED_BY(mu);  // options.peers, for Snapshot
  NetCounters counters TIDEMAP_GUARDED_BY(mu);
};

inline constexpr size_t kReadChunkBytes = 64 * 1024;
inline constexpr size_t kWriteChunkBytes = 1 << 20;  // frames gathered into one write
// Messages handed to the session in one job; the rest wait for the next.
inline constexpr size_t kSessionJobMessagesMax = 256;

// What one session job asks of the SyncSession, and what it returns. The
// job decodes what it is handed and encodes its replies, so the loop only
// decrypts, seals and moves frames: a batch's Cap'n Proto work runs on a
// worker, next to the replica work it feeds.
struct SessionJob {
  std::vector<std::string> received;  // frame payloads, decoded and handed to Receive, in order
  DecodeLimits limits;                // for decoding them
  bool request_diff = false;
  bool poll = false;  // then Poll after the messages
  // Our record batches the peer has not answered as the job starts (see
  // Connection::batches_unacked_).
  uint64_t batches_unacked = 0;
};
struct SessionJobResult {
  std::vector<std::string> replies;  // encoded payloads to seal and send, in order
  SyncStats stats;
  // The job's batches_unacked after its messages and replies: plus every
  // RecordBatch among the replies, minus every BatchAck received (not below
  // zero), zero after a BatchRefused (the session rewinds its stream).
  uint64_t batches_unacked = 0;
  // The replies hold a window of a diff or a resync (the next Poll may owe
  // the next one), or a diff is in progress.
  bool windowed = false;
  Status status;                // non-OK: the session must close
  bool receive_failed = false;  // the failure came from a peer's message, or encoding a reply
  bool decode_failed = false;   // ... namely a payload that did not decode (a decode error)
};

// One TCP connection: handshake, then a SyncSession over encrypted frames.
// Owned by shared_ptr from its coroutines, its session job and the node's
// sets; lives on the node's event-loop thread, except its SyncSession (see
// the top of this file).
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Node::Impl* node, tcp::socket socket, Handshake::Role role, std::string address);

  // Runs the connection to its end (returns when it is closed). `self` is
  // this connection: the coroutine frame holds it alive.
  asio::awaitable<void> Run(std::shared_ptr<Connection> self);

  // Closes: `graceful` sends our final frame first and lets the peer answer
  // with its own (bounded by close_timeout_ms); otherwise the socket closes now.
  void Close(const std::string& reason, bool graceful);

  // Timer work: idle timeout, keepalive, sync Poll.
  void Tick(uint64_t now_ms);
  // Asks the session for what is due (a job on the worker pool). While one
  // of our record batches waits for the peer's answer and no diff or resync
  // window is owed, the Poll waits for that answer (whose job polls anyway):
  // the commits meanwhile leave in one batch, not one batch each. With
  // nothing in flight it runs at once, so an isolated write is not delayed.
  void Poll();
  void RequestDiff();
  // True while a Poll waits for the answer to one of our batches (see Poll):
  // the job that handles the answer polls.
  bool HoldsStreamPoll() const { return batches_unacked_ > 0 && !windowed_; }

  // The pre-handshake slot of an inbound connection (set before Run).
  void set_slot(uint64_t slot) { slot_ = slot; }
  // True while an inbound connection has not sent its whole first handshake
  // message, counting bytes that wait unread in the socket as sent.
  bool Silent() const;
  // Closes a silent connection whose slot a newer one took.
  void Evict();

  bool initiator() const { return role_ == Handshake::Role::kInitiator; }
  bool is_established() const { return established_; }
  uint64_t peer_id() const { return peer_id_; }
  const std::string& address() const { return address_; }
  const std::string& public_key_text() const { return peer_key_text_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  // connection.cc
  asio::awaitable<Status> DoHandshake();
  asio::awaitable<Status> RunSession();
  // Reads frames until the socket closes, pausing while the peer has sent
  // more than the session or the send queue can take.
  asio::awaitable<Status> ReadLoop();
  asio::awaitable<void> WriteLoop(std::shared_ptr<Connection> self);
  // Arms timer_ to cut the handshake at `deadline`; `first_message`: the
  // first-message deadline, else the handshake's own.
  void ArmHandshakeTimer(asio::steady_timer::time_point deadline, bool first_message);
  void ReportRefused(const Status& s);
  // The refused_connections reason of a failed handshake.
  std::string RefusedReason() const;
  void Enqueue(std::string frame);
  void CloseSocket();
  void PublishStats();
  // Logs a completed tree diff (sync_done): info for the connection's first
  // (a bootstrap or a repair) and for one of a second or more, else debug.
  void LogSyncDone(const SyncStats& st, double seconds);
  uint64_t NowMs() const { return node_->clock->NowMillis(); }

  // connection_session.cc
  // Creates the session and runs its Start on a worker; sends the opening messages.
  asio::awaitable<Status> StartSession();
  // Feeds bytes received after the handshake to the channel, then HandleFrames.
  // Every frame that fails to decrypt, to parse or to decode is counted in
  // NetCounters::decode_errors (and ends the connection).
  Status TakeBytes(std::string_view bytes);
  // Moves every complete frame's payload from the channel into inbox_, then Pumps.
  Status HandleFrames();
  void CountDecodeError();
  // Starts the next session job unless one is in flight or nothing is due.
  void Pump();
  void OnJobDone(SessionJobResult result);
  // Seals every encoded payload into a frame and queues it; empties *payloads.
  void Send(std::vector<std::string>* payloads);
  bool ReadPaused() const;

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

  // Session work: messages wait here for the next job (at most one in flight).
  std::deque<std::string> inbox_;  // frame payloads, decoded by the job
  size_t inbox_bytes_ = 0;
  bool job_running_ = false;
  bool poll_wanted_ = false;  // a Poll due now (after a peer's messages, or a window owed)
  // A Poll held while batches_unacked_ > 0 (see Poll).
  bool stream_poll_wanted_ = false;
  // Our RecordBatches sent (or queued) that the peer has not yet acknowledged
  // or refused, as of the last job; may undercount (a stale ack), never
  // overcounts while the session lives.
  uint64_t batches_unacked_ = 0;
  bool windowed_ = true;    // the last polling job's SessionJobResult::windowed
  bool job_polls_ = false;  // the job in flight Polls
  // The replica's last seq as the latest polling job started: its Poll
  // covers every row up to it.
  uint64_t polled_upto_ = 0;
  bool diff_wanted_ = false;
  SyncStats stats_{};  // the session's stats as of its last job

  bool established_ = false;
  bool closing_ = false;
  bool final_queued_ = false;
  bool socket_closed_ = false;
  uint64_t slot_ = 0;           // inbound: the pre-handshake slot, until released
  std::string cut_reason_;      // why the handshake was cut (timeout, eviction)
  std::string refused_reason_;  // the refused_connections reason of that cut
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

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_NODE_INTERNAL_H_
