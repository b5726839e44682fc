#include "server/http.h"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>
#include <future>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/coding.h"
#include "base/crypto.h"
#include "base/mutex.h"
#include "base/thread_name.h"
#include "server/json.h"
#include "server/metrics.h"
#include "server/status.h"
#include "server/url.h"

namespace tidemap {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// A scan page without `limit` holds this many items, at most 10,000 with it.
constexpr size_t kScanDefaultItems = 1000;
constexpr size_t kScanItemsMax = 10'000;
// A scan page stops early (with its `next`) once its keys and values pass
// this many bytes, so a page of large values stays a bounded response; it
// always holds at least one item.
constexpr size_t kScanPageBytesMax = size_t{8} << 20;
// Replica::Scan is called for this many items at a time while a page fills.
constexpr size_t kScanChunkItems = 64;
// Bodies of requests whose route takes none (GET, DELETE) are read and
// dropped up to this size; larger ones are refused (413).
constexpr size_t kOtherBodyBytesMax = 64 * 1024;
// Oplog rows read per step while an event stream replays.
constexpr size_t kReplayRowsPerRead = 256;
// How long Stop() lets connections finish after closing them before it stops
// the I/O loop outright.
constexpr auto kStopGrace = std::chrono::seconds(5);
// A response sent before its request's body was read (413, 401, ...) is
// followed by a lingering close: the unread body is read and dropped for up to
// this long and this many bytes, so closing does not reset the connection
// (and lose the response) while the client is still sending.
constexpr auto kLingerTime = std::chrono::seconds(1);
constexpr size_t kLingerBytesMax = size_t{32} << 20;
// After accept fails for want of resources (e.g. EMFILE), wait this long.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(50);

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

std::string Dump(const nlohmann::json& j, int indent = -1) {
  // `replace`: a message quoting raw bytes must not throw on invalid UTF-8.
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

Response MakeResponse(http::status status, std::string body, std::string_view content_type) {
  Response res{status, 11};
  res.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.body() = std::move(body);
  return res;
}

Response JsonResponse(http::status status, const nlohmann::json& j, bool pretty = false) {
  return MakeResponse(status, Dump(j, pretty ? 2 : -1) + (pretty ? "\n" : ""), "application/json");
}

Response ErrorResponse(http::status status, std::string_view code, std::string message) {
  return JsonResponse(status, {{"error", std::move(message)}, {"code", std::string(code)}});
}

// The status code for a Status from the replica.
http::status HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return http::status::ok;
    case Status::Code::kNotFound:
      return http::status::not_found;
    case Status::Code::kInvalidArgument:
      return http::status::bad_request;
    case Status::Code::kRefused:  // over a size limit
      return http::status::payload_too_large;
    case Status::Code::kIOError:
    case Status::Code::kUnavailable:
      return http::status::service_unavailable;
    case Status::Code::kCorruption:
    case Status::Code::kInternal:
      return http::status::internal_server_error;
  }
  return http::status::internal_server_error;
}

Response StatusResponse(const Status& s) {
  return ErrorResponse(HttpStatusFor(s), Status::CodeName(s.code()), s.message());
}

std::string_view View(beast::string_view v) { return std::string_view(v.data(), v.size()); }

// Whether `ec` is Beast's HTTP parse error (the request is malformed) rather
// than a socket error, a timeout or a cancellation.
bool IsHttpError(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::need_more).category();
}

enum class RouteKind { kKey, kMap, kStatus, kWatch, kMetrics, kUnknown };

struct Route {
  RouteKind kind = RouteKind::kUnknown;
  std::string_view name = "unknown";  // the template, for metrics
  std::string map, key;               // decoded (kKey, kMap)
  std::string query;                  // raw, after '?'
  Status error;                       // a malformed target (400)
};

Route MatchRoute(std::string_view target) {
  Route r;
  const size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) r.query = std::string(target.substr(q + 1));
  constexpr std::string_view kMaps = "/v1/maps/";
  if (path == "/v1/status") {
    r.kind = RouteKind::kStatus;
    r.name = "/v1/status";
  } else if (path == "/v1/watch") {
    r.kind = RouteKind::kWatch;
    r.name = "/v1/watch";
  } else if (path == "/metrics") {
    r.kind = RouteKind::kMetrics;
    r.name = "/metrics";
  } else if (path.substr(0, kMaps.size()) == kMaps) {
    const std::string_view rest = path.substr(kMaps.size());
    const size_t slash = rest.find('/');
    auto map = PercentDecode(rest.substr(0, slash), false);
    if (slash == std::string_view::npos) {
      r.kind = RouteKind::kMap;
      r.name = "/v1/maps/{map}";
    } else {
      // Everything after "keys/" is the key, so an unescaped '/' belongs to it.
      constexpr std::string_view kKeys = "keys/";
      const std::string_view tail = rest.substr(slash + 1);
      if (tail.substr(0, kKeys.size()) != kKeys) return r;  // unknown
      r.kind = RouteKind::kKey;
      r.name = "/v1/maps/{map}/keys/{key}";
      auto key = PercentDecode(tail.substr(kKeys.size()), false);
      if (!key.ok()) {
        r.error = key.status();
      } else {
        r.key = std::move(*key);
      }
    }
    if (!map.ok()) {
      r.error = map.status();
    } else {
      r.map = std::move(*map);
    }
  }
  return r;
}

bool MethodAllowed(RouteKind kind, http::verb v) {
  if (kind == RouteKind::kKey) {
    return v == http::verb::get || v == http::verb::put || v == http::verb::delete_;
  }
  return v == http::verb::get;
}

std::string_view AllowHeader(RouteKind kind) {
  return kind == RouteKind::kKey ? "GET, PUT, DELETE" : "GET";
}

std::string MethodLabel(http::verb v) {
  switch (v) {
    case http::verb::get:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::post:
    case http::verb::head:
    case http::verb::options:
    case http::verb::patch:
      return std::string(View(http::to_string(v)));
    default:
      return "OTHER";
  }
}

Result<uint64_t> ParseU64(std::string_view name, std::string_view text) {
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    return Status::InvalidArgument(std::string(name) + " must be a non-negative integer, not '" +
                                   Printable(text) + "'");
  }
  return v;
}

// Query parameters, refusing any name outside `allowed`.
Result<std::map<std::string, std::string>> Params(const std::string& query,
                                                  std::initializer_list<std::string_view> allowed) {
  TIDEMAP_ASSIGN_OR_RETURN(auto params, ParseQuery(query));
  for (const auto& [name, value] : params) {
    bool known = false;
    for (std::string_view a : allowed) known = known || a == name;
    if (!known) return Status::InvalidArgument("unknown query parameter '" + Printable(name) + "'");
  }
  return params;
}

// One change as an event stream sends it.
struct WatchEvent {
  std::string map, key;
  Version version;
  bool tombstone = false;
  uint64_t seq = 0;
  bool remote = false;
};

std::string FormatEvent(const WatchEvent& e) {
  nlohmann::json j;
  PutBytesJson(&j, "map", e.map);
  PutBytesJson(&j, "key", e.key);
  j["hlc"] = e.version.hlc.ToString();
  j["origin"] = NodeIdToString(e.version.origin);
  j["tombstone"] = e.tombstone;
  j["seq"] = e.seq;
  j["remote"] = e.remote;
  return "id: " + std::to_string(e.seq) + "\nevent: change\ndata: " + Dump(j) + "\n\n";
}

std::string FormatErrorEvent(std::string_view code, const std::string& message,
                             uint64_t resume_from) {
  const nlohmann::json j = {
      {"error", message}, {"code", std::string(code)}, {"resume_from", resume_from}};
  return "event: error\ndata: " + Dump(j) + "\n\n";
}

// The changes a subscription delivers to one event stream, between the
// committing thread (Push) and the I/O thread (Take). Bounded: past
// `events_max` the queue empties itself and records that it overflowed.
class WatchQueue {
 public:
  // `wake` is called (under the queue's lock) when events arrive for a
  // consumer that took everything before; it must be quick and must not
  // call back into the queue.
  WatchQueue(size_t events_max, std::function<void()> wake)
      : events_max_(events_max), wake_(std::move(wake)) {}

  void Push(const ChangeEvent& e) TIDEMAP_EXCLUDES(mu_) {
    MutexLock l(&mu_);
    if (closed_) return;
    if (overflowed_) {
      // Dropped: the consumer re-reads the oplog or gives up.
    } else if (events_.size() >= events_max_) {
      overflowed_ = true;
      events_.clear();
    } else {
      events_.push_back(WatchEvent{std::string(e.map), std::string(e.key), e.version,
                                   e.kind == ChangeKind::kDelete, e.seq, e.remote});
    }
    if (!wake_pending_) {
      wake_pending_ = true;
      wake_();
    }
  }

  // Everything queued since the last Take, and whether some was dropped.
  std::deque<WatchEvent> Take(bool* overflowed) TIDEMAP_EXCLUDES(mu_) {
    MutexLock l(&mu_);
    std::deque<WatchEvent> out;
    out.swap(events_);
    *overflowed = overflowed_;
    overflowed_ = false;
    wake_pending_ = false;
    return out;
  }

  // After Close returns, Push neither queues nor wakes.
  void Close() TIDEMAP_EXCLUDES(mu_) {
    MutexLock l(&mu_);
    closed_ = true;
    events_.clear();
  }

 private:
  const size_t events_max_;
  const std::function<void()> wake_;
  Mutex mu_;
  std::deque<WatchEvent> events_ TIDEMAP_GUARDED_BY(mu_);
  bool overflowed_ TIDEMAP_GUARDED_BY(mu_) = false;
  bool wake_pending_ TIDEMAP_GUARDED_BY(mu_) = false;
  bool closed_ TIDEMAP_GUARDED_BY(mu_) = false;
};

// One connection. Touched only on the I/O thread.
struct Conn {
  explicit Conn(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
  // Set while the connection serves an event stream: Stop() cancels it to
  // wake the stream, and the stream's reader cancels it when the peer goes.
  std::shared_ptr<asio::steady_timer> watch_timer;
  bool peer_gone = false;

  void Close() {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream.close();
    if (watch_timer) watch_timer->cancel();
  }
};

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  HttpContext context;
  uint16_t port = 0;
  SystemClock clock;

  // Declared in teardown order's reverse; Stop() also resets them explicitly.
  std::unique_ptr<asio::io_context> ioc;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<asio::thread_pool> pool;
  std::thread io_thread;
  std::future<void> io_done;

  std::atomic<bool> stopping{false};
  Mutex stop_mu;
  bool stopped TIDEMAP_GUARDED_BY(stop_mu) = false;

  // I/O thread only (and Stop() once that thread is gone).
  std::unordered_map<uint64_t, std::weak_ptr<Conn>> conns;
  uint64_t next_conn_id = 1;

  Mutex counters_mu;
  HttpCounters counters TIDEMAP_GUARDED_BY(counters_mu);

  // Every open event stream's queue, so Stop() can close them before the
  // I/O context goes away (a late callback must not post to it).
  Mutex watches_mu;
  std::set<std::shared_ptr<WatchQueue>> watches TIDEMAP_GUARDED_BY(watches_mu);

  void CountRequest(http::verb method, const Route& route, http::status code) {
    MutexLock l(&counters_mu);
    ++counters.requests[HttpRequestKey{MethodLabel(method), std::string(route.name),
                                       static_cast<int>(code)}];
  }

  // An awaitable that runs `fn` (returning a Result) on the worker pool and
  // resumes the awaiting coroutine on the I/O thread with the result.
  // Exceptions become Internal. (A plain function, not a coroutine, and no
  // temporaries inside co_await expressions: GCC 12 mishandles those.)
  template <typename Fn>
  auto OnPool(Fn fn) {
    using R = std::invoke_result_t<Fn&>;
    auto initiation = [this](auto handler, Fn f) {
      asio::post(*pool, [ex = ioc->get_executor(), f = std::move(f),
                         handler = std::move(handler)]() mutable {
        R result = [&]() -> R {
          try {
            return f();
          } catch (const std::exception& e) {
            return Status::Internal(std::string("unexpected exception: ") + e.what());
          } catch (...) {
            return Status::Internal("unexpected exception");
          }
        }();
        asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
          std::move(handler)(std::move(result));
        });
      });
    };
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
        std::move(initiation), asio::use_awaitable, std::move(fn));
  }

  asio::awaitable<void> AcceptLoop();
  void Refuse(tcp::socket& socket);
  asio::awaitable<void> Session(tcp::socket socket);
  asio::awaitable<bool> Write(Conn& conn, Response& res);
  Result<Response> Handle(http::verb method, const Route& route, std::string body);
  Result<Response> HandleKey(http::verb method, const Route& route, std::string body);
  Result<Response> HandleScan(const Route& route);
  Result<Response> HandleStatus();
  Result<Response> HandleMetrics();
  asio::awaitable<void> ServeWatch(std::shared_ptr<Conn> conn, const Request& req,
                                   const Route& route);
  asio::awaitable<void> WatchReader(std::shared_ptr<Conn> conn);
  asio::awaitable<void> ReplyAndClose(std::shared_ptr<Conn> conn, http::verb method,
                                      const Route& route, Response res);
  asio::awaitable<bool> WriteEvents(Conn& conn, const std::string& text, uint64_t events);
  asio::awaitable<bool> WriteRaw(Conn& conn, const std::string& bytes);
  void CloseAll();
};

namespace {

// co_spawn's completion: an exception escaping a coroutine ends that
// coroutine only (its connection), with a line on stderr.
struct LogException {
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "tidemap http: connection ended by exception: %s\n", ex.what());
    } catch (...) {
      std::fprintf(stderr, "tidemap http: connection ended by an unknown exception\n");
    }
  }
};

}  // namespace

asio::awaitable<void> HttpServer::Impl::AcceptLoop() {
  for (;;) {
    tcp::socket socket(*ioc);
    beast::error_code ec;
    co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping.load() || !acceptor->is_open()) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // Out of descriptors or memory: wait rather than spin.
      asio::steady_timer backoff(*ioc, kAcceptBackoff);
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (conns.size() >= options.connections_max) {
      Refuse(socket);
      continue;
    }
    asio::co_spawn(*ioc, Session(std::move(socket)), LogException{});
  }
}

void HttpServer::Impl::Refuse(tcp::socket& socket) {
  {
    MutexLock l(&counters_mu);
    ++counters.refused_connections["http_connections_max"];
  }
  // Best effort, never blocking: a short 503 into the socket's empty send buffer.
  const std::string body = Dump(
      {{"error", "too many connections (limit " + std::to_string(options.connections_max) + ")"},
       {"code", "unavailable"}});
  const std::string text =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  beast::error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(asio::buffer(text), ec);
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

asio::awaitable<bool> HttpServer::Impl::Write(Conn& conn, Response& res) {
  conn.stream.expires_after(std::chrono::milliseconds(options.request_timeout_ms));
  beast::error_code ec;
  co_await http::async_write(conn.stream, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<bool> HttpServer::Impl::WriteRaw(Conn& conn, const std::string& bytes) {
  conn.stream.expires_after(std::chrono::milliseconds(options.request_timeout_ms));
  beast::error_code ec;
  co_await asio::async_write(conn.stream, asio::buffer(bytes),
                             asio::redirect_error(asio::use_awaitable, ec));
  conn.stream.expires_never();
  co_return !ec;
}

asio::awaitable<void> HttpServer::Impl::Session(tcp::socket socket) {
  auto conn = std::make_shared<Conn>(std::move(socket));
  const uint64_t id = next_conn_id++;
  conns[id] = conn;
  {
    MutexLock l(&counters_mu);
    counters.connections = conns.size();
  }
  // Unregisters on every way out, including the frame's destruction at Stop().
  struct Unregister {
    Impl* impl;
    uint64_t id;
    ~Unregister() {
      impl->conns.erase(id);
      MutexLock l(&impl->counters_mu);
      impl->counters.connections = impl->conns.size();
    }
  } unregister{this, id};

  beast::flat_buffer buffer;
  const auto timeout = std::chrono::milliseconds(options.request_timeout_ms);
  while (!stopping.load()) {  // one request per round, while the connection is kept alive
    http::request_parser<http::empty_body> header_parser;
    header_parser.header_limit(static_cast<uint32_t>(
        std::min<size_t>(options.header_bytes_max, std::numeric_limits<uint32_t>::max())));
    // Bodies are limited per route below; Beast 1.74 mishandles body_limit(none).
    header_parser.body_limit(std::numeric_limits<uint64_t>::max());
    conn->stream.expires_after(timeout);
    beast::error_code ec;
    co_await http::async_read_header(conn->stream, buffer, header_parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
    Route route;
    http::verb method = http::verb::unknown;
    Response res;
    // Whether the connection is at a message boundary after this request
    // (its body read, or it had none), so it may serve another.
    bool at_boundary = false;
    bool client_keep_alive = false;
    if (ec == http::error::header_limit) {
      res = ErrorResponse(
          http::status::request_header_fields_too_large, "refused",
          "request headers over " + std::to_string(options.header_bytes_max) + " bytes");
    } else if (ec == http::error::end_of_stream || (ec && !IsHttpError(ec))) {
      // The peer closed or idled out, a socket error, or the server is stopping: no answer.
      break;
    } else if (ec) {
      res = ErrorResponse(http::status::bad_request, "invalid_argument",
                          "malformed request: " + ec.message());
    } else {
      const auto& req = header_parser.get();
      method = req.method();
      client_keep_alive = req.keep_alive();
      route = MatchRoute(View(req.target()));
      const bool body_pending =
          header_parser.chunked() ||
          (header_parser.content_length().has_value() && *header_parser.content_length() > 0);
      const size_t body_limit = route.kind == RouteKind::kKey && method == http::verb::put
                                    ? context.replica->limits().value_bytes_max
                                    : kOtherBodyBytesMax;
      const std::string_view auth = View(req[http::field::authorization]);
      constexpr std::string_view kBearer = "Bearer ";
      bool authorized = options.bearer_token.empty();
      if (!authorized && auth.size() > kBearer.size() &&
          beast::iequals(beast::string_view(auth.data(), kBearer.size()), "Bearer ")) {
        authorized = crypto::SecretEquals(auth.substr(kBearer.size()), options.bearer_token);
      }
      if (!authorized) {
        res = ErrorResponse(http::status::unauthorized, "unauthorized",
                            auth.empty() ? "missing bearer token (Authorization: Bearer TOKEN)"
                                         : "wrong bearer token");
        res.set(http::field::www_authenticate, "Bearer realm=\"tidemap\"");
      } else if (route.kind == RouteKind::kUnknown) {
        res = ErrorResponse(http::status::not_found, "not_found",
                            "no route " + Printable(View(req.target())));
      } else if (!MethodAllowed(route.kind, method)) {
        res = ErrorResponse(http::status::method_not_allowed, "method_not_allowed",
                            "method " + std::string(View(req.method_string())) +
                                " not allowed on " + std::string(route.name));
        res.set(http::field::allow,
                beast::string_view(AllowHeader(route.kind).data(), AllowHeader(route.kind).size()));
      } else if (!route.error.ok()) {
        res = ErrorResponse(http::status::bad_request, "invalid_argument", route.error.message());
      } else if (header_parser.content_length().has_value() &&
                 *header_parser.content_length() > body_limit) {
        // Refused from the header alone: the body is never read.
        res = ErrorResponse(http::status::payload_too_large, "refused",
                            (method == http::verb::put ? "value is " : "request body is ") +
                                std::to_string(*header_parser.content_length()) + " bytes, limit " +
                                std::to_string(body_limit));
      } else {
        if (body_pending && beast::iequals(req[http::field::expect], "100-continue")) {
          http::response<http::empty_body> cont{http::status::continue_, req.version()};
          conn->stream.expires_after(timeout);
          co_await http::async_write(conn->stream, cont,
                                     asio::redirect_error(asio::use_awaitable, ec));
          if (ec) break;
        }
        http::request_parser<http::string_body> parser(std::move(header_parser));
        parser.body_limit(body_limit);
        conn->stream.expires_after(timeout);
        co_await http::async_read(conn->stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::body_limit) {
          res = ErrorResponse(http::status::payload_too_large, "refused",
                              (method == http::verb::put ? "value" : "request body") +
                                  std::string(" is over the limit of ") +
                                  std::to_string(body_limit) + " bytes");
        } else if (ec && IsHttpError(ec)) {
          res = ErrorResponse(http::status::bad_request, "invalid_argument",
                              "malformed request body: " + ec.message());
        } else if (ec) {
          break;  // closed or timed out mid-body
        } else {
          at_boundary = true;
          Request req_full = parser.release();
          if (route.kind == RouteKind::kWatch) {
            co_await ServeWatch(conn, req_full, route);
            co_return;  // an event stream ends its connection
          }
          auto handle = [this, method, route, body = std::move(req_full.body())]() mutable {
            return Handle(method, route, std::move(body));
          };
          Result<Response> result = co_await OnPool(std::move(handle));
          res = result.ok() ? std::move(*result) : StatusResponse(result.status());
        }
      }
      // Answered before reading the body: only a request without one leaves
      // the connection usable (`req` is not touched: the parser may be moved).
      if (!body_pending) at_boundary = true;
    }
    CountRequest(method, route, res.result());
    const bool keep_alive = at_boundary && client_keep_alive && !stopping.load();
    res.keep_alive(keep_alive);
    res.prepare_payload();
    if (!co_await Write(*conn, res)) break;
    if (!keep_alive) {
      beast::error_code ignored;
      conn->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      if (!at_boundary) {
        conn->stream.expires_after(kLingerTime);
        char sink[16384];
        for (size_t drained = 0; drained < kLingerBytesMax && !stopping.load();) {
          const size_t n = co_await conn->stream.async_read_some(
              asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
          if (ec) break;
          drained += n;
        }
      }
      break;
    }
  }
}

Result<Response> HttpServer::Impl::Handle(http::verb method, const Route& route, std::string body) {
  switch (route.kind) {
    case RouteKind::kKey:
      return HandleKey(method, route, std::move(body));
    case RouteKind::kMap:
      return HandleScan(route);
    case RouteKind::kStatus:
      return HandleStatus();
    case RouteKind::kMetrics:
      return HandleMetrics();
    case RouteKind::kWatch:
    case RouteKind::kUnknown:
      break;
  }
  return Status::Internal("no handler for route " + std::string(route.name));
}

Result<Response> HttpServer::Impl::HandleKey(http::verb method, const Route& route,
                                             std::string body) {
  Replica* replica = context.replica;
  if (method == http::verb::get) {
    // Reads take the same names as writes: empty ones are a usage error (400).
    if (route.map.empty()) return Status::InvalidArgument("map name must not be empty");
    if (route.key.empty()) return Status::InvalidArgument("key must not be empty");
    TIDEMAP_ASSIGN_OR_RETURN(Record rec, replica->Get(route.map, route.key));
    Response res = MakeResponse(http::status::ok, std::move(rec.value), "application/octet-stream");
    res.set("X-Tidemap-HLC", rec.version.hlc.ToString());
    res.set("X-Tidemap-Origin", NodeIdToString(rec.version.origin));
    return res;
  }
  Result<Version> v = method == http::verb::put ? replica->Put(route.map, route.key, body)
                                                : replica->Delete(route.map, route.key);
  if (!v.ok()) return v.status();
  return JsonResponse(http::status::ok, {{"hlc", v->hlc.ToString()}});
}

Result<Response> HttpServer::Impl::HandleScan(const Route& route) {
  TIDEMAP_ASSIGN_OR_RETURN(auto params, Params(route.query, {"prefix", "limit", "after"}));
  if (route.map.empty()) return Status::InvalidArgument("map name must not be empty");
  size_t limit = kScanDefaultItems;
  if (auto it = params.find("limit"); it != params.end()) {
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t n, ParseU64("limit", it->second));
    if (n == 0 || n > kScanItemsMax) {
      return Status::InvalidArgument("limit must be 1.." + std::to_string(kScanItemsMax) +
                                     ", not " + std::to_string(n));
    }
    limit = static_cast<size_t>(n);
  }
  const std::string prefix = params.count("prefix") ? params["prefix"] : std::string();
  std::optional<std::string> cursor;
  if (auto it = params.find("after"); it != params.end()) cursor = it->second;

  // Fill the page in chunks until `limit` items or kScanPageBytesMax bytes.
  ScanPage page;
  size_t bytes = 0;
  for (size_t remaining = limit; remaining > 0;) {
    TIDEMAP_ASSIGN_OR_RETURN(
        ScanPage chunk,
        context.replica->Scan(route.map, prefix, cursor, std::min(remaining, kScanChunkItems)));
    for (ScanItem& item : chunk.items) {
      const size_t item_bytes = item.key.size() + item.value.size();
      if (!page.items.empty() && bytes + item_bytes > kScanPageBytesMax) {
        page.next = page.items.back().key;  // `item` follows: there is more
        return JsonResponse(http::status::ok, ScanPageJson(page), /*pretty=*/true);
      }
      bytes += item_bytes;
      page.items.push_back(std::move(item));
    }
    remaining -= chunk.items.size();
    if (!chunk.next.has_value()) break;
    if (remaining == 0) {
      page.next = chunk.next;
      break;
    }
    cursor = chunk.next;
  }
  return JsonResponse(http::status::ok, ScanPageJson(page), /*pretty=*/true);
}

Result<Response> HttpServer::Impl::HandleStatus() {
  TIDEMAP_ASSIGN_OR_RETURN(StatusInfo info, CollectStatusInfo(context.replica, context.public_key));
  std::vector<net::PeerStatus> peers;
  if (context.net_status) {
    peers = context.net_status().peers;
  } else {
    TIDEMAP_ASSIGN_OR_RETURN(
        peers, PeersFromOplog(context.replica, info.stats.oplog_last_seq, clock.NowMillis()));
  }
  return JsonResponse(http::status::ok, StatusJson(info, peers), /*pretty=*/true);
}

Result<Response> HttpServer::Impl::HandleMetrics() {
  MetricsSnapshot snap;
  TIDEMAP_ASSIGN_OR_RETURN(snap.replica, context.replica->Stats());
  if (context.net_status) snap.net = context.net_status();
  {
    MutexLock l(&counters_mu);
    snap.http = counters;
  }
  return MakeResponse(http::status::ok, RenderMetrics(snap),
                      "text/plain; version=0.0.4; charset=utf-8");
}

asio::awaitable<void> HttpServer::Impl::WatchReader(std::shared_ptr<Conn> conn) {
  // An event stream's client sends nothing more: any read completing means it
  // closed (or misbehaves); either way the stream ends. Reads the raw socket,
  // outside tcp_stream's write timeouts.
  char buf[512];
  beast::error_code ec;
  co_await conn->stream.socket().async_read_some(asio::buffer(buf),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  conn->peer_gone = true;
  if (conn->watch_timer) conn->watch_timer->cancel();
}

asio::awaitable<void> HttpServer::Impl::ReplyAndClose(std::shared_ptr<Conn> conn, http::verb method,
                                                      const Route& route, Response res) {
  CountRequest(method, route, res.result());
  res.keep_alive(false);
  res.prepare_payload();
  co_await Write(*conn, res);
  conn->Close();
}

asio::awaitable<bool> HttpServer::Impl::WriteEvents(Conn& conn, const std::string& text,
                                                    uint64_t events) {
  if (text.empty()) co_return true;
  const bool ok = co_await WriteRaw(conn, text);
  if (ok) {
    MutexLock l(&counters_mu);
    counters.watch_events += events;
  }
  co_return ok;
}

asio::awaitable<void> HttpServer::Impl::ServeWatch(std::shared_ptr<Conn> conn, const Request& req,
                                                   const Route& route) {
  const http::verb method = req.method();
  // The parameters: map (empty: every map), and where to resume from.
  std::string map;
  std::optional<uint64_t> from;
  Status bad = [&]() -> Status {
    TIDEMAP_ASSIGN_OR_RETURN(auto params, Params(route.query, {"map", "from"}));
    map = params["map"];
    if (params.count("from")) {
      TIDEMAP_ASSIGN_OR_RETURN(from, ParseU64("from", params["from"]));
    }
    // A reconnecting EventSource sends the last id it saw: later than `from`.
    if (const auto last_id = View(req["Last-Event-ID"]); !last_id.empty()) {
      TIDEMAP_ASSIGN_OR_RETURN(from, ParseU64("Last-Event-ID", last_id));
    }
    return Status::Ok();
  }();
  if (!bad.ok()) {
    co_await ReplyAndClose(conn, method, route, StatusResponse(bad));
    co_return;
  }

  // Subscribe before reading the oplog, so nothing committed in between is
  // missed; events the replay already sent are skipped by seq.
  auto timer = std::make_shared<asio::steady_timer>(*ioc);
  conn->watch_timer = timer;
  auto wake = [ex = ioc->get_executor(), weak = std::weak_ptr<asio::steady_timer>(timer)] {
    asio::post(ex, [weak] {
      if (auto t = weak.lock()) t->cancel();
    });
  };
  auto queue = std::make_shared<WatchQueue>(options.sse_queue_events_max, std::move(wake));
  {
    MutexLock l(&watches_mu);
    watches.insert(queue);
  }
  if (stopping.load()) queue->Close();  // Stop() may have swept the set already
  const Replica::SubscriptionId sub =
      context.replica->Subscribe(map, [queue](const ChangeEvent& e) { queue->Push(e); });
  struct Cleanup {
    Impl* impl;
    std::shared_ptr<WatchQueue> queue;
    Replica::SubscriptionId sub;
    ~Cleanup() {
      queue->Close();
      impl->context.replica->Unsubscribe(sub);
      MutexLock l(&impl->watches_mu);
      impl->watches.erase(queue);
    }
  } cleanup{this, queue, sub};

  Replica* replica = context.replica;
  if (from.has_value()) {
    auto read_pruned = [replica] { return replica->OplogPrunedThrough(); };
    Result<uint64_t> pruned = co_await OnPool(std::move(read_pruned));
    Response refusal;
    bool refuse = false;
    if (!pruned.ok()) {
      refusal = StatusResponse(pruned.status());
      refuse = true;
    } else if (*from < *pruned) {
      refusal = ErrorResponse(http::status::gone, "gone",
                              "the oplog is pruned through seq " + std::to_string(*pruned) +
                                  ": changes after seq " + std::to_string(*from) +
                                  " are no longer kept; scan the map and watch from seq " +
                                  std::to_string(*pruned));
      refuse = true;
    }
    if (refuse) {
      co_await ReplyAndClose(conn, method, route, std::move(refusal));
      co_return;
    }
  }

  CountRequest(method, route, http::status::ok);
  {
    MutexLock l(&counters_mu);
    ++counters.watch_clients;
  }
  struct ClientCount {
    Impl* impl;
    ~ClientCount() {
      MutexLock l(&impl->counters_mu);
      --impl->counters.watch_clients;
    }
  } client_count{this};

  // Headers written by hand: the body runs until either side closes.
  std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
  head += ": watching " + (map.empty() ? std::string("every map") : "map " + Printable(map)) +
          (from.has_value() ? " from seq " + std::to_string(*from) : std::string()) + "\n\n";
  if (!co_await WriteRaw(*conn, head)) {
    conn->Close();
    co_return;
  }
  asio::co_spawn(*ioc, WatchReader(conn), LogException{});

  uint64_t cursor = from.value_or(0);  // every change up to this seq was sent (or filtered)
  bool replaying = from.has_value();   // else live from the start: the queue has it all
  const auto keepalive = std::chrono::milliseconds(std::max<uint64_t>(options.sse_keepalive_ms, 1));
  // Set when the stream must end with a final error event.
  std::string final_code, final_message;
  while (!stopping.load() && !conn->peer_gone) {
    std::string out;
    uint64_t count = 0;
    if (replaying) {
      auto read_rows = [replica, cursor]() -> Result<std::vector<OplogEntry>> {
        TIDEMAP_ASSIGN_OR_RETURN(auto r, replica->ReadOplog(cursor, kReplayRowsPerRead));
        if (!r.empty() && r.front().seq > cursor + 1) {
          // Rows are missing after the cursor: pruned since the check above?
          TIDEMAP_ASSIGN_OR_RETURN(uint64_t pruned, replica->OplogPrunedThrough());
          if (pruned > cursor) {
            return Status::NotFound("the oplog was pruned through seq " + std::to_string(pruned) +
                                    " while this stream replayed from seq " +
                                    std::to_string(cursor));
          }
        }
        return r;
      };
      Result<std::vector<OplogEntry>> rows = co_await OnPool(std::move(read_rows));
      if (!rows.ok()) {
        final_code = rows.status().IsNotFound()
                         ? "gone"
                         : std::string(Status::CodeName(rows.status().code()));
        final_message = rows.status().message();
        break;
      }
      if (!rows->empty()) {
        for (const OplogEntry& row : *rows) {
          if (map.empty() || row.map == map) {
            out += FormatEvent(
                WatchEvent{row.map, row.key, row.version, row.tombstone, row.seq, row.via != 0});
            ++count;
          }
        }
        cursor = rows->back().seq;
        if (!co_await WriteEvents(*conn, out, count)) break;
        continue;
      }
      // Caught up with the oplog. Whatever committed after the rows just read
      // is in the queue, unless it overflowed meanwhile: then read on.
      bool overflowed = false;
      std::deque<WatchEvent> events = queue->Take(&overflowed);
      if (overflowed) continue;
      replaying = false;
      for (const WatchEvent& e : events) {
        if (e.seq <= cursor) continue;
        out += FormatEvent(e);
        cursor = e.seq;
        ++count;
      }
      if (!co_await WriteEvents(*conn, out, count)) break;
      continue;
    }
    bool overflowed = false;
    std::deque<WatchEvent> events = queue->Take(&overflowed);
    if (overflowed) {
      {
        MutexLock l(&counters_mu);
        ++counters.watch_dropped;
      }
      final_code = "too_slow";
      final_message =
          "this stream fell more than " + std::to_string(options.sse_queue_events_max) +
          " events behind and is closed; reconnect with from=" + std::to_string(cursor) +
          " (or Last-Event-ID) to resume";
      break;
    }
    if (events.empty()) {
      timer->expires_after(keepalive);
      beast::error_code ec;
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!ec && !co_await WriteRaw(*conn, ": keepalive\n\n")) break;
      continue;  // woken (cancelled) or kept alive: look again
    }
    for (const WatchEvent& e : events) {
      if (e.seq <= cursor) continue;
      out += FormatEvent(e);
      cursor = e.seq;
      ++count;
    }
    if (!co_await WriteEvents(*conn, out, count)) break;
  }
  if (!final_code.empty()) {
    const std::string text = FormatErrorEvent(final_code, final_message, cursor);
    co_await WriteRaw(*conn, text);
  }
  conn->Close();
}

void HttpServer::Impl::CloseAll() {
  beast::error_code ec;
  acceptor->close(ec);
  for (auto& [id, weak] : conns) {
    if (auto c = weak.lock()) c->Close();
  }
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(HttpOptions options, HttpContext context) {
  if (context.replica == nullptr) return Status::InvalidArgument("HttpServer needs a replica");
  if (options.worker_threads == 0 || options.connections_max == 0 ||
      options.sse_queue_events_max == 0 || options.header_bytes_max == 0) {
    return Status::InvalidArgument(
        "HTTP options: worker_threads, connections_max, sse_queue_events_max and "
        "header_bytes_max must be at least 1");
  }
  TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options.listen));
  try {
    auto impl = std::make_unique<Impl>();
    impl->ioc = std::make_unique<asio::io_context>(1);
    beast::error_code ec;
    tcp::resolver resolver(*impl->ioc);
    const auto results = resolver.resolve(hp.host.empty() ? std::string("0.0.0.0") : hp.host,
                                          std::to_string(hp.port), tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Status::InvalidArgument("HTTP listen address " + options.listen +
                                     ": cannot resolve '" + hp.host + "': " + ec.message());
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    if (!endpoint.address().is_loopback() && options.bearer_token.empty()) {
      return Status::InvalidArgument(
          "refusing to serve HTTP on " + options.listen + " (" + endpoint.address().to_string() +
          ", not a loopback address) without a bearer token: set one, or listen on 127.0.0.1");
    }
    impl->acceptor = std::make_unique<tcp::acceptor>(*impl->ioc);
    auto fail = [&](std::string_view what) {
      return Status::Unavailable("cannot listen for HTTP on " + options.listen + ": " +
                                 std::string(what) + ": " + ec.message());
    };
    impl->acceptor->open(endpoint.protocol(), ec);
    if (ec) return fail("open");
    impl->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) return fail("SO_REUSEADDR");
    impl->acceptor->bind(endpoint, ec);
    if (ec) return fail("bind");
    impl->acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen");
    impl->port = impl->acceptor->local_endpoint(ec).port();
    if (ec) return fail("local endpoint");

    impl->options = std::move(options);
    impl->context = std::move(context);
    impl->pool = std::make_unique<asio::thread_pool>(impl->options.worker_threads);
    asio::co_spawn(*impl->ioc, impl->AcceptLoop(), LogException{});
    std::promise<void> done;
    impl->io_done = done.get_future();
    Impl* raw = impl.get();
    impl->io_thread = std::thread([raw, done = std::move(done)]() mutable {
      NameThisThread("tidemap-http");
      for (;;) {
        try {
          raw->ioc->run();
          break;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "tidemap http: I/O loop: %s\n", e.what());
        }
      }
      done.set_value();
    });
    return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("starting the HTTP server: ") + e.what());
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  Impl& s = *impl_;
  {
    MutexLock l(&s.stop_mu);
    if (s.stopped) return;
    s.stopped = true;
  }
  s.stopping.store(true);
  // First silence subscription callbacks: after this none posts to the I/O context.
  {
    MutexLock l(&s.watches_mu);
    for (const auto& q : s.watches) q->Close();
  }
  asio::post(*s.ioc, [&s] { s.CloseAll(); });
  // Connections end as their operations fail; coroutines waiting on the pool
  // resume once their replica call returns. Past the grace period, stop the loop.
  if (s.io_done.wait_for(kStopGrace) != std::future_status::ready) s.ioc->stop();
  s.io_thread.join();
  s.pool->join();
  // Frames still queued (a stopped loop) are destroyed here, on this thread,
  // with the I/O thread gone.
  s.acceptor.reset();
  s.ioc.reset();
  s.pool.reset();
}

}  // namespace tidemap
