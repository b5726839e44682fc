// Durations as users type them (`put --ttl 90s`, `PUT ...?ttl=15m`): a
// positive whole number and a unit, ms, s, m, h or d (e.g. 250ms, 90s, 15m,
// 12h, 7d), with nothing before, between or after.
#ifndef TIDEMAP_SERVER_DURATION_H_
#define TIDEMAP_SERVER_DURATION_H_

#include <cstdint>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap {

// The duration `text` in milliseconds, at most `max_ms`. InvalidArgument,
// naming `what` and the text, for anything else: no unit, an unknown unit,
// zero, a sign or spaces, or over `max_ms`.
Result<uint64_t> ParseDurationMs(std::string_view what, std::string_view text, uint64_t max_ms);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_DURATION_H_
