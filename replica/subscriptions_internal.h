// Subscriptions: who is told about committed changes, and the telling.
//
// Contract: Deliver() calls every callback subscribed to an event's map (or
// to every map) once per event, in the order given (seq order), on the
// calling thread, after the change committed. A callback may read from the
// replica and unsubscribe (itself or another); it must not write to it. A
// subscription added or removed during a Deliver() takes effect from the next.
//
// Thread-safety: every method may be called from any thread; the registry is
// guarded by its own mutex, which is not held while callbacks run.
#ifndef TIDEMAP_REPLICA_SUBSCRIPTIONS_INTERNAL_H_
#define TIDEMAP_REPLICA_SUBSCRIPTIONS_INTERNAL_H_

#include <atomic>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <tidemap/base/mutex.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// A change to announce once its group committed. Views into the writers'
// input: valid until the group's writers are released.
struct PendingEvent {
  ChangeKind kind;
  std::string_view map, key, value;
  Version version;
  uint64_t expiry_ms;
  uint64_t seq;
  bool remote;
};

class Subscriptions {
 public:
  Replica::SubscriptionId Add(std::string_view map, Replica::Callback callback);
  void Remove(Replica::SubscriptionId id);
  // Announces `events` to the current subscribers (cheap when there are none).
  void Deliver(std::span<const PendingEvent> events);
  // Announces `event`, which belongs to no map, to every current subscriber.
  void DeliverToAll(const ChangeEvent& event);

 private:
  struct Subscription {
    std::string map;  // empty: every map
    std::shared_ptr<Replica::Callback> callback;
  };
  Mutex mu_;
  std::map<Replica::SubscriptionId, Subscription> subs_ TIDEMAP_GUARDED_BY(mu_);
  Replica::SubscriptionId next_id_ TIDEMAP_GUARDED_BY(mu_) = 1;
  std::atomic<size_t> count_{0};  // subs_.size(), read without mu_
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_SUBSCRIPTIONS_INTERNAL_H_
