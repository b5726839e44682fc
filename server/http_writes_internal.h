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
// Threading: Submit and the completions run on the I/O thread; CommitAll on
// the commit thread. Lifetimes: the replica and the I/O context outlive the
// coalescer; Join() must return before the I/O context is destroyed; a
// PlainWrite is shared between its request's coroutine and the commit that
// holds it; `wake` points into that coroutine's frame and is used only on the
// I/O thread while the request waits on it.
#ifndef TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>

#include <memory>
#include <string>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/net/worker_pool.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// One plain write and, once committed, its response.
struct PlainWrite {
  boost::beast::http::verb method = boost::beast::http::verb::put;  // put or delete_
  std::string map, key, value;
  PutOptions options;  // a PUT's ttl
  // Set by the commit (on a worker), read on the I/O thread once `finished`.
  Result<boost::beast::http::response<boost::beast::http::string_body>> result =
      Status::Internal("the write was not committed");
  bool finished = false;                      // I/O thread
  boost::asio::steady_timer* wake = nullptr;  // cancelled when finished
};

class WriteCoalescer {
 public:
  WriteCoalescer(Replica* replica, boost::asio::io_context* ioc)
      : replica_(replica), commit_thread_(1), ioc_(ioc) {}

  // I/O thread. Queues `w`; a commit starts after the handlers already
  // queued on the loop (so they join it), unless one runs, else when it ends. w->wake is cancelled
  // (on the I/O thread) when w->result is set.
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

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_WRITES_INTERNAL_H_
