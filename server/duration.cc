#include <tidemap/server/duration.h>

#include <array>
#include <string>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/server/quantity_internal.h>

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
  uint64_t n = 0;
  std::string_view unit;
  if (const std::string why = SplitQuantity(text, "duration", &n, &unit); !why.empty())
    return bad(why);
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
