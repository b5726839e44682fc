// The storage quota: usage accounting, the state it sets, the refusals at
// kFull, and the announcement of each state change (see StorageQuota in
// replica/quota_internal.h and StorageUsage in replica/replica.h).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/quota_internal.h>

namespace tidemap {

std::string_view StorageStateName(StorageState state) {
  switch (state) {
    case StorageState::kOk:
      return "ok";
    case StorageState::kPruning:
      return "pruning";
    case StorageState::kFull:
      return "full";
  }
  return "unknown";
}

StorageState StorageQuota::StateFor(uint64_t used, uint64_t quota, bool disk_full) {
  if (disk_full) return StorageState::kFull;
  if (quota == 0) return StorageState::kOk;
  if (used >= quota) return StorageState::kFull;
  // used * 100 >= quota * 80, without overflow for quotas up to exabytes.
  if (used / kPruningPercent >= quota / 100) return StorageState::kPruning;
  return StorageState::kOk;
}

bool StorageQuota::SetMeasured(uint64_t bytes, uint64_t written_before) {
  measured_.store(bytes, std::memory_order_relaxed);
  written_.fetch_sub(written_before, std::memory_order_relaxed);
  return Evaluate(/*may_lower=*/true);
}

bool StorageQuota::SetQuota(uint64_t quota_bytes) {
  quota_.store(quota_bytes, std::memory_order_relaxed);
  return Evaluate(/*may_lower=*/true);
}

bool StorageQuota::SetDiskFull(bool full) {
  if (disk_full_.exchange(full, std::memory_order_relaxed) == full) return false;
  return Evaluate(/*may_lower=*/true);
}

bool StorageQuota::Evaluate(bool may_lower) {
  MutexLock l(&mu_);
  const StorageUsage u = usage();
  const StorageState target = StateFor(u.used_bytes, u.quota_bytes, u.disk_full);
  const StorageState current = state_.load(std::memory_order_relaxed);
  if (target == current || (target < current && !may_lower)) return false;
  state_.store(target, std::memory_order_relaxed);
  transitions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

StorageUsage StorageQuota::usage() const {
  StorageUsage u;
  u.used_bytes =
      measured_.load(std::memory_order_relaxed) + written_.load(std::memory_order_relaxed);
  u.quota_bytes = quota_.load(std::memory_order_relaxed);
  u.state = state_.load(std::memory_order_relaxed);
  u.disk_full = disk_full_.load(std::memory_order_relaxed);
  u.transitions = transitions_.load(std::memory_order_relaxed);
  return u;
}

bool IsNoSpace(const Status& s) {
  return !s.ok() && s.message().find(std::strerror(ENOSPC)) != std::string::npos;
}

void Replica::Impl::AnnounceQuota() {
  ChangeEvent e{ChangeKind::kQuota, {}, {}, {}, Version{}, 0, 0, false, quota.usage()};
  subscriptions.DeliverToAll(e);
}

Status Replica::Impl::QuotaRefusal() const {
  const StorageUsage u = quota.usage();
  if (u.disk_full) {
    return Status::QuotaExceeded("storage full: the file system has no space left (" +
                                 store->write_error().message() + "); reads go on");
  }
  return Status::QuotaExceeded("storage quota exceeded: " + std::to_string(u.used_bytes) +
                               " bytes used of a " + std::to_string(u.quota_bytes) +
                               "-byte quota; reads and deletes go on");
}

const std::vector<Writer*>& Replica::Impl::RefuseOverQuota(const std::vector<Writer*>& group,
                                                           std::vector<Writer*>* kept) {
  const Status refusal = QuotaRefusal();
  for (Writer* w : group) {
    bool adds = w->remote;  // records from peers wait on the peer until space is freed
    for (size_t i = 0; !adds && i < w->size(); ++i) adds = !w->op(i).tombstone;
    if (adds) {
      w->status = refusal;
    } else {
      kept->push_back(w);
    }
  }
  return *kept;
}

StorageUsage Replica::storage_usage() const { return impl_->quota.usage(); }

StorageUsage Replica::MeasureStorage() {
  const uint64_t written_before = impl_->quota.written_bytes();
  const uint64_t bytes = impl_->store->DiskBytes();
  if (impl_->quota.SetMeasured(bytes, written_before)) impl_->AnnounceQuota();
  return impl_->quota.usage();
}

void Replica::SetStorageQuota(uint64_t quota_bytes) {
  if (impl_->quota.SetQuota(quota_bytes)) impl_->AnnounceQuota();
}

Result<PruneStats> Replica::PruneOplogThrough(uint64_t seq) {
  uint64_t covered;
  {
    MutexLock commit(&impl_->commit_mu);
    TIDEMAP_RETURN_IF_ERROR(impl_->Checkpoint(impl_->LastSeq(), /*sync=*/true));
    covered = impl_->tree.checkpoint_seq();
  }
  // The retention cap forces entries out whatever the cursors: one that
  // keeps no more than what lies above `seq` prunes through it.
  OplogRetention retention = impl_->options.retention;
  const uint64_t target = std::min(seq, covered);
  retention.rows_max = std::min(retention.rows_max, covered - target);
  return impl_->oplog->Prune(covered, retention);
}

}  // namespace tidemap
