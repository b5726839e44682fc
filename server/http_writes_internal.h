// Plain key writes of every connection, committed together (not installed).
//
// A PUT or DELETE of one key without If-Match (a "plain write") is not run on
// the worker pool one by one: the I/O thread queues it here, and one commit
// at a time takes everything queued to a worker, which writes it as one
// WriteBatch (Replica::Write: one group, one fsync in sync mode) and builds
// each request's response. The requests that arrived while a commit ran go
// in the next one. So a burst of N writes costs one hand-off to the pool and
// one back, instead of N of each and the commit queue's wake-ups.
//
// Each request keeps its own answer: when the batch is refused (a limit, a
// bad `ttl`, a quota), its writes are retried one by one, so each gets the
// answer it would have got alone; a storage error (IOError) fails them all,
// as it would each. Ops of one batch commit atomically, which writes that
// share a group commit already do.
//
// The commits run on the coalescer's own commit thread, one at a time, so
// the plain writes reach the replica's commit queue from one thread: in sync
// mode its leader never waits for another thread of the last group to come
// back (replica/commit_queue_internal.h), and the thread stays the same.
//
// A committed write's answer reaches its request as the value its coroutine
// awaits: no timer, no shared state read after the wake-up. The answer of a
// committed write is also serialized on the commit thread (PlainWriteReply),
// so the I/O thread writes those bytes as they are when the connection stays
// open.
//
// Threading: Submit and the completions run on the I/O thread; CommitAll on
// the commit thread. Lifetimes: the replica and the I/O context outlive the
// coalescer; Join() must return, and the coalescer be destroyed, before the
// I/O context is. A PlainWrite belongs to the coalescer (its queue, then the
// commit that holds it); its `waiter` owns the waiting request's coroutine, so
// a write dropped unanswered (the server stopping) destroys that coroutine
// with it, and the coroutine holds no reference back to its PlainWrite.
#ifndef TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http.hpp>

#include <memory>
#include <string>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/net/worker_pool.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// What a plain write's request gets back.
struct PlainWriteResult {
  Status status = Status::Internal("the write was not committed");
  Version version;    // when status is OK
  std::string reply;  // when status is OK: PlainWriteReply(method, version)
};

// Resumes the request waiting on a plain write with its result. Wake posts
// the completion to the waiting coroutine's executor (never runs it inline)
// and is called at most once, on the I/O thread.
class PlainWriteWaiter {
 public:
  virtual ~PlainWriteWaiter() = default;
  virtual void Wake(PlainWriteResult result) = 0;
};

// The waiter of a completion handler `Handler`, callable as void(PlainWriteResult).
template <typename Handler>
class PlainWriteWaiterOf final : public PlainWriteWaiter {
 public:
  explicit PlainWriteWaiterOf(Handler handler) : handler_(std::move(handler)) {}
  void Wake(PlainWriteResult result) override {
    auto ex = boost::asio::get_associated_executor(handler_);
    boost::asio::post(ex, [h = std::move(handler_), r = std::move(result)]() mutable {
      std::move(h)(std::move(r));
    });
  }

 private:
  Handler handler_;
};

// One plain write and, once committed, its result.
struct PlainWrite {
  boost::beast::http::verb method = boost::beast::http::verb::put;  // put or delete_
  std::string map, key, value;
  PutOptions options;  // a PUT's ttl
  // Set by the commit (on the commit thread); handed to `waiter` on the I/O
  // thread once the commit is done.
  PlainWriteResult result;
  std::unique_ptr<PlainWriteWaiter> waiter;  // set before Submit
};

class WriteCoalescer {
 public:
  WriteCoalescer(Replica* replica, boost::asio::io_context* ioc)
      : replica_(replica), commit_thread_(1), ioc_(ioc) {}

  // I/O thread. Queues `w`; a commit starts after the handlers already
  // queued on the loop (so they join it), unless one runs, else when it ends.
  // w->waiter is woken with w->result (on the I/O thread) once committed.
  void Submit(std::shared_ptr<PlainWrite> w);

  // Waits for the commit in flight, if any, and ends the commit thread
  // (its completion is posted to the I/O context). Idempotent.
  void Join() { commit_thread_.Join(); }

 private:
  using Writes = std::vector<std::shared_ptr<PlainWrite>>;
  void StartCommit();  // I/O thread
  // A worker: commits `writes` in batches within the replica's limits and
  // sets each one's result.
  static void CommitAll(Replica* replica, const Writes& writes);
  static void CommitBatch(Replica* replica, const std::vector<PlainWrite*>& batch);

  Replica* const replica_;
  net::WorkerPool commit_thread_;  // one thread
  boost::asio::io_context* const ioc_;
  Writes queued_;              // I/O thread
  bool in_flight_ = false;     // I/O thread
  bool start_posted_ = false;  // I/O thread: a StartCommit is posted to the loop
};

// A plain write's response: 200 {"hlc": ...}, with the ETag of the version
// for a PUT (as HandleKey answers).
boost::beast::http::response<boost::beast::http::string_body> WriteResponse(
    boost::beast::http::verb method, const Version& v);

// The bytes Beast writes for WriteResponse(method, v) on a connection that
// stays open (HTTP/1.1, no Connection header):
//   "HTTP/1.1 200 OK\r\n" "Content-Type: application/json\r\n"
//   ["ETag: " ETag "\r\n", for a PUT] "Content-Length: " N "\r\n" "\r\n" BODY
std::string PlainWriteReply(boost::beast::http::verb method, const Version& v);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_
