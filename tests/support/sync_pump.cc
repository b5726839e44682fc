#include "tests/support/sync_pump.h"

#include <utility>

namespace tidemap::testing {

namespace {

// Runs one session call that appends to `out`, shows what it appended to the
// observer, and names the side in an error.
template <typename Call>
Status Run(const SyncPumpOptions& options, const char* side, std::vector<msg::Message>* out,
           Call&& call) {
  const size_t from = out->size();
  const Status s = call(out);
  if (options.observe) options.observe(*out, from);
  return s.WithContext(side);
}

}  // namespace

SyncPumpResult PumpSync(SyncSession& a, SyncSession& b, const SyncPumpOptions& options) {
  SyncPumpResult result;
  const uint64_t now = options.now_ms;
  std::vector<msg::Message> to_b, to_a;
  auto fail = [&result](Status s) {
    result.status = std::move(s);
    return result;
  };
  if (options.start) {
    Status s = Run(options, "A", &to_b, [&](auto* out) { return a.Start(now, out); });
    if (!s.ok()) return fail(s);
    s = Run(options, "B", &to_a, [&](auto* out) { return b.Start(now, out); });
    if (!s.ok()) return fail(s);
  }
  for (; result.rounds < options.rounds_max; ++result.rounds) {
    Status s = Run(options, "A", &to_b, [&](auto* out) { return a.Poll(now, out); });
    if (!s.ok()) return fail(s);
    s = Run(options, "B", &to_a, [&](auto* out) { return b.Poll(now, out); });
    if (!s.ok()) return fail(s);
    if (to_a.empty() && to_b.empty()) break;
    std::vector<msg::Message> next_b, next_a;
    for (const msg::Message& m : to_b) {
      if (options.deliver) options.deliver(m, true);
      s = Run(options, "B", &next_a, [&](auto* out) { return b.Receive(m, now, out); });
      if (!s.ok()) return fail(s);
    }
    for (const msg::Message& m : to_a) {
      if (options.deliver) options.deliver(m, false);
      s = Run(options, "A", &next_b, [&](auto* out) { return a.Receive(m, now, out); });
      if (!s.ok()) return fail(s);
    }
    to_b = std::move(next_b);
    to_a = std::move(next_a);
  }
  return result;
}

}  // namespace tidemap::testing
