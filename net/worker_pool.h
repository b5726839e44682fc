// WorkerPool: the one place where an event loop's blocking work runs. The
// transport (net::Node) and the HTTP server (server/http.cc) both own one:
// their I/O threads own every connection and never block, and whatever may
// wait on the disk (LevelDB writes, fsync, oplog prune, tombstone purge, the
// scans a diff asks for, remote applies) goes through Run() to a worker, whose
// result comes back to the loop as a posted completion.
//
// Contract of Run(loop, fn, token):
//   - `fn` runs on one of the pool's threads and returns R, a Status or a
//     Result<T> (or any type constructible from a Status): an exception that
//     escapes it becomes Status::Internal.
//   - the completion (a coroutine awaiting with asio::use_awaitable, or a
//     handler `void(R)`) runs on `loop`, never inline in Run, and never on a
//     worker, so it may touch state owned by the loop.
//   - the loop counts as busy until the completion is posted: its
//     io_context::run() does not return while a job is out.
//   - jobs run concurrently and in no particular order: a caller that needs
//     order (a peer's messages) keeps at most one job of that kind in flight.
//
// Lifetime: Join() waits for every job submitted so far and ends the threads;
// completions already posted to a loop that no longer runs are destroyed with
// that loop's io_context. Whatever `fn` borrows must outlive Join().
// Thread-safe: Run may be called from any thread until Join().
//
// Header-only so that server/ reuses it without net/ growing a compiled
// dependency on anything above it; Asio stays inside net/ and server/ .cc files
// and this header.
#ifndef TIDEMAP_NET_WORKER_POOL_H_
#define TIDEMAP_NET_WORKER_POOL_H_

// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <cstddef>
#include <exception>
#include <string>
#include <type_traits>

#include <tidemap/base/status.h>

namespace tidemap::net {

class WorkerPool {
 public:
  // `threads` >= 1 (0 is taken as 1).
  explicit WorkerPool(size_t threads) : pool_(threads == 0 ? 1 : threads) {}
  ~WorkerPool() { Join(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `fn` on a worker and completes `token` with its result on `loop`.
  // See the contract at the top of this file.
  template <typename Executor, typename Fn, typename Token>
  auto Run(const Executor& loop, Fn fn, Token&& token) {
    using R = std::invoke_result_t<Fn&>;
    auto initiation = [this, loop](auto handler, Fn f) {
      // The guard keeps the loop running (io_context::run does not return)
      // until the completion is posted to it.
      auto work = boost::asio::make_work_guard(loop);
      boost::asio::post(pool_, [work = std::move(work), f = std::move(f),
                                handler = std::move(handler)]() mutable {
        R result = Invoke<R>(f);
        boost::asio::post(work.get_executor(),
                          [handler = std::move(handler), result = std::move(result)]() mutable {
                            std::move(handler)(std::move(result));
                          });
      });
    };
    return boost::asio::async_initiate<Token, void(R)>(std::move(initiation), token, std::move(fn));
  }

  // Waits for every job submitted so far, then ends the threads. Idempotent.
  void Join() { pool_.join(); }

 private:
  template <typename R, typename Fn>
  static R Invoke(Fn& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      return R(Status::Internal(std::string("unexpected exception in a worker: ") + e.what()));
    } catch (...) {
      return R(Status::Internal("unexpected exception in a worker"));
    }
  }

  boost::asio::thread_pool pool_;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_WORKER_POOL_H_
