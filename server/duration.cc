#include <tidemap/server/duration.h>

#include <array>
#include <string>
#include <utility>

#include <tidemap/base/coding.h>

namespace tidemap {

namespace {

constexpr std::array<std::pair<std::string_view, uint64_t>, 5> kUnits = {{
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"h", 3600 * 1000},
    {"d", 24 * 3600 * 1000},
}};

}  // namespace

Result<uint64_t> ParseDurationMs(std::string_view what, std::string_view text, uint64_t max_ms) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(std::string(what) + " '" + Printable(text) +
                                   "': " + std::string(why) +
                                   " (a number and a unit: 250ms, 90s, 15m, " + "12h, 7d)");
  };
  size_t digits = 0;
  uint64_t n = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    const uint64_t d = static_cast<uint64_t>(text[digits] - '0');
    if (n > (UINT64_MAX - d) / 10) return bad("too large");
    n = n * 10 + d;
    ++digits;
  }
  if (digits == 0) return bad("not a duration");
  const std::string_view unit = text.substr(digits);
  if (unit.empty()) return bad("no unit");
  for (const auto& [name, ms] : kUnits) {
    if (unit != name) continue;
    if (n == 0) return bad("must be more than 0");
    if (n > max_ms / ms) {
      return bad("over the limit of " + std::to_string(max_ms / 1000) + " s");
    }
    return n * ms;
  }
  return bad("unknown unit");
}

}  // namespace tidemap
