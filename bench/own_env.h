// An Env for benchmarks that run more than one database in a process.
#ifndef TIDEMAP_BENCH_OWN_ENV_H_
#define TIDEMAP_BENCH_OWN_ENV_H_

#include <leveldb/env.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include <tidemap/base/thread_name.h>

namespace tidemap::bench {

// LevelDB's default Env runs the background work (memtable flushes,
// compactions) of every database in the process on one thread. This one
// gives a database a thread of its own, as a database alone in its process
// has: two databases measured side by side then never wait behind each
// other's compactions.
class OwnCompactionThreadEnv : public leveldb::EnvWrapper {
 public:
  // What the thread is called, for telling its CPU time apart.
  static constexpr const char* kThreadName = "bench-compact";

  OwnCompactionThreadEnv() : leveldb::EnvWrapper(leveldb::Env::Default()) {
    thread_ = std::thread([this] {
      NameThisThread(kThreadName);
      Run();
    });
  }
  ~OwnCompactionThreadEnv() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void Schedule(void (*fn)(void*), void* arg) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(fn, arg);
    }
    cv_.notify_one();
  }

 private:
  // Runs the scheduled work in order (LevelDB expects one item at a time),
  // until stopped with nothing left.
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      const auto [fn, arg] = queue_.front();
      queue_.pop_front();
      lock.unlock();
      fn(arg);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<void (*)(void*), void*>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tidemap::bench

#endif  // TIDEMAP_BENCH_OWN_ENV_H_
