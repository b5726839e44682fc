// A fast reader of the one JSON shape batch ops take: a flat object whose
// members are all strings ({"op":"put","map":"m",...}), plain ASCII with
// the simple escapes. Anything else (another value type, \u escapes,
// non-ASCII or control bytes, duplicate names, trailing bytes) is left to
// the full parser (nlohmann::json), which then gives the same result or the
// same error it always did; this reader never rejects what that one accepts
// nor accepts what it rejects.
//
// Contract: pure functions; the views point into `text` or into the
// members' own storage (strings with escapes).
#ifndef TIDEMAP_SERVER_FLAT_JSON_INTERNAL_H_
#define TIDEMAP_SERVER_FLAT_JSON_INTERNAL_H_

#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tidemap {

struct FlatMembers {
  std::vector<std::pair<std::string_view, std::string_view>> members;  // names, values
  std::list<std::string> unescaped;  // what views of escaped strings point into (stable)
  void clear() {
    members.clear();
    unescaped.clear();
  }
};

// Reads one flat object at the start of `text` (after optional whitespace)
// into *members (names and unescaped values, in order; `text` must outlive
// the views); returns the bytes
// consumed, or nullopt when the text is not of the shape (see above).
std::optional<size_t> ReadFlatObject(std::string_view text, FlatMembers* members);

// The position after whitespace (space, tab, CR, LF) from `at`.
size_t SkipJsonSpace(std::string_view text, size_t at);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_FLAT_JSON_INTERNAL_H_
