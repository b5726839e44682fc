#include <tidemap/server/quota_ladder.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include <tidemap/net/log_event.h>
#include <tidemap/server/size.h>

namespace tidemap {

namespace {

uint64_t SteadyMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

std::string UsageText(const StorageUsage& u) {
  if (u.disk_full) return FormatSizeBytes(u.used_bytes) + " used, the file system is full";
  if (u.quota_bytes == 0) return FormatSizeBytes(u.used_bytes) + " used, no quota";
  return FormatSizeBytes(u.used_bytes) + " used of a " + FormatSizeBytes(u.quota_bytes) + " quota";
}

// Logs the state `u` changed to.
void LogStateChange(spdlog::logger& log, const StorageUsage& u) {
  const std::string state(StorageStateName(u.state));
  std::string text = "storage state " + state + ": " + UsageText(u);
  if (u.state == StorageState::kFull) {
    text += "; writes that add data are refused (quota_exceeded), reads and deletes go on";
  } else if (u.state == StorageState::kPruning) {
    text += "; freeing space (oplog prune, purge, compaction)";
  }
  const auto level = u.state == StorageState::kFull      ? spdlog::level::err
                     : u.state == StorageState::kPruning ? spdlog::level::warn
                                                         : spdlog::level::info;
  LogEvent(log, level, "storage_quota_state", "", text,
           {{"state", state}, {"used_bytes", u.used_bytes}, {"quota_bytes", u.quota_bytes}});
}

}  // namespace

QuotaLadder::QuotaLadder(Replica* replica, std::shared_ptr<spdlog::logger> log,
                         QuotaLadderOptions options)
    : replica_(replica),
      log_(std::move(log)),
      options_(std::move(options)),
      // The callback owns what it uses: a Deliver that copied it may still
      // call it after Unsubscribe returned.
      subscription_(replica->Subscribe("",
                                       [log = log_](const ChangeEvent& e) {
                                         if (e.kind == ChangeKind::kQuota)
                                           LogStateChange(*log, e.storage);
                                       })),
      thread_("tidemap-quota", options_.interval_ms, [this] { Check(); }) {}

QuotaLadder::~QuotaLadder() { Stop(); }

void QuotaLadder::Stop() {
  thread_.Stop();
  if (subscription_ != 0) replica_->Unsubscribe(subscription_);
  subscription_ = 0;
}

void QuotaLadder::SetQuota(uint64_t quota_bytes) {
  replica_->SetStorageQuota(quota_bytes);
  const StorageUsage u = replica_->storage_usage();
  LogEvent(
      *log_, spdlog::level::info, "storage_quota_set", "",
      "storage quota set: " + UsageText(u) + ", state " + std::string(StorageStateName(u.state)),
      {{"quota_bytes", u.quota_bytes},
       {"used_bytes", u.used_bytes},
       {"state", StorageStateName(u.state)}});
}

void QuotaLadder::Check() {
  const StorageUsage u = replica_->MeasureStorage();
  if (u.state == StorageState::kOk || u.quota_bytes == 0) return;
  const uint64_t now = SteadyMs();
  if (now < next_ladder_ms_) return;
  const StorageUsage after = RunLadder();
  // A ladder that freed nothing waits twice as long before the next one
  // (up to 12 intervals): repeating it would only repeat its log lines.
  ladder_backoff_ =
      after.used_bytes < u.used_bytes ? 1 : std::min<uint64_t>(ladder_backoff_ * 2, 12);
  next_ladder_ms_ = SteadyMs() + options_.ladder_interval_ms * ladder_backoff_;
}

StorageUsage QuotaLadder::RunLadder() {
  const StorageUsage before = replica_->storage_usage();
  PruneOplog();
  auto purged = replica_->PurgeTombstones();
  if (!purged.ok()) {
    LogEvent(*log_, spdlog::level::warn, "quota_purge_failed", "",
             "storage quota: purge failed: " + purged.status().message(),
             {{"error", purged.status().message()}});
  } else {
    LogEvent(*log_, spdlog::level::info, "quota_purged", "",
             fmt::format("storage quota: purged {} expired records and {} tombstones",
                         purged->expired_purged, purged->purged - purged->expired_purged),
             {{"expired", purged->expired_purged},
              {"tombstones", purged->purged - purged->expired_purged},
              {"unacknowledged", purged->unacknowledged}});
  }
  replica_->Compact();
  const StorageUsage after = replica_->MeasureStorage();
  LogEvent(*log_, spdlog::level::info, "quota_compacted", "",
           "storage quota: compacted; " + UsageText(after) + " (was " +
               FormatSizeBytes(before.used_bytes) + "), state " +
               std::string(StorageStateName(after.state)),
           {{"used_bytes", after.used_bytes},
            {"used_bytes_before", before.used_bytes},
            {"state", StorageStateName(after.state)}});
  return after;
}

void QuotaLadder::PruneOplog() {
  const std::vector<net::PeerStatus> peers =
      options_.peers ? options_.peers() : std::vector<net::PeerStatus>{};
  // The lowest cursor of the peers that are here; with none here, the log
  // keeps nothing (every absent peer gets a tree diff when it comes back).
  uint64_t target = replica_->LastSeq();
  for (const net::PeerStatus& p : peers) {
    if (p.connected) target = std::min(target, p.acked_seq);
  }
  std::string absent;
  for (const net::PeerStatus& p : peers) {
    if (p.connected || p.acked_seq >= target) continue;
    absent += (absent.empty() ? "" : ", ") + NodeIdToString(p.node_id);
  }
  if (!absent.empty()) {
    LogEvent(*log_, spdlog::level::warn, "quota_retention_dropped", "",
             "storage quota: the oplog kept for absent peers goes; they will need a tree diff: " +
                 absent,
             {{"peers", absent}, {"prune_through", target}});
  }
  auto pruned = replica_->PruneOplogThrough(target);
  if (!pruned.ok()) {
    LogEvent(*log_, spdlog::level::warn, "quota_prune_failed", "",
             "storage quota: oplog prune failed: " + pruned.status().message(),
             {{"error", pruned.status().message()}});
    return;
  }
  LogEvent(*log_, spdlog::level::info, "quota_oplog_pruned", "",
           fmt::format("storage quota: oplog pruned {} entries (through seq {})",
                       pruned->rows_pruned, pruned->pruned_through),
           {{"rows", pruned->rows_pruned}, {"pruned_through", pruned->pruned_through}});
}

}  // namespace tidemap
