// Status and Result<T>: how every fallible tidemap call reports its outcome.
//
// A Status is a code plus a message that names the thing and the reason
// ("peer 3f2a…: clock 94 s ahead, limit 60 s"). Operating conditions (disk
// errors, corrupt rows, bad input, refused peers) are returned as a Status;
// bugs are caught by TIDEMAP_CHECK instead. Nothing in tidemap throws.
#ifndef TIDEMAP_BASE_STATUS_H_
#define TIDEMAP_BASE_STATUS_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <tidemap/base/check.h>

namespace tidemap {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,         // the key, file or peer does not exist
    kInvalidArgument,  // malformed input (usage error)
    kCorruption,       // stored or received bytes fail their integrity check
    kIOError,          // the OS or LevelDB failed
    kUnavailable,      // cannot reach it now: a held lock, a closed peer
    kRefused,          // well-formed but not accepted: limits, clock offset, trust
    kInternal,         // an invariant broke; a bug
    // Out of storage: the storage quota is reached or the file system is
    // full. Writes that add data are refused; reads and deletes go on.
    kQuotaExceeded,
  };

  Status() = default;  // OK

  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status Refused(std::string msg) { return Status(Code::kRefused, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }
  static Status QuotaExceeded(std::string msg) {
    return Status(Code::kQuotaExceeded, std::move(msg));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsUnavailable() const { return code_ == Code::kUnavailable; }
  bool IsRefused() const { return code_ == Code::kRefused; }
  bool IsQuotaExceeded() const { return code_ == Code::kQuotaExceeded; }

  // "OK", or "<code name>: <message>".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context` and ": ".
  Status WithContext(std::string_view context) const;

  // Stable lowercase code names ("not_found", "refused", ...), used in JSON errors.
  static std::string_view CodeName(Code code);

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains its absence. Never both, never neither.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    TIDEMAP_CHECK(!status_.ok());
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok().
  T& value() & {
    TIDEMAP_CHECK(ok());
    return *value_;
  }
  const T& value() const& {
    TIDEMAP_CHECK(ok());
    return *value_;
  }
  T&& value() && {
    TIDEMAP_CHECK(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace tidemap

// Returns from the enclosing function when `expr` (a Status) is not OK.
#define TIDEMAP_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::tidemap::Status tidemap_status_ = (expr);        \
    if (!tidemap_status_.ok()) return tidemap_status_; \
  } while (0)

#define TIDEMAP_CONCAT_INNER_(a, b) a##b
#define TIDEMAP_CONCAT_(a, b) TIDEMAP_CONCAT_INNER_(a, b)

// Declares `lhs` from a Result expression, or returns its Status from the enclosing function.
#define TIDEMAP_ASSIGN_OR_RETURN(lhs, expr) \
  TIDEMAP_ASSIGN_OR_RETURN_IMPL_(TIDEMAP_CONCAT_(tidemap_result_, __LINE__), lhs, expr)
#define TIDEMAP_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

#endif  // TIDEMAP_BASE_STATUS_H_
