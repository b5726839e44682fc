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

#include <tidemap/base/status.h>
#include <tidemap/net/address.h>

namespace tidemap {

// Every byte but A-Z a-z 0-9 - . _ ~ as %XX (uppercase hex).
std::string PercentEncode(std::string_view bytes);

// %XX (either case) to its byte; with `plus_is_space`, '+' to ' ' (query
// strings). InvalidArgument on a '%' not followed by two hex digits.
Result<std::string> PercentDecode(std::string_view text, bool plus_is_space);

// "a=1&b=x%20y" to {a: "1", b: "x y"}, values decoded as raw bytes. A name
// given twice is InvalidArgument; an empty `query` is an empty map.
Result<std::map<std::string, std::string>> ParseQuery(std::string_view query);

// Addresses are net/'s (the transport parses the same HOST:PORT forms).
using net::HostPort;
using net::ParseHostPort;

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_URL_H_
