// Connection, session side. The SyncSession reads and writes the replica
// (remote applies with their fsync, oplog reads, the scans of a diff), so it
// never runs on the event loop: the loop decodes a peer's frames into an
// inbox, hands them to the session in a job on the node's WorkerPool, and
// sends the job's replies when its completion comes back to the loop.
//
// Order: at most one job per connection is in flight, and a job takes the
// inbox's oldest messages, so the session sees the peer's messages in the
// order they arrived and its replies leave in the order it produced them,
// exactly as if it ran on the loop.
//
// Bounds: the inbox holds at most inbox_bytes_max of payload; past it the
// connection stops reading from its peer until a job drains it. Every job's
// replies go to the send queue, whose own bound pauses both reading and Poll.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <tidemap/hlc/hlc.h>
#include <tidemap/net/node_internal.h>

namespace tidemap::net {

namespace {

// Runs `job` on `session`: the messages in order, then RequestDiff and Poll
// as asked. Stops at the first failure. Runs on a worker.
SessionJobResult RunJob(SyncSession* session, Clock* clock, SessionJob job) {
  SessionJobResult r;
  for (const msg::Message& m : job.received) {
    r.status = session->Receive(m, clock->NowMillis(), &r.replies);
    if (!r.status.ok()) {
      r.receive_failed = true;
      r.stats = session->stats();
      return r;
    }
  }
  if (job.request_diff) session->RequestDiff();
  if (job.poll) r.status = session->Poll(clock->NowMillis(), &r.replies);
  r.stats = session->stats();
  return r;
}

}  // namespace

asio::awaitable<Status> Connection::StartSession() {
  session_ = std::make_unique<SyncSession>(node_->replica, peer_id_, node_->options.sync);
  job_running_ = true;
  auto start = [session = session_.get(), clock = node_->clock]() -> Result<SessionJobResult> {
    SessionJobResult r;
    r.status = session->Start(clock->NowMillis(), &r.replies);
    r.stats = session->stats();
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
    const std::string& payload = **next;
    if (payload.empty()) continue;  // keepalive
    auto message = DecodeMessage(payload, node_->options.decode);
    if (!message.ok()) {
      CountDecodeError();
      return message.status();
    }
    if (closing_) continue;  // draining after our final frame: nothing more to answer
    inbox_.push_back(std::move(*message));
    inbox_sizes_.push_back(payload.size());
    inbox_bytes_ += payload.size();
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
  poll_wanted_ = true;
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
  job.poll = poll_wanted_ && room;
  job.request_diff = diff_wanted_;
  while (!inbox_.empty() && job.received.size() < kSessionJobMessagesMax) {
    job.received.push_back(std::move(inbox_.front()));
    inbox_.pop_front();
    inbox_bytes_ -= inbox_sizes_.front();
    inbox_sizes_.pop_front();
  }
  if (job.received.empty() && !job.poll && !job.request_diff) return;
  if (job.poll) poll_wanted_ = false;
  diff_wanted_ = false;
  job_running_ = true;
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
  if (!result.status.ok()) {
    // A failed Receive closes at once, without its replies; a failed Poll
    // closes gracefully.
    inbox_.clear();
    inbox_sizes_.clear();
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

}  // namespace tidemap::net
