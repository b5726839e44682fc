#include <tidemap/server/periodic_thread.h>

#include <chrono>
#include <utility>

#include <tidemap/base/thread_name.h>

namespace tidemap {

PeriodicThread::PeriodicThread(std::string name, uint64_t interval_ms, std::function<void()> task)
    : name_(std::move(name)),
      interval_ms_(interval_ms),
      task_(std::move(task)),
      thread_([this] { Run(); }) {}

PeriodicThread::~PeriodicThread() { Stop(); }

void PeriodicThread::Stop() {
  {
    MutexLock l(&mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void PeriodicThread::Run() {
  NameThisThread(name_);
  while (true) {
    {
      MutexLock l(&mu_);
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms_);
      while (!stopping_ && wake_.WaitUntil(deadline)) {
      }
      if (stopping_) return;
    }
    task_();
  }
}

}  // namespace tidemap
