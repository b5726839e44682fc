#include <tidemap/server/flat_json_internal.h>

namespace tidemap {

namespace {

// Unescapes the string body `raw` (between its quotes) into *out.
bool Unescape(std::string_view raw, std::string* out) {
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\') {
      out->push_back(raw[i]);
      continue;
    }
    if (++i >= raw.size()) return false;
    switch (raw[i]) {
      case '"':
      case '\\':
      case '/':
        out->push_back(raw[i]);
        break;
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      default:  // \u and anything invalid
        return false;
    }
  }
  return true;
}

// A string at text[*at] (its opening quote); advances past the closing one.
bool ReadString(std::string_view text, size_t* at, FlatMembers* m, std::string_view* out) {
  if (*at >= text.size() || text[*at] != '"') return false;
  bool escaped = false;
  for (size_t i = *at + 1; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"') {
      const std::string_view raw = text.substr(*at + 1, i - *at - 1);
      *at = i + 1;
      if (!escaped) {
        *out = raw;
        return true;
      }
      std::string& s = m->unescaped.emplace_back();
      if (!Unescape(raw, &s)) return false;
      *out = s;
      return true;
    }
    if (c < 0x20 || c >= 0x80) return false;  // the full parser decides
    if (c == '\\') {
      escaped = true;
      ++i;  // the escaped byte (checked by Unescape)
    }
  }
  return false;
}

}  // namespace

size_t SkipJsonSpace(std::string_view text, size_t at) {
  while (at < text.size() &&
         (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' || text[at] == '\n')) {
    ++at;
  }
  return at;
}

std::optional<size_t> ReadFlatObject(std::string_view text, FlatMembers* members) {
  members->clear();
  size_t at = SkipJsonSpace(text, 0);
  if (at >= text.size() || text[at] != '{') return std::nullopt;
  at = SkipJsonSpace(text, at + 1);
  if (at < text.size() && text[at] == '}') return at + 1;
  for (;;) {
    std::string_view name, value;
    if (!ReadString(text, &at, members, &name)) return std::nullopt;
    at = SkipJsonSpace(text, at);
    if (at >= text.size() || text[at] != ':') return std::nullopt;
    at = SkipJsonSpace(text, at + 1);
    if (!ReadString(text, &at, members, &value)) return std::nullopt;
    for (const auto& [seen, unused] : members->members) {
      if (seen == name) return std::nullopt;  // duplicates: the full parser's rule
    }
    members->members.emplace_back(name, value);
    at = SkipJsonSpace(text, at);
    if (at >= text.size()) return std::nullopt;
    if (text[at] == '}') return at + 1;
    if (text[at] != ',') return std::nullopt;
    at = SkipJsonSpace(text, at + 1);
  }
}

}  // namespace tidemap
