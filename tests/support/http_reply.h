// One HTTP/1.1 response as the raw-socket HTTP tests read it: the status,
// the headers (lowercase names) and the body, and the parsing of a response
// head. The suites that talk to a server over a plain socket share it
// (http_test reads keep-alive replies by Content-Length; http_api_test reads
// each reply to EOF, so a body sent after a HEAD response would show).
#ifndef TIDEMAP_TESTS_SUPPORT_HTTP_REPLY_H_
#define TIDEMAP_TESTS_SUPPORT_HTTP_REPLY_H_

#include <cstddef>
#include <map>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

namespace tidemap::testing {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;

  // The header's value; empty when absent.
  std::string Header(const std::string& name) const;
  // The body as JSON; a test failure (and a discarded value) when it is not.
  nlohmann::json Json() const;
};

std::ostream& operator<<(std::ostream& os, const HttpReply& r);

std::string Lower(std::string s);

// Parses the status line and the headers at the front of `buf` into *out
// (body untouched). Returns the offset of the body (just after the blank
// line), or 0 when the head is not complete yet.
size_t ParseReplyHead(const std::string& buf, HttpReply* out);

// Parses one whole response at the front of `buf`: its body is Content-Length
// bytes, or, without one, everything up to `eof`. Returns its length in bytes,
// or 0 when it is not complete yet.
size_t ParseReply(const std::string& buf, bool eof, HttpReply* out);

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_HTTP_REPLY_H_
