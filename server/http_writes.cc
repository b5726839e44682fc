// The write coalescer of plain key writes (see http_writes_internal.h).
#include <tidemap/server/http_writes_internal.h>

#include <boost/asio/post.hpp>

#include <algorithm>

#include <tidemap/server/http_internal.h>

namespace tidemap {

namespace {

// Writes per batch: a commit of this many is long past the point where a
// batch's fixed costs are shared, and keeps one refused write's retry short.
constexpr size_t kWritesPerBatchMax = 1024;

// Records that `w` was committed at `v`, with the bytes of its answer.
void SetCommitted(PlainWrite* w, const Version& v) {
  w->result.status = Status::Ok();
  w->result.version = v;
  w->result.reply = PlainWriteReply(w->method, v);
}

// A write's answer body, {"hlc": "..."} as JsonResponse writes it: the
// printable HLC needs no escaping.
std::string WriteBody(const Version& v) { return "{\"hlc\":\"" + v.hlc.ToString() + "\"}"; }

}  // namespace

Response WriteResponse(http::verb method, const Version& v) {
  Response res = MakeResponse(http::status::ok, WriteBody(v), "application/json");
  if (method == http::verb::put) res.set(http::field::etag, ETagOf(v));
  return res;
}

std::string PlainWriteReply(http::verb method, const Version& v) {
  const std::string body = WriteBody(v);
  std::string out;
  out.reserve(160 + body.size());
  out += "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
  if (method == http::verb::put) {
    out += "ETag: ";
    out += ETagOf(v);
    out += "\r\n";
  }
  out += "Content-Length: ";
  out += std::to_string(body.size());
  out += "\r\n\r\n";
  out += body;
  return out;
}

void WriteCoalescer::Submit(std::shared_ptr<PlainWrite> w) {
  queued_.push_back(std::move(w));
  if (in_flight_ || start_posted_) return;
  // Started once the handlers already queued on the loop have run: the
  // requests read in this round of the loop join the same commit.
  start_posted_ = true;
  boost::asio::post(*ioc_, [this] {
    start_posted_ = false;
    if (!in_flight_ && !queued_.empty()) StartCommit();
  });
}

void WriteCoalescer::StartCommit() {
  in_flight_ = true;
  auto writes = std::make_shared<Writes>();
  writes->swap(queued_);
  auto commit = [replica = replica_, writes] {
    CommitAll(replica, *writes);
    return Status::Ok();
  };
  commit_thread_.Run(ioc_->get_executor(), std::move(commit), [this, writes](const Status&) {
    for (const auto& w : *writes) {
      if (w->waiter != nullptr) w->waiter->Wake(std::move(w->result));
      w->waiter.reset();
    }
    in_flight_ = false;
    if (!queued_.empty()) StartCommit();
  });
}

void WriteCoalescer::CommitAll(Replica* replica, const Writes& writes) {
  const Limits& limits = replica->limits();
  const size_t per_batch = std::max<size_t>(1, std::min(kWritesPerBatchMax, limits.batch_ops_max));
  std::vector<PlainWrite*> batch;
  size_t bytes = 0;
  for (const auto& w : writes) {
    const size_t n = w->map.size() + w->key.size() + w->value.size();
    if (!batch.empty() && (batch.size() == per_batch || bytes + n > limits.batch_bytes_max)) {
      CommitBatch(replica, batch);
      batch.clear();
      bytes = 0;
    }
    batch.push_back(w.get());
    bytes += n;
  }
  if (!batch.empty()) CommitBatch(replica, batch);
}

void WriteCoalescer::CommitBatch(Replica* replica, const std::vector<PlainWrite*>& batch) {
  WriteBatch b;
  for (const PlainWrite* w : batch) {
    if (w->method == http::verb::put) {
      b.Put(w->map, w->key, w->value, w->options);
    } else {
      b.Delete(w->map, w->key);
    }
  }
  Result<std::vector<Version>> versions = replica->Write(b);
  if (versions.ok()) {
    for (size_t i = 0; i < batch.size(); ++i) SetCommitted(batch[i], (*versions)[i]);
    return;
  }
  if (batch.size() == 1 || versions.status().IsIOError()) {
    for (PlainWrite* w : batch) w->result.status = versions.status();
    return;
  }
  // One write (or the batch's size) was refused: each on its own, for its own answer.
  for (PlainWrite* w : batch) {
    Result<Version> v = w->method == http::verb::put
                            ? replica->Put(w->map, w->key, w->value, w->options)
                            : replica->Delete(w->map, w->key);
    if (v.ok()) {
      SetCommitted(w, *v);
    } else {
      w->result.status = v.status();
    }
  }
}

}  // namespace tidemap
