#include <tidemap/replica/subscriptions_internal.h>

#include <utility>
#include <vector>

#include <tidemap/replica/impl_internal.h>

namespace tidemap {

Replica::SubscriptionId Subscriptions::Add(std::string_view map, Replica::Callback callback) {
  MutexLock l(&mu_);
  const Replica::SubscriptionId id = next_id_++;
  subs_[id] =
      Subscription{std::string(map), std::make_shared<Replica::Callback>(std::move(callback))};
  count_.store(subs_.size(), std::memory_order_release);
  return id;
}

void Subscriptions::Remove(Replica::SubscriptionId id) {
  MutexLock l(&mu_);
  subs_.erase(id);
  count_.store(subs_.size(), std::memory_order_release);
}

void Subscriptions::Deliver(std::span<const PendingEvent> events) {
  if (count_.load(std::memory_order_acquire) == 0) return;
  std::vector<Subscription> current;
  {
    MutexLock l(&mu_);
    for (const auto& [id, sub] : subs_) current.push_back(sub);
  }
  for (const PendingEvent& e : events) {
    const ChangeEvent event{e.kind,      e.map, e.key,    e.value,       e.version,
                            e.expiry_ms, e.seq, e.remote, StorageUsage{}};
    for (const Subscription& sub : current) {
      if (sub.map.empty() || sub.map == e.map) (*sub.callback)(event);
    }
  }
}

void Subscriptions::DeliverToAll(const ChangeEvent& event) {
  if (count_.load(std::memory_order_acquire) == 0) return;
  std::vector<Subscription> current;
  {
    MutexLock l(&mu_);
    for (const auto& [id, sub] : subs_) current.push_back(sub);
  }
  for (const Subscription& sub : current) (*sub.callback)(event);
}

Replica::SubscriptionId Replica::Subscribe(std::string_view map, Callback callback) {
  return impl_->subscriptions.Add(map, std::move(callback));
}

void Replica::Unsubscribe(SubscriptionId id) { impl_->subscriptions.Remove(id); }

}  // namespace tidemap
