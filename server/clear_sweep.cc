#include <tidemap/server/clear_sweep.h>

#include <spdlog/spdlog.h>

#include <utility>

namespace tidemap {

namespace {

// Record rows one batch visits (each batch holds the commit lock), and the
// batches of one round.
constexpr size_t kRowsPerBatch = 10'000;
constexpr int kBatchesPerRound = 20;

}  // namespace

ClearSweep::ClearSweep(Replica* replica, std::shared_ptr<spdlog::logger> log, uint64_t interval_ms)
    : replica_(replica),
      log_(std::move(log)),
      thread_("tidemap-clear", interval_ms, [this] { Sweep(); }) {}

ClearSweep::~ClearSweep() { Stop(); }

void ClearSweep::Stop() { thread_.Stop(); }

void ClearSweep::Sweep() {
  for (int batch = 0; batch < kBatchesPerRound; ++batch) {
    Result<ClearRemoval> r = replica_->RemoveClearedRecords(kRowsPerBatch);
    if (!r.ok()) {
      // A storage error is the storage watch's to report at length.
      if (r.status().message() != last_error_) {
        last_error_ = r.status().message();
        log_->warn("clear sweep: {}", last_error_);
      }
      return;
    }
    last_error_.clear();
    removed_ += r->removed;
    if (r->maps_pending == 0) {
      if (removed_ != 0)
        log_->info("cleared maps: removed {} records older than their map's clear", removed_);
      removed_ = 0;
      return;
    }
  }
}

}  // namespace tidemap
