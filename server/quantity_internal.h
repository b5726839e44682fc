// Quantities as users type them in flags and config (`90s`, `512MB`): a
// whole number of ASCII digits followed by a unit name. The number and unit
// grammars' callers (server/duration.cc, server/size.cc) own the unit tables
// and the messages.
#ifndef TIDEMAP_SERVER_QUANTITY_INTERNAL_H_
#define TIDEMAP_SERVER_QUANTITY_INTERNAL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tidemap {

// Splits `text` into its leading digits, as `*n`, and the rest, as `*unit`
// (empty when there is none). Returns why it cannot, empty when it can:
// "not a NOUN" when `text` does not start with a digit, "too large" when
// the number exceeds 2^64 - 1.
inline std::string SplitQuantity(std::string_view text, std::string_view noun, uint64_t* n,
                                 std::string_view* unit) {
  size_t digits = 0;
  uint64_t value = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    const uint64_t d = static_cast<uint64_t>(text[digits] - '0');
    if (value > (UINT64_MAX - d) / 10) return "too large";
    value = value * 10 + d;
    ++digits;
  }
  if (digits == 0) return "not a " + std::string(noun);
  *n = value;
  *unit = text.substr(digits);
  return {};
}

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_QUANTITY_INTERNAL_H_
