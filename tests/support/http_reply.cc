#include "tests/support/http_reply.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <utility>

namespace tidemap::testing {

std::string HttpReply::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

nlohmann::json HttpReply::Json() const {
  auto j = nlohmann::json::parse(body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << body;
  return j;
}

std::ostream& operator<<(std::ostream& os, const HttpReply& r) {
  return os << "HTTP " << r.status << " body: " << r.body.substr(0, 500);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t ParseReplyHead(const std::string& buf, HttpReply* out) {
  const size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  const std::string head = buf.substr(0, end);
  size_t line_end = head.find("\r\n");
  const std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) return 0;
  out->status = std::atoi(status_line.substr(9, 3).c_str());
  out->headers.clear();
  while (line_end != std::string::npos) {
    const size_t next = head.find("\r\n", line_end + 2);
    const std::string line = head.substr(line_end + 2, next - line_end - 2);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      out->headers[Lower(line.substr(0, colon))] = value;
    }
    line_end = next;
  }
  return end + 4;
}

size_t ParseReply(const std::string& buf, bool eof, HttpReply* out) {
  HttpReply r;
  const size_t body_at = ParseReplyHead(buf, &r);
  if (body_at == 0) return 0;
  size_t body_len;
  if (r.headers.count("content-length")) {
    body_len = std::stoul(r.headers["content-length"]);
    if (buf.size() < body_at + body_len) return 0;
  } else {
    if (!eof) return 0;
    body_len = buf.size() - body_at;
  }
  r.body = buf.substr(body_at, body_len);
  *out = std::move(r);
  return body_at + body_len;
}

}  // namespace tidemap::testing
