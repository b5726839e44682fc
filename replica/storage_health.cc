// Storage errors: after a commit fails (a full disk, too many open files),
// the store refuses writes (see Store::Write) while reads go on. Writers are
// told so at once; once per storage_retry_interval_ms a writer, or
// Replica::RetryStorage, tries to bring writes back: Store::Reopen, then the
// derived state loaded again from the rows, since a commit reported as
// failed may still have reached the log (an append that landed before its
// fsync failed) and come back with the reopen.
#include <string>

#include <tidemap/replica/impl_internal.h>

namespace tidemap {

namespace {

// How long a reopen waits for the reads in flight and the open iterators.
constexpr uint64_t kReopenWaitMs = 2000;

// A full file system (ENOSPC) is refused as QuotaExceeded, as the quota is.
Status WritesRefused(const Status& cause, uint64_t retry_interval_ms) {
  std::string message = "storage error: " + cause.message() +
                        "; writes are refused until a retry succeeds (every " +
                        std::to_string(retry_interval_ms) + " ms), reads go on";
  if (IsNoSpace(cause)) return Status::QuotaExceeded(std::move(message));
  return Status::IOError(std::move(message));
}

}  // namespace

Status Replica::Impl::CheckStorage(bool now) {
  if (options.read_only) return Status::Refused("the replica at " + options.path + " is read-only");
  const Status error = store->write_error();
  if (error.ok() && !derived_stale) return error;
  // A full file system may have failed a write outside the commit path (a
  // prune, a purge): the quota's state says so all the same.
  if (IsNoSpace(error) && quota.SetDiskFull(true)) AnnounceQuota();
  const uint64_t now_ms = options.clock->NowMillis();
  if (!now && now_ms < storage_retry_at_ms) {
    return WritesRefused(
        error.ok() ? Status::IOError("reloading the replica's state failed") : error,
        options.storage_retry_interval_ms);
  }
  storage_retry_at_ms = now_ms + options.storage_retry_interval_ms;
  if (!error.ok()) {
    key_filter.Reset();  // its builder's iterator would hold the reopen back
    const Status reopened = store->Reopen(kReopenWaitMs);
    if (!reopened.ok()) return WritesRefused(reopened, options.storage_retry_interval_ms);
    derived_stale = true;
  }
  const Status loaded = LoadDerivedState();
  if (!loaded.ok()) return WritesRefused(loaded, options.storage_retry_interval_ms);
  derived_stale = false;
  storage_recoveries.fetch_add(1, std::memory_order_relaxed);
  if (quota.SetDiskFull(false)) AnnounceQuota();
  return Status::Ok();
}

Status Replica::RetryStorage() {
  MutexLock l(&impl_->commit_mu);
  return impl_->CheckStorage(/*now=*/true);
}

StorageHealth Replica::storage_health() const {
  StorageHealth h;
  h.error = impl_->store->write_error().message();
  {
    MutexLock l(&impl_->storage_mu);
    h.last_error = impl_->last_storage_error;
    h.last_lost_writes = impl_->last_lost_writes;
  }
  h.write_errors = impl_->storage_write_errors.load(std::memory_order_relaxed);
  h.recoveries = impl_->storage_recoveries.load(std::memory_order_relaxed);
  h.lost_writes_detected = impl_->lost_writes_detected.load(std::memory_order_relaxed);
  return h;
}

}  // namespace tidemap
