#include <tidemap/server/log_format.h>

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include <tidemap/net/log_event.h>

namespace tidemap {

namespace {

// "2026-11-22T02:15:20.123Z": UTC, milliseconds, the text format's stamp.
std::string UtcTime(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const time_t seconds = static_cast<time_t>(ms.count() / 1000);
  struct tm tm {};
  gmtime_r(&seconds, &tm);
  char text[80];  // room for any int the fields could hold
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count() % 1000));
  return text;
}

nlohmann::ordered_json FieldsJson(const LogEventSide* side) {
  nlohmann::ordered_json fields = nlohmann::ordered_json::object();
  if (side == nullptr || side->fields == nullptr) return fields;
  for (const LogField& f : *side->fields) {
    std::visit([&](const auto& v) { fields[f.key] = v; }, f.value);
  }
  return fields;
}

// One JSON object per record: {"time", "level", "event", "peer", "msg",
// "fields"}, in that order; a line not written by LogEvent has the event
// "log", no peer and no fields.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const LogEventSide* side = CurrentLogEvent();
    nlohmann::ordered_json j;
    j["time"] = UtcTime(msg.time);
    const auto level = spdlog::level::to_string_view(msg.level);
    j["level"] = std::string(level.data(), level.size());
    j["event"] = side != nullptr ? std::string(side->event) : std::string("log");
    if (side != nullptr && !side->peer.empty()) {
      j["peer"] = std::string(side->peer);
    } else {
      j["peer"] = nullptr;
    }
    j["msg"] = std::string(msg.payload.data(), msg.payload.size());
    j["fields"] = FieldsJson(side);
    const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(line.data(), line.data() + line.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

Status SetLogFormat(spdlog::logger* log, std::string_view format) {
  if (format == "text") {
    log->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  } else if (format == "json") {
    log->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    return Status::InvalidArgument("log format \"" + std::string(format) +
                                   "\": expected text or json");
  }
  return Status::Ok();
}

}  // namespace tidemap
