#include <tidemap/server/storage_watch.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include <tidemap/net/log_event.h>

namespace tidemap {

StorageWatch::StorageWatch(Replica* replica, std::shared_ptr<spdlog::logger> log,
                           uint64_t interval_ms)
    : replica_(replica),
      log_(std::move(log)),
      interval_ms_(interval_ms),
      thread_("tidemap-storage", interval_ms, [this] { Check(); }) {}

StorageWatch::~StorageWatch() { Stop(); }

void StorageWatch::Stop() { thread_.Stop(); }

void StorageWatch::Check() {
  // Writers may fail and heal between two checks: the counters tell.
  const StorageHealth before = replica_->storage_health();
  if (before.write_errors != seen_write_errors_) {
    seen_write_errors_ = before.write_errors;
    if (!refused_) refused_since_ = std::chrono::steady_clock::now();
    refused_ = true;
    LogEvent(*log_, spdlog::level::err, "storage_error", "",
             fmt::format("storage error: {}; writes are refused until a retry succeeds "
                         "(every {} ms), reads go on",
                         before.last_error, interval_ms_),
             {{"error", before.last_error},
              {"write_errors", before.write_errors},
              {"retry_interval_ms", interval_ms_}});
  }
  if (before.lost_writes_detected != seen_lost_writes_) {
    seen_lost_writes_ = before.lost_writes_detected;
    LogEvent(*log_, spdlog::level::err, "storage_lost_writes", "", before.last_lost_writes,
             {{"detected", before.lost_writes_detected}});
  }
  if (!before.error.empty()) (void)replica_->RetryStorage();
  const StorageHealth after = replica_->storage_health();
  if (after.recoveries != seen_recoveries_) {
    seen_recoveries_ = after.recoveries;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - refused_since_).count();
    LogEvent(*log_, spdlog::level::info, "storage_recovered", "",
             fmt::format("storage recovered: writes are accepted again (refused for about "
                         "{:.1f} s)",
                         seconds),
             {{"refused_seconds", seconds}, {"recoveries", after.recoveries}});
    refused_ = false;
  }
}

}  // namespace tidemap
