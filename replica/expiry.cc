// Per-record TTL, the announcing side: ExpireRecords tells subscribers of the
// records whose expiry passed, once each, from the expiry index (by expiry
// bucket, replica/expiry_index_internal.h). Reads hide an expired record by comparing
// its expiry with the clock (replica/reads.cc) and the GC purges it
// (replica/tombstone_gc.cc); neither waits for this.
#include <string>
#include <vector>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/readers_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Records one call announces at most; the rest wait for the next call. A
// call stops only between two expiry instants, so the persisted point never
// splits the records of one millisecond.
constexpr size_t kExpireEventsMax = 10'000;

struct Expired {
  std::string map, key;
  Version version;
  uint64_t expiry_ms;
};

// The valid entries expiring in (notified_ms, now_ms], in expiry order, one
// each, up to kExpireEventsMax unless one millisecond holds more.
Result<std::vector<Expired>> DueExpiries(const Store& store, const ExpiryIndex& index,
                                         uint64_t notified_ms, uint64_t now_ms) {
  std::vector<Expired> due;
  TIDEMAP_RETURN_IF_ERROR(index.ForEachBucket(
      store, rows::ExpiryBucketOf(notified_ms + 1), rows::ExpiryBucketOf(now_ms),
      [&](const ExpiryBucket& b) -> Result<bool> {
        for (rows::ExpiryEntry& e : b.Merged()) {
          if (e.expiry_ms <= notified_ms) continue;
          if (!IsExpired(e.expiry_ms, now_ms)) return false;
          if (due.size() >= kExpireEventsMax && e.expiry_ms != due.back().expiry_ms) return false;
          TIDEMAP_ASSIGN_OR_RETURN(const bool valid, ExpiryIndex::Valid(store, e));
          if (valid)
            due.push_back(Expired{std::move(e.map), std::move(e.key), e.version, e.expiry_ms});
        }
        return true;
      }));
  return due;
}

}  // namespace

Result<uint64_t> Replica::Impl::NextExpiry(uint64_t after_ms) const {
  return expiry_index.NextExpiry(*store, after_ms);
}

Result<ExpireStats> Replica::ExpireRecords() {
  Impl& im = *impl_;
  const uint64_t now_ms = im.options.clock->NowMillis();
  MutexLock commit(&im.commit_mu);  // one announcer at a time, in step with the writes
  if (!im.expire_notified_ms.has_value()) {
    auto row = im.store->Get(rows::MetaKey(rows::kMetaExpireNotified));
    if (row.ok()) {
      TIDEMAP_ASSIGN_OR_RETURN(im.expire_notified_ms, rows::DecodeU64(*row, "expire_notified"));
    } else if (row.status().IsNotFound()) {
      im.expire_notified_ms = 0;
    } else {
      return row.status();
    }
  }
  uint64_t notified_ms = *im.expire_notified_ms;
  TIDEMAP_ASSIGN_OR_RETURN(const std::vector<Expired> due,
                           DueExpiries(*im.store, im.expiry_index, notified_ms, now_ms));
  ExpireStats stats;
  if (!due.empty()) {
    notified_ms = due.back().expiry_ms;
    Batch batch;
    batch.Put(rows::MetaKey(rows::kMetaExpireNotified), rows::EncodeU64(notified_ms));
    TIDEMAP_RETURN_IF_ERROR(im.store->Write(&batch, im.options.durability == Durability::kSync));
    im.expire_notified_ms = notified_ms;
    im.expire_notified_cache.store(notified_ms, std::memory_order_relaxed);
    std::vector<PendingEvent> events;
    events.reserve(due.size());
    for (const Expired& e : due) {
      events.push_back(
          PendingEvent{ChangeKind::kExpire, e.map, e.key, {}, e.version, e.expiry_ms, 0, false});
    }
    im.subscriptions.Deliver(events);
    im.expired.fetch_add(due.size(), std::memory_order_relaxed);
    stats.expired = due.size();
  }
  TIDEMAP_ASSIGN_OR_RETURN(stats.next_expiry_ms, im.NextExpiry(notified_ms));
  return stats;
}

}  // namespace tidemap
