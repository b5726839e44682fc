#include <tidemap/net/log_event.h>

#include <spdlog/logger.h>

namespace tidemap {

namespace {

thread_local const LogEventSide* current_side = nullptr;

}  // namespace

void LogEvent(spdlog::logger& log, spdlog::level::level_enum level, std::string_view event,
              std::string_view peer, std::string_view text,
              std::initializer_list<LogField> fields) {
  if (!log.should_log(level)) return;
  const std::vector<LogField> list(fields);
  const LogEventSide side{event, peer, &list};
  const LogEventSide* outer = current_side;
  current_side = &side;
  log.log(level, "{}", text);
  current_side = outer;
}

const LogEventSide* CurrentLogEvent() { return current_side; }

}  // namespace tidemap
