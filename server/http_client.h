// A small blocking HTTP/1.1 client for a node's HTTP API (server/http.h), as
// the CLI's `--http HOST:PORT` target uses it. One request per connection.
#ifndef TIDEMAP_SERVER_HTTP_CLIENT_H_
#define TIDEMAP_SERVER_HTTP_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap {

struct HttpClientOptions {
  // The node: HOST:PORT or http://HOST:PORT (plain HTTP), https://HOST:PORT
  // (TLS; the node's certificate must be valid for HOST, name or IP address).
  std::string address;
  // PEM file of the CA certificate(s) an https:// node's certificate is
  // verified against; empty: the system's CAs. Given with a bare HOST:PORT,
  // it means https://.
  std::string ca_file;
  std::string bearer_token;     // sent as "Authorization: Bearer ..." when non-empty
  uint64_t timeout_ms = 30000;  // to connect, and for each exchange
  size_t response_bytes_max = size_t{64} << 20;  // a larger response body fails the call
};

struct HttpReply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lowercase

  // The header's value, or "" when absent. `name` in lowercase.
  std::string Header(const std::string& name) const;
};

// Sends one request and returns the reply, whatever its status. A request
// with a body announces it with "Expect: 100-continue" and sends it only once
// the node agrees, so a refusal from the headers (413) costs no upload.
// InvalidArgument for a malformed address; Unavailable ("cannot reach
// ADDRESS: reason") when the node cannot be reached, the connection fails,
// the TLS handshake fails (an unverified certificate included; ca_file
// unreadable), or it times out.
// `content_type`, when given, is sent as the body's Content-Type.
Result<HttpReply> HttpCall(const HttpClientOptions& options, std::string_view method,
                           std::string_view target, std::string_view body = {},
                           std::string_view content_type = {});

// GET `target` and hand a 200 reply's body to `sink` piece by piece as it
// arrives (for a body of any size: a snapshot), without holding it. A reply
// of another status is returned whole (within response_bytes_max) for
// ReplyStatus, and `sink` sees nothing. A body cut short (the connection
// closed before its end, a chunked body without its last chunk) is
// Unavailable; so is any error of `sink`, passed on as it is. Each read
// waits up to timeout_ms.
Result<HttpReply> HttpGetStreamed(const HttpClientOptions& options, std::string_view target,
                                  const std::function<Status(std::string_view)>& sink);

// What an error reply means, as a Status carrying the message of its JSON
// {"error", "code"} body: 404 NotFound, 400 InvalidArgument, 401 403 410 413
// 414 431 Refused, anything else Unavailable. OK for 2xx.
Status ReplyStatus(const HttpReply& reply);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_CLIENT_H_
