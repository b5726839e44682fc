// Percent-encoding (RFC 3986) of raw bytes, query strings and HOST:PORT, as the
// HTTP API and its client use them. Keys and map names are byte strings, so
// decoding yields raw bytes (any byte, NUL included) and encoding escapes every
// byte outside the unreserved set.
#ifndef TIDEMAP_SERVER_URL_H_
#define TIDEMAP_SERVER_URL_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/status.h"

namespace tidemap {

// Every byte but A-Z a-z 0-9 - . _ ~ as %XX (uppercase hex).
std::string PercentEncode(std::string_view bytes);

// %XX (either case) to its byte; with `plus_is_space`, '+' to ' ' (query
// strings). InvalidArgument on a '%' not followed by two hex digits.
Result<std::string> PercentDecode(std::string_view text, bool plus_is_space);

// "a=1&b=x%20y" to {a: "1", b: "x y"}, values decoded as raw bytes. A name
// given twice is InvalidArgument; an empty `query` is an empty map.
Result<std::map<std::string, std::string>> ParseQuery(std::string_view query);

struct HostPort {
  std::string host;  // without brackets for IPv6 ("::1"); may be empty ("":PORT)
  uint16_t port = 0;
};

// "127.0.0.1:7080", "localhost:80", "[::1]:7080", ":7080". InvalidArgument,
// naming `text`, when the port is missing or not 0..65535.
Result<HostPort> ParseHostPort(std::string_view text);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_URL_H_
