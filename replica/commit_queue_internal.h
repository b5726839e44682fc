// The commit queue: writers line up, one leads a group, the rest wait.
//
// Every write (local ops or remote records) is a Writer on its caller's
// stack. JoinOrLead queues it; the writer at the front becomes the leader and
// takes every queued writer (up to group_commit_bytes_max) as its group; the
// others wait until a leader marks them done. The leader builds and commits
// the group (Replica::Impl::ProcessGroup, replica/group_commit.cc) and then
// calls FinishGroup, which hands leadership to the next writer in line.
// Because one leader at a time stamps, sequences and commits in queue order,
// oplog seqs become visible strictly in order.
//
// The waits (ReplicaOptions::group_commit_wait_max_us, _spin_max_us): in sync
// mode a leader first waits, briefly, for the threads of the last group to
// queue again, and followers yield the CPU in a loop before they sleep.
//
// Thread-safety: every method may be called from any thread; the queue and
// the wait state are guarded by mu_. Lifetimes: a Writer must stay alive (on
// its caller's stack) until JoinOrLead returned false or FinishGroup returned.
#ifndef TIDEMAP_REPLICA_COMMIT_QUEUE_INTERNAL_H_
#define TIDEMAP_REPLICA_COMMIT_QUEUE_INTERNAL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include <tidemap/base/mutex.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

class CommitQueue;

// One op of a writer, local or remote, as the group build reads it.
struct WriterOp {
  std::string_view map, key, value;  // value empty for a tombstone
  bool tombstone = false;
  Version version;  // a remote record's; stamped by the leader for a local op
  // A remote record's expiry; for a local op, its TTL until the leader
  // stamps it and computes the expiry (0: none).
  uint64_t expiry_ms = 0;
  uint64_t ttl_ms = 0;
};

// One caller's request in the pipeline.
struct Writer {
  explicit Writer(CommitQueue* queue);
  // Input: local ops, or remote records (then `remote` is set).
  const WriteBatch* local = nullptr;
  std::span<const KeyedRecord> remote_records;
  bool remote = false;
  uint64_t peer = 0;  // who sent the remote records
  StaleRecords stale = StaleRecords::kRedelete;
  size_t bytes = 0;
  // A local writer's precondition on the key of its single op (PutIf,
  // DeleteIf); nullptr: none. Borrowed for the call.
  const WriteCondition* condition = nullptr;
  // Output, written by the leader that commits it.
  Status status;
  std::vector<Version> versions;
  ApplyResult apply;
  // Set when `condition` failed (then `status` is Refused and nothing was
  // written), with the key's live version when it is live.
  bool condition_failed = false;
  std::optional<Version> current;
  // Set by the leader that committed it (release), read by the writer
  // without the queue's mutex (acquire), after which the leader never
  // touches it again.
  std::atomic<bool> done{false};
  CondVar cv;  // wakes a leader asleep in AwaitLastGroup
  std::thread::id thread = std::this_thread::get_id();

  size_t size() const { return remote ? remote_records.size() : local->size(); }
  WriterOp op(size_t i) const {
    if (remote) {
      const KeyedRecord& r = remote_records[i];
      return WriterOp{r.map,
                      r.key,
                      r.tombstone ? std::string_view() : r.value,
                      r.tombstone,
                      r.version,
                      r.tombstone ? 0 : r.expiry_ms,
                      0};
    }
    const WriteBatch::Op o = local->op(i);
    return WriterOp{o.map,
                    o.key,
                    o.tombstone ? std::string_view() : o.value,
                    o.tombstone,
                    {},
                    0,
                    o.tombstone ? 0 : o.ttl_ms};
  }
};

struct CommitQueueOptions {
  Durability durability = Durability::kSync;
  size_t group_bytes_max = 0;
  uint32_t wait_max_us = 0;
  uint32_t spin_max_us = 0;
};

class CommitQueue {
 public:
  explicit CommitQueue(const CommitQueueOptions& options) : options_(options) {}

  // Queues `w`. Returns false once another leader committed it (w->status is
  // final); true when `w` leads: `*group` then holds the writers it must
  // commit, in queue order, `w` first.
  bool JoinOrLead(Writer* w, std::vector<Writer*>* group) TIDEMAP_EXCLUDES(mu_);
  // The leader `w` committed `group` (every writer's output is set): dequeues
  // and releases them, and wakes the next leader.
  void FinishGroup(const Writer* w, const std::vector<Writer*>& group) TIDEMAP_EXCLUDES(mu_);
  // Feeds one synced commit's duration to the waits' moving average.
  void RecordSyncCommit(std::chrono::nanoseconds duration);
  // No writer is queued.
  bool empty() TIDEMAP_EXCLUDES(mu_);

 private:
  friend struct Writer;
  // Returns once groups_done_ differs from `seen`.
  void AwaitGroupDone(uint32_t seen);
  // The leader `w` waits for the threads of the last group to queue again.
  void AwaitLastGroup(Writer* w) TIDEMAP_REQUIRES(mu_);
  bool LastGroupQueued(const Writer* w) const TIDEMAP_REQUIRES(mu_);
  // Takes the group `w` leads and notes its threads.
  void TakeGroup(std::vector<Writer*>* group) TIDEMAP_REQUIRES(mu_);
  // Sleeps on w->cv (bound to mu_) until signalled or `deadline`; false once
  // the deadline passed. Exempt from the analysis, which cannot tell that
  // w->cv's mutex is mu_; its callers are checked.
  bool SleepUntil(Writer* w, std::chrono::steady_clock::time_point deadline)
      TIDEMAP_REQUIRES(mu_) TIDEMAP_NO_THREAD_SAFETY_ANALYSIS;

  const CommitQueueOptions options_;
  Mutex mu_;
  std::deque<Writer*> writers_ TIDEMAP_GUARDED_BY(mu_);
  // The threads of the last group, and whether a leader waits for them.
  std::vector<std::thread::id> last_group_threads_ TIDEMAP_GUARDED_BY(mu_);
  bool leader_waiting_ TIDEMAP_GUARDED_BY(mu_) = false;
  // A moving average of a synced commit's duration (bounds the waits only).
  std::atomic<int64_t> sync_commit_ns_{0};
  // Bumped (under mu_, after marking its writers done) by every leader that
  // finished a group; followers and the next leader wait for it to move.
  // One word for all of them: the leader wakes every sleeper with one call,
  // and none when they all spin.
  std::atomic<uint32_t> groups_done_{0};
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_COMMIT_QUEUE_INTERNAL_H_
