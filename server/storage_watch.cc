#include "server/storage_watch.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include "base/thread_name.h"

namespace tidemap {

StorageWatch::StorageWatch(Replica* replica, std::shared_ptr<spdlog::logger> log,
                           uint64_t interval_ms)
    : replica_(replica),
      log_(std::move(log)),
      interval_ms_(interval_ms),
      thread_([this] { Run(); }) {}

StorageWatch::~StorageWatch() { Stop(); }

void StorageWatch::Stop() {
  {
    MutexLock l(&mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void StorageWatch::Run() {
  NameThisThread("tidemap-storage");
  while (true) {
    {
      MutexLock l(&mu_);
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms_);
      while (!stopping_ && wake_.WaitUntil(deadline)) {
      }
      if (stopping_) return;
    }
    Check();
  }
}

void StorageWatch::Check() {
  const Status s = replica_->RetryStorage();
  if (!s.ok() && !refused_) {
    refused_ = true;
    refused_since_ = std::chrono::steady_clock::now();
    log_->error("{}", s.message());
  } else if (s.ok() && refused_) {
    refused_ = false;
    const auto seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - refused_since_).count();
    log_->info("storage recovered: writes are accepted again (refused for {:.1f} s)", seconds);
  }
}

}  // namespace tidemap
