// LogEvent: one log line with a structured side, for the daemon's JSON logs.
//
// A line has its text for people, and for machines a stable event name
// (snake_case, e.g. "peer_connected"), the peer it is about (a node id in
// text form; empty when none) and fields (key/value pairs). LogEvent writes
// the text through the logger as any line; while the logger formats it, the
// structured side is readable on the same thread through CurrentLogEvent(),
// which a formatter (server/log_format.h's JSON lines) adds to the record.
// Text lines and sinks that ignore it print exactly the text.
//
// Requires a synchronous logger (formatting on the calling thread), as every
// tidemap logger is. Thread-safe: the side is per thread.
#ifndef TIDEMAP_NET_LOG_EVENT_H_
#define TIDEMAP_NET_LOG_EVENT_H_

#include <spdlog/common.h>

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace spdlog {
class logger;
}

namespace tidemap {

// One structured value of a line: text, an integer, a number or a flag.
struct LogField {
  using Value = std::variant<std::string, int64_t, uint64_t, double, bool>;

  LogField(std::string_view k, std::string_view v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, bool v) : key(k), value(v) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  template <std::signed_integral T>
  LogField(std::string_view k, T v) : key(k), value(static_cast<int64_t>(v)) {}
  template <std::unsigned_integral T>
  LogField(std::string_view k, T v) : key(k), value(static_cast<uint64_t>(v)) {}

  std::string key;
  Value value;
};

// The structured side of the line being formatted on this thread.
struct LogEventSide {
  std::string_view event;
  std::string_view peer;  // empty: the line is about no peer
  const std::vector<LogField>* fields = nullptr;
};

// Logs `text` at `level` with its structured side (see the top of the file).
void LogEvent(spdlog::logger& log, spdlog::level::level_enum level, std::string_view event,
              std::string_view peer, std::string_view text,
              std::initializer_list<LogField> fields = {});

// The side of the line LogEvent is writing on this thread; null for a line
// logged otherwise (a plain spdlog call).
const LogEventSide* CurrentLogEvent();

}  // namespace tidemap

#endif  // TIDEMAP_NET_LOG_EVENT_H_
