#include <tidemap/replica/commit_queue_internal.h>

#include <algorithm>

#include <tidemap/base/check.h>

namespace tidemap {

namespace {

// The group-commit wait tracks at most this many threads of the last group.
constexpr size_t kGroupThreadsTracked = 64;

}  // namespace

Writer::Writer(CommitQueue* queue) : cv(&queue->mu_) {}

bool CommitQueue::JoinOrLead(Writer* w, std::vector<Writer*>* group) {
  mu_.Lock();
  writers_.push_back(w);
  // A leader waiting for the last group's threads is woken by the arrival
  // that completes them (waking it on every arrival costs a context switch each).
  if (leader_waiting_ && writers_.front() != w && LastGroupQueued(writers_.front())) {
    writers_.front()->cv.Signal();
  }
  while (true) {
    if (w->done.load(std::memory_order_relaxed)) {  // stored under mu_
      mu_.Unlock();
      return false;
    }
    if (w == writers_.front()) break;
    const uint32_t seen = groups_done_.load(std::memory_order_relaxed);
    mu_.Unlock();
    AwaitGroupDone(seen);
    if (w->done.load(std::memory_order_acquire)) return false;
    mu_.Lock();
  }
  AwaitLastGroup(w);
  TakeGroup(group);
  mu_.Unlock();
  return true;
}

void CommitQueue::TakeGroup(std::vector<Writer*>* group) {
  size_t group_bytes = 0;
  last_group_threads_.clear();
  for (Writer* x : writers_) {
    if (!group->empty() && group_bytes + x->bytes > options_.group_bytes_max) break;
    group->push_back(x);
    group_bytes += x->bytes;
    if (last_group_threads_.size() < kGroupThreadsTracked &&
        std::find(last_group_threads_.begin(), last_group_threads_.end(), x->thread) ==
            last_group_threads_.end()) {
      last_group_threads_.push_back(x->thread);
    }
  }
}

void CommitQueue::FinishGroup(const Writer* w, const std::vector<Writer*>& group) {
  mu_.Lock();
  for (Writer* x : group) {
    TIDEMAP_CHECK(writers_.front() == x);
    writers_.pop_front();
    if (x != w) x->done.store(true, std::memory_order_release);
  }
  // seq_cst: notify_all reads the waiter count after this store, and a
  // waiter counts itself before it reads the word (a store-load pair).
  groups_done_.fetch_add(1, std::memory_order_seq_cst);
  mu_.Unlock();
  groups_done_.notify_all();
}

void CommitQueue::RecordSyncCommit(std::chrono::nanoseconds duration) {
  // A moving average, 1/8 weight for the newest.
  const int64_t ns = duration.count();
  const int64_t avg = sync_commit_ns_.load(std::memory_order_relaxed);
  sync_commit_ns_.store(avg == 0 ? ns : avg + (ns - avg) / 8, std::memory_order_relaxed);
}

bool CommitQueue::empty() {
  MutexLock l(&mu_);
  return writers_.empty();
}

bool CommitQueue::LastGroupQueued(const Writer* w) const {
  for (const std::thread::id& t : last_group_threads_) {
    if (t == w->thread) continue;
    if (std::none_of(writers_.begin(), writers_.end(),
                     [&](const Writer* x) { return x->thread == t; })) {
      return false;
    }
  }
  return true;
}

void CommitQueue::AwaitGroupDone(uint32_t seen) {
  // Steady time bounds the spin only; no decision about data depends on it.
  // (A relaxed replica syncs the commits that move the HLC bound, so
  // sync_commit_ns_ is set there too: the durability decides.)
  const int64_t spin_ns =
      options_.durability != Durability::kSync
          ? 0
          : std::min<int64_t>(2 * sync_commit_ns_.load(std::memory_order_relaxed),
                              int64_t{options_.spin_max_us} * 1000);
  if (spin_ns > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns);
    while (groups_done_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
  }
  groups_done_.wait(seen, std::memory_order_acquire);
}

void CommitQueue::AwaitLastGroup(Writer* w) {
  // Only a synced commit is worth waiting for, and only for others' threads.
  if (options_.durability != Durability::kSync || options_.wait_max_us == 0 || LastGroupQueued(w)) {
    return;
  }
  // Steady time bounds this wait only; no decision about data depends on it.
  const int64_t wait_ns = std::min<int64_t>(sync_commit_ns_.load(std::memory_order_relaxed) / 2,
                                            int64_t{options_.wait_max_us} * 1000);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(wait_ns);
  if (options_.spin_max_us > 0) {
    while (!LastGroupQueued(w) && std::chrono::steady_clock::now() < deadline) {
      mu_.Unlock();
      std::this_thread::yield();
      mu_.Lock();
    }
    return;
  }
  leader_waiting_ = true;
  while (!LastGroupQueued(w) && SleepUntil(w, deadline)) {
  }
  leader_waiting_ = false;
}

bool CommitQueue::SleepUntil(Writer* w, std::chrono::steady_clock::time_point deadline) {
  return w->cv.WaitUntil(deadline);
}

}  // namespace tidemap
