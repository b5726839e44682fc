#include <tidemap/server/expire_sweep.h>

#include <spdlog/spdlog.h>

#include <utility>

namespace tidemap {

ExpireSweep::ExpireSweep(Replica* replica, std::shared_ptr<spdlog::logger> log,
                         uint64_t interval_ms)
    : replica_(replica),
      log_(std::move(log)),
      thread_("tidemap-expire", interval_ms, [this] { Sweep(); }) {}

ExpireSweep::~ExpireSweep() { Stop(); }

void ExpireSweep::Stop() { thread_.Stop(); }

void ExpireSweep::Sweep() {
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

}  // namespace tidemap
