// PumpSync: two sync sessions run against each other over a perfect link
// (in order, nothing lost, no delay), in one thread, until neither has
// anything more to send. The sync tests and the sync benchmark share it; the
// simulator has its own faulty network instead.
//
// Depends on tidemap alone (no test framework), so the benchmark links it too.
#ifndef TIDEMAP_TESTS_SUPPORT_SYNC_PUMP_H_
#define TIDEMAP_TESTS_SUPPORT_SYNC_PUMP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/messages.h>

namespace tidemap::testing {

struct SyncPumpOptions {
  bool start = true;    // call both sessions' Start first
  uint64_t now_ms = 0;  // the time every call is given
  // At most this many rounds; a round delivers everything both sides had
  // queued (so two rounds make one round trip).
  int rounds_max = 100;
  // When set, sees what each call of Start, Poll or Receive appended to `out`:
  // the messages from index `from` on.
  std::function<void(const std::vector<msg::Message>& out, size_t from)> observe;
  // When set, sees each message just before it is delivered; `a_to_b` tells
  // its direction.
  std::function<void(const msg::Message& m, bool a_to_b)> deliver;
};

struct SyncPumpResult {
  // The first failure of a call (the pump stopped there), naming the call
  // and the side; OK when there was none.
  Status status;
  int rounds = 0;  // rounds that delivered messages
};

// Each round polls A then B, then delivers A's messages to B and B's to A, in
// order, the replies going out in the next round. Stops when a round has
// nothing to deliver, after options.rounds_max rounds, or at the first call
// that fails. Both sessions must be fresh when options.start is set.
SyncPumpResult PumpSync(SyncSession& a, SyncSession& b, const SyncPumpOptions& options);

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_SYNC_PUMP_H_
