// Connection, session side. The SyncSession reads and writes the replica
// (remote applies with their fsync, oplog reads, the scans of a diff), so it
// never runs on the event loop: the loop decrypts a peer's frames into an
// inbox of payloads, hands them to the session in a job on the node's
// WorkerPool, and seals and sends the job's replies when its completion comes
// back to the loop. The job decodes the payloads and encodes the replies (work
// that grows with a batch's records and is spread over the pool's threads), so
// the loop only decrypts, seals and moves bytes. A payload that does
// not decode counts as a decode error and closes the connection at once, as a
// frame that does not decrypt does; the messages before it are handled first.
//
// Order: at most one job per connection is in flight, and a job takes the
// inbox's oldest messages, so the session sees the peer's messages in the
// order they arrived and its replies leave in the order it produced them,
// exactly as if it ran on the loop.
//
// Batching: a Poll for our new oplog rows (after a commit, on the tick, when
// the send queue drained) waits while one of our RecordBatches is neither
// acknowledged nor refused, unless a diff or resync owes its next window.
// The peer's answer arrives as a message, and every job with a peer's
// messages Polls: the commits meanwhile leave in one batch. With nothing in
// flight a Poll runs at once. The session's own in-flight window still bounds
// a backlog's batches. While every connection holds such a Poll, commits do
// not wake the loop (Node::Impl::commits_held); a connection that stops
// holding polls for the rows committed since its last Poll.
//
// Bounds: the inbox holds at most inbox_bytes_max of payload; past it the
// connection stops reading from its peer until a job drains it. Every job's
// replies go to the send queue, whose own bound pauses both reading and Poll.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>
#include <variant>

#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <tidemap/hlc/hlc.h>
#include <tidemap/net/node_internal.h>

namespace tidemap::net {

namespace {

// Encodes `messages` into `out`, in order. Runs on a worker.
Status EncodeReplies(const std::vector<msg::Message>& messages, std::vector<std::string>* out) {
  out->reserve(out->size() + messages.size());
  for (const msg::Message& m : messages) {
    auto payload = EncodeMessage(m);
    if (!payload.ok()) {
      return Status::Internal("cannot encode a message: " + payload.status().message());
    }
    out->push_back(std::move(*payload));
  }
  return Status::Ok();
}

// Counts our record batches the peer has not answered (see
// SessionJobResult::batches_unacked), message by message in the order the
// session saw them.
class BatchWindow {
 public:
  explicit BatchWindow(uint64_t unacked) : unacked_(unacked) {}

  void Received(const msg::Message& m) {
    if (std::holds_alternative<msg::BatchAck>(m.body) && unacked_ > 0) --unacked_;
    if (std::holds_alternative<msg::BatchRefused>(m.body)) unacked_ = 0;
  }
  // Counts the replies appended since the last call.
  void Sent(const std::vector<msg::Message>& replies) {
    for (; counted_ < replies.size(); ++counted_) {
      const msg::Body& b = replies[counted_].body;
      if (std::holds_alternative<msg::RecordBatch>(b)) ++unacked_;
      if (std::holds_alternative<msg::TreeNodes>(b) ||
          std::holds_alternative<msg::BucketSummaries>(b) ||
          std::holds_alternative<msg::DiffRecords>(b) || std::holds_alternative<msg::DiffEnd>(b) ||
          std::holds_alternative<msg::OriginRecords>(b)) {
        windowed_ = true;
      }
    }
  }
  uint64_t unacked() const { return unacked_; }
  bool windowed() const { return windowed_; }

 private:
  uint64_t unacked_;
  size_t counted_ = 0;
  bool windowed_ = false;
};

// Runs `job` on `session`: decodes and hands it the messages in order, then
// RequestDiff and Poll as asked, and encodes the replies. Stops at the first
// failure. Runs on a worker.
SessionJobResult RunJob(SyncSession* session, Clock* clock, SessionJob job) {
  SessionJobResult r;
  std::vector<msg::Message> replies;
  BatchWindow window(job.batches_unacked);
  auto fail = [&](Status status, bool decode_failed) {
    r.status = std::move(status);
    r.receive_failed = true;
    r.decode_failed = decode_failed;
    r.stats = session->stats();
    return std::move(r);
  };
  for (const std::string& payload : job.received) {
    auto m = DecodeMessage(payload, job.limits);
    if (!m.ok()) return fail(m.status(), true);
    Status s = session->Receive(*m, clock->NowMillis(), &replies);
    if (!s.ok()) return fail(std::move(s), false);
    window.Received(*m);
    window.Sent(replies);
  }
  if (job.request_diff) session->RequestDiff();
  if (job.poll) r.status = session->Poll(clock->NowMillis(), &replies);
  window.Sent(replies);
  r.batches_unacked = window.unacked();
  r.stats = session->stats();
  r.windowed = window.windowed() || r.stats.diff_in_progress;
  if (!r.status.ok()) return r;  // closes gracefully, without the replies
  if (Status s = EncodeReplies(replies, &r.replies); !s.ok()) return fail(std::move(s), false);
  return r;
}

}  // namespace

asio::awaitable<Status> Connection::StartSession() {
  session_ = std::make_unique<SyncSession>(node_->replica, peer_id_, node_->options.sync);
  job_running_ = true;
  auto start = [session = session_.get(), clock = node_->clock]() -> Result<SessionJobResult> {
    SessionJobResult r;
    std::vector<msg::Message> replies;
    r.status = session->Start(clock->NowMillis(), &replies);
    r.stats = session->stats();
    if (r.status.ok()) r.status = EncodeReplies(replies, &r.replies);
    return r;
  };
  Result<SessionJobResult> started =
      co_await node_->workers.Run(node_->io.get_executor(), std::move(start), asio::use_awaitable);
  job_running_ = false;
  if (!started.ok()) co_return started.status();
  if (!started->status.ok()) co_return started->status;
  stats_ = started->stats;
  Send(&started->replies);
  Pump();
  co_return Status::Ok();
}

Status Connection::TakeBytes(std::string_view bytes) {
  Status s = channel_->Feed(bytes);
  if (!s.ok()) {
    // A frame failed to decrypt, or its length or place cannot be right. The
    // frames before it are dropped with the connection.
    CountDecodeError();
    return s;
  }
  return HandleFrames();
}

void Connection::CountDecodeError() {
  MutexLock lock(&node_->mu);
  ++node_->counters.decode_errors;
}

Status Connection::HandleFrames() {
  while (true) {
    auto next = channel_->Next();
    if (!next.ok()) {
      CountDecodeError();
      return next.status();
    }
    if (!next->has_value()) break;
    ++frames_in_;
    std::string& payload = **next;
    if (payload.empty()) continue;  // keepalive
    if (closing_) continue;         // draining after our final frame: nothing more to answer
    inbox_bytes_ += payload.size();
    inbox_.push_back(std::move(payload));
    poll_wanted_ = true;  // after a peer's messages, the session may owe more
  }
  Pump();
  PublishStats();
  return Status::Ok();
}

bool Connection::ReadPaused() const {
  return out_queue_bytes_ > node_->options.send_queue_bytes_max ||
         inbox_bytes_ > node_->options.inbox_bytes_max;
}

void Connection::Poll() {
  if (windowed_) {
    poll_wanted_ = true;
  } else {
    stream_poll_wanted_ = true;
  }
  Pump();
}

void Connection::RequestDiff() {
  diff_wanted_ = true;
  Pump();
}

void Connection::Pump() {
  if (job_running_ || !session_ || !established_ || closing_ || socket_closed_) return;
  const bool room = out_queue_bytes_ <= node_->options.send_queue_bytes_max;
  SessionJob job;
  const bool poll_due =
      poll_wanted_ || diff_wanted_ || (stream_poll_wanted_ && batches_unacked_ == 0);
  job.poll = poll_due && room;
  job.request_diff = diff_wanted_;
  job.batches_unacked = batches_unacked_;
  while (!inbox_.empty() && job.received.size() < kSessionJobMessagesMax) {
    inbox_bytes_ -= inbox_.front().size();
    job.received.push_back(std::move(inbox_.front()));
    inbox_.pop_front();
  }
  if (!job.received.empty()) job.limits = node_->options.decode;
  if (job.received.empty() && !job.poll && !job.request_diff) return;
  if (job.poll) poll_wanted_ = stream_poll_wanted_ = false;
  diff_wanted_ = false;
  job_running_ = true;
  job_polls_ = job.poll;
  if (job.poll) polled_upto_ = node_->replica->LastSeq();
  read_resume_.cancel();  // the inbox has room again
  auto run = [session = session_.get(), clock = node_->clock,
              job = std::move(job)]() mutable -> Result<SessionJobResult> {
    return RunJob(session, clock, std::move(job));
  };
  // The completion holds the connection (and so the session) until it runs.
  node_->workers.Run(node_->io.get_executor(), std::move(run),
                     [self = shared_from_this()](Result<SessionJobResult> r) {
                       self->job_running_ = false;
                       if (!r.ok()) {  // the job threw: the session's stats stand
                         SessionJobResult failed;
                         failed.status = r.status();
                         failed.stats = self->stats_;
                         r = std::move(failed);
                       }
                       self->OnJobDone(std::move(*r));
                     });
}

void Connection::OnJobDone(SessionJobResult result) {
  stats_ = result.stats;
  batches_unacked_ = result.batches_unacked;
  if (job_polls_) windowed_ = result.windowed;
  if (!HoldsStreamPoll()) {
    // Commits may have skipped their wake-up while this connection held its
    // Poll. The flag is cleared before the seq is read: a commit whose
    // callback still found it set is at or below the seq read here.
    node_->commits_held.store(false);
    if (node_->replica->LastSeq() > polled_upto_) stream_poll_wanted_ = true;
  }
  if (result.decode_failed) CountDecodeError();
  if (!result.status.ok()) {
    // A failed Receive (or decode, or encode) closes at once, without its
    // replies; a failed Poll closes gracefully.
    inbox_.clear();
    inbox_bytes_ = 0;
    if (result.receive_failed) {
      Close(result.status.message(), false);
    } else {
      const std::string peer = NodeIdToString(peer_id_);
      LogEvent(*node_->log, spdlog::level::warn, "peer_error", peer,
               fmt::format("peer {}: {}", peer, result.status.message()),
               {{"error", result.status.message()}});
      Close(result.status.message(), true);
    }
    PublishStats();
    return;
  }
  Send(&result.replies);
  PublishStats();
  Pump();
}

void Connection::Send(std::vector<std::string>* payloads) {
  for (const std::string& payload : *payloads) {
    std::string frame;
    Status s = channel_->Seal(payload, &frame);
    if (!s.ok()) {
      Close("cannot seal a frame: " + s.message(), false);
      break;
    }
    Enqueue(std::move(frame));
  }
  payloads->clear();
}

}  // namespace tidemap::net
