// The daemon's log line formats (`serve --log-format`, config `log_format`):
//   text  "2026-11-22T02:15:20.123Z info MESSAGE" (the default)
//   json  one JSON object per line, for log shippers:
//         {"time":"2026-11-22T02:15:20.123Z","level":"info","event":"peer_connected",
//          "peer":"3f2a...","msg":"MESSAGE","fields":{"address":"...",...}}
//         time is UTC with milliseconds; level is trace, debug, info, warning,
//         error or critical; event, peer and fields come from LogEvent
//         (net/log_event.h): a plain line has event "log", peer null and no
//         fields. Invalid UTF-8 in a message or a field is replaced, never dropped.
#ifndef TIDEMAP_SERVER_LOG_FORMAT_H_
#define TIDEMAP_SERVER_LOG_FORMAT_H_

#include <string_view>

#include <tidemap/base/status.h>

namespace spdlog {
class logger;
}

namespace tidemap {

// Sets the line format of every sink of `log` (borrowed). InvalidArgument for
// a `format` other than "text" or "json". Call before the logger is shared
// with other threads.
Status SetLogFormat(spdlog::logger* log, std::string_view format);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_LOG_FORMAT_H_
