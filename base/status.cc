#include <tidemap/base/status.h>

#include <cstdio>
#include <cstdlib>

namespace tidemap {

std::string_view Status::CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not_found";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kCorruption:
      return "corruption";
    case Code::kIOError:
      return "io_error";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kRefused:
      return "refused";
    case Code::kInternal:
      return "internal";
    case Code::kQuotaExceeded:
      return "quota_exceeded";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

}  // namespace tidemap

namespace tidemap::internal {

void CheckFailed(const char* condition, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "%s:%d: TIDEMAP_CHECK failed: %s %s\n", file, line, condition, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace tidemap::internal
