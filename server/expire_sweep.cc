#include <tidemap/server/expire_sweep.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include <tidemap/base/thread_name.h>

namespace tidemap {

ExpireSweep::ExpireSweep(Replica* replica, std::shared_ptr<spdlog::logger> log,
                         uint64_t interval_ms)
    : replica_(replica),
      log_(std::move(log)),
      interval_ms_(interval_ms),
      thread_([this] { Run(); }) {}

ExpireSweep::~ExpireSweep() { Stop(); }

void ExpireSweep::Stop() {
  {
    MutexLock l(&mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void ExpireSweep::Run() {
  NameThisThread("tidemap-expire");
  while (true) {
    {
      MutexLock l(&mu_);
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms_);
      while (!stopping_ && wake_.WaitUntil(deadline)) {
      }
      if (stopping_) return;
    }
    // A storage error is the storage watch's to report at length; a repeat
    // of the same one is not logged again.
    Result<ExpireStats> r = replica_->ExpireRecords();
    if (!r.ok() && r.status().message() != last_error_) {
      last_error_ = r.status().message();
      log_->warn("expiry sweep: {}", last_error_);
    } else if (r.ok()) {
      last_error_.clear();
    }
  }
}

}  // namespace tidemap
