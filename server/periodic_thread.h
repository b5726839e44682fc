// PeriodicThread: a task run on a thread of its own once per interval (the
// first run one interval after construction) until stopped. The daemon's
// watches (storage_watch.h, expire_sweep.h) are built on it.
//
// Threading: `task` runs on the thread only, never two at once. Stop (or the
// destructor) wakes the thread, waits for a running task to return and joins
// it; it is idempotent and may be called from any thread but the task's.
#ifndef TIDEMAP_SERVER_PERIODIC_THREAD_H_
#define TIDEMAP_SERVER_PERIODIC_THREAD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include <tidemap/base/mutex.h>

namespace tidemap {

class PeriodicThread {
 public:
  // `name` names the thread (base/thread_name.h).
  PeriodicThread(std::string name, uint64_t interval_ms, std::function<void()> task);
  ~PeriodicThread();  // Stop()
  PeriodicThread(const PeriodicThread&) = delete;
  PeriodicThread& operator=(const PeriodicThread&) = delete;

  void Stop();

 private:
  void Run();

  const std::string name_;
  const uint64_t interval_ms_;
  const std::function<void()> task_;
  Mutex mu_;
  CondVar wake_{&mu_};
  bool stopping_ TIDEMAP_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_PERIODIC_THREAD_H_
