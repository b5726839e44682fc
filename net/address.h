// HOST:PORT addresses as the command line, the config file and the HTTP
// client take them.
#ifndef TIDEMAP_NET_ADDRESS_H_
#define TIDEMAP_NET_ADDRESS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap::net {

struct HostPort {
  std::string host;  // without brackets for IPv6 ("::1"); may be empty ("":PORT)
  uint16_t port = 0;
};

// "127.0.0.1:7080", "localhost:80", "[::1]:7080", ":7080". InvalidArgument,
// naming `text`, when the port is missing or not 0..65535.
Result<HostPort> ParseHostPort(std::string_view text);

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_ADDRESS_H_
