#include <tidemap/server/size.h>

#include <array>
#include <cstdio>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/server/quantity_internal.h>

namespace tidemap {

namespace {

constexpr uint64_t kKi = 1024, kK = 1000;
constexpr std::array<std::pair<std::string_view, uint64_t>, 10> kUnits = {{
    {"B", 1},
    {"kB", kK},
    {"KB", kK},
    {"MB", kK* kK},
    {"GB", kK* kK* kK},
    {"TB", kK* kK* kK* kK},
    {"KiB", kKi},
    {"MiB", kKi* kKi},
    {"GiB", kKi* kKi* kKi},
    {"TiB", kKi* kKi* kKi* kKi},
}};

}  // namespace

Result<uint64_t> ParseSizeBytes(std::string_view what, std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(std::string(what) + " '" + Printable(text) + "': " +
                                   std::string(why) + " (a number and a unit: 4096B, 512MB, 2GiB)");
  };
  uint64_t n = 0;
  std::string_view unit;
  if (const std::string why = SplitQuantity(text, "size", &n, &unit); !why.empty()) return bad(why);
  if (unit.empty()) return n;
  for (const auto& [name, bytes] : kUnits) {
    if (unit != name) continue;
    if (n > UINT64_MAX / bytes) return bad("too large");
    return n * bytes;
  }
  return bad("unknown unit");
}

std::string FormatSizeBytes(uint64_t bytes) {
  constexpr std::array<std::string_view, 4> kNames = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < kKi) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kNames.size()) {
    value /= 1024.0;
    ++unit;
  }
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.1f %s", value, std::string(kNames[unit]).c_str());
  return buf;
}

}  // namespace tidemap
