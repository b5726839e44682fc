// Internals of the HTTP server shared by its source files (not installed):
//   http.cc         accepting, one connection's requests (read, check, answer), start and stop
//   http_routes.cc  routing, responses and the handlers of the plain routes (keys, scans,
//                   status, metrics), which run on the worker pool
//   http_table.cc   the route table (paths and methods) and the OpenAPI document
//   http_conditional.cc  ETags, conditional requests (If-Match, If-None-Match), gzip
//   http_batch.cc   POST /v1/batch
//   http_watch.cc   the event stream of GET /v1/watch
//   http_tls.cc     TLS: the server's certificate and key, and each connection's handshake
//   http_ui.cc      the web console's static files (GET /ui)
//   http_rekey.cc   GET and POST /v1/admin/rekey
//
// Threading: see server/http.h. Conn and everything in HttpServer::Impl not
// marked otherwise belong to the I/O thread; handlers run on the worker pool
// and touch only the replica, the context's callbacks and the counters.
#ifndef TIDEMAP_SERVER_HTTP_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_INTERNAL_H_

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include <tidemap/base/clock.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/mutex.h>
#include <tidemap/net/worker_pool.h>
#include <tidemap/server/byte_budget_internal.h>
#include <tidemap/server/http.h>
#include <tidemap/server/http_body_internal.h>
#include <tidemap/server/http_stream_internal.h>
#include <tidemap/server/http_writes_internal.h>
#include <tidemap/server/metrics.h>

namespace tidemap {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// --- responses and routing (http_routes.cc) ---

// `j` as text; invalid UTF-8 in its strings is replaced, never thrown on.
std::string Dump(const nlohmann::json& j, int indent = -1);
Response MakeResponse(http::status status, std::string body, std::string_view content_type);
Response JsonResponse(http::status status, const nlohmann::json& j, bool pretty = false);
// {"error": message, "code": code}
Response ErrorResponse(http::status status, std::string_view code, std::string message);
// The status code for a Status from the replica (a size limit: 413).
http::status HttpStatusFor(const Status& s);
// The error response for a non-OK Status, with the fitting status code.
Response StatusResponse(const Status& s);
std::string_view View(beast::string_view v);
// Whether `ec` is Beast's HTTP parse error (the request is malformed) rather
// than a socket error, a timeout or a cancellation.
bool IsHttpError(const beast::error_code& ec);

enum class RouteKind {
  kKey,
  kMap,
  kBatch,
  kHealth,
  kStatus,
  kPending,
  kWatch,
  kMetrics,
  kOpenApi,
  kUi,
  kReload,
  kSnapshot,
  kRekey,
  kUnknown
};

// The headers a handler reads (copied from the request on the I/O thread).
struct RequestMeta {
  std::string content_type;
  std::optional<std::string> if_match, if_none_match;
  bool accepts_gzip = false;  // Accept-Encoding allows gzip
};

struct Route {
  RouteKind kind = RouteKind::kUnknown;
  std::string_view name = "unknown";  // the template, for metrics
  std::string map, key;               // decoded (kKey, kMap)
  std::string query;                  // raw, after '?'
  Status error;                       // a malformed target (400)
};

Route MatchRoute(std::string_view target);
// --- the route table (http_table.cc) ---
// The template of a route kind (its OpenAPI path), "unknown" for kUnknown.
std::string_view RouteTemplate(RouteKind kind);
// The route of a path without parameters ("/v1/status"); kUnknown when none.
RouteKind FixedRoute(std::string_view path);
// Whether `path` is the web console's ("/ui" or "/ui/NAME"); if so, fills `r`
// (kUi, with NAME, possibly empty, in r->key). In http_ui.cc.
bool MatchUiRoute(std::string_view path, Route* r);
bool MethodAllowed(RouteKind kind, http::verb v);
// The route's methods, as the Allow header lists them ("GET, HEAD").
std::string_view AllowHeader(RouteKind kind);
// The body limit of POST /v1/batch: the batch's byte limit twice over
// (room for JSON and base64), plus 256 bytes for each op's syntax.
size_t BatchBodyBytesMax(const Limits& limits);
// A key's ETag: its version, quoted (a strong validator).
std::string ETagOf(const Version& v);
// gzip of `bytes` (RFC 1952), at a fast level.
Result<std::string> Gzip(std::string_view bytes);
// Whether an Accept-Encoding value allows gzip (RFC 9110 12.5.3).
bool AcceptsGzip(std::string_view accept_encoding);
// The method as a metrics label ("OTHER" for the rare ones).
std::string MethodLabel(http::verb v);
Result<uint64_t> ParseU64(std::string_view name, std::string_view text);
// Query parameters, refusing any name outside `allowed`.
Result<std::map<std::string, std::string>> Params(const std::string& query,
                                                  std::initializer_list<std::string_view> allowed);
// The query parameters of a key route: only a PUT takes one, `ttl`
// (server/duration.h).
Result<PutOptions> KeyWriteOptions(http::verb method, const Route& route);

// --- event streams (http_watch.cc) ---

// One change as an event stream sends it.
struct WatchEvent {
  std::string map, key;
  Version version;
  bool tombstone = false;
  uint64_t seq = 0;
  bool remote = false;
  // An `expire` event (ChangeKind::kExpire, seq 0): the record's expiry,
  // which passed. Not a change: it has no seq and no cursor position.
  bool expire = false;
  uint64_t expiry_ms = 0;
  // A `clear` event (ChangeKind::kClear): the map was cleared at `version`;
  // `key` is empty. A change like any other (it has its seq).
  bool clear = false;
  // A `quota` event (ChangeKind::kQuota, seq 0): the storage state changed
  // to `storage.state`. Not a change either; it belongs to no map.
  bool quota = false;
  StorageUsage storage{};
};

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
      events_.push_back(WatchEvent{
          std::string(e.map), std::string(e.key), e.version, e.kind == ChangeKind::kDelete, e.seq,
          e.remote, e.kind == ChangeKind::kExpire, e.expiry_ms, e.kind == ChangeKind::kClear,
          e.kind == ChangeKind::kQuota, e.storage});
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

// Where one event stream stands (ServeWatch and its steps; I/O thread).
struct WatchState {
  std::string map;               // empty: every map
  std::optional<uint64_t> from;  // resume after this seq (replay from the oplog)
  uint64_t cursor = 0;           // every change up to this seq was sent (or filtered)
  bool replaying = false;        // reading the oplog; else live from the queue
  std::shared_ptr<WatchQueue> queue;
  std::shared_ptr<asio::steady_timer> timer;  // keepalive, and woken by the queue
  // Set when the stream must end with a final error event.
  std::string final_code, final_message;
};

// --- the server ---

// --- TLS (http_tls.cc) ---

// The server's TLS context from a PEM certificate chain and a PEM private
// key. The key file must be private to its owner (base/private_file.h:
// Refused otherwise); an unreadable or invalid file, or a key that does not
// match the certificate, is Unavailable naming the file.
Result<std::unique_ptr<asio::ssl::context>> LoadServerTls(const std::string& cert_file,
                                                          const std::string& key_file);

// --- the server ---

// One connection. Touched only on the I/O thread.
struct Conn {
  // A TLS connection when `tls` is non-null (borrowed; outlives the Conn).
  Conn(tcp::socket socket, asio::ssl::context* tls)
      : stream(tls ? HttpStream(std::move(socket), *tls) : HttpStream(std::move(socket))) {}
  HttpStream stream;
  // Set while the connection serves an event stream: Stop() cancels it to
  // wake the stream, and the stream's reader cancels it when the peer goes.
  std::shared_ptr<asio::steady_timer> watch_timer;
  bool peer_gone = false;
  bool from_loopback = false;  // the client's address is a loopback one

  void Close() {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream.close();
    if (watch_timer) watch_timer->cancel();
  }
};

// co_spawn's completion: an exception escaping a coroutine ends that
// coroutine only (its connection), with a line on stderr.
struct LogException {
  void operator()(std::exception_ptr e) const;
};

struct HttpServer::Impl {
  HttpOptions options;
  HttpContext context;
  uint16_t port = 0;
  SystemClock clock;

  // Request bodies in flight (HttpOptions::body_bytes_in_flight_max). Declared
  // before the I/O context: the reservations in its coroutine frames return
  // their bytes when those frames are destroyed. Thread-safe.
  std::unique_ptr<ByteBudget> body_budget;
  // Set when the API is served over TLS (options.tls_cert_file); outlives
  // every connection. Read-only after Start.
  std::unique_ptr<asio::ssl::context> tls;

  // Declared in teardown order's reverse; Stop() also resets them explicitly.
  std::unique_ptr<asio::io_context> ioc;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::WorkerPool> pool;
  // Plain key writes (http_writes_internal.h); I/O thread.
  std::unique_ptr<WriteCoalescer> writes;
  std::thread io_thread;
  std::future<void> io_done;

  std::atomic<bool> stopping{false};
  Mutex stop_mu;
  bool stopped TIDEMAP_GUARDED_BY(stop_mu) = false;

  // I/O thread only (and Stop() once that thread is gone).
  std::unordered_map<uint64_t, std::weak_ptr<Conn>> conns;
  uint64_t next_conn_id = 1;
  // Event streams past the watch_streams_max check (see WatchStreamsMax).
  size_t watch_streams = 0;

  Mutex counters_mu;
  HttpCounters counters TIDEMAP_GUARDED_BY(counters_mu);

  // Every open event stream's queue, so Stop() can close them before the
  // I/O context goes away (a late callback must not post to it).
  Mutex watches_mu;
  std::set<std::shared_ptr<WatchQueue>> watches TIDEMAP_GUARDED_BY(watches_mu);

  // options.watch_streams_max, kept below connections_max (at least 1).
  size_t WatchStreamsMax() const {
    return std::max<size_t>(1, std::min(options.watch_streams_max, options.connections_max - 1));
  }

  // The 503 "overloaded" (with Retry-After) of a request refused to shed
  // load, counted under `reason` in counters.refused_requests.
  Response Overloaded(std::string_view reason, std::string message);

  void CountRequest(http::verb method, const Route& route, http::status code) {
    MutexLock l(&counters_mu);
    ++counters.requests[HttpRequestKey{MethodLabel(method), std::string(route.name),
                                       static_cast<int>(code)}];
  }

  // An awaitable that runs `fn` (returning a Result) on the worker pool and
  // resumes the awaiting coroutine on the I/O thread with the result.
  // Exceptions become Internal (net/worker_pool.h). Callers pass a named
  // lambda, not a temporary inside the co_await expression: GCC 12
  // mishandles those.
  template <typename Fn>
  auto OnPool(Fn fn) {
    return pool->Run(ioc->get_executor(), std::move(fn), asio::use_awaitable);
  }

  // One request and its answer, as ServeRequest's steps fill them in.
  struct Exchange {
    Route route;
    http::verb method = http::verb::unknown;
    Response res;
    // Whether the connection is at a message boundary after this request
    // (its body read, or it had none), so it may serve another.
    bool at_boundary = false;
    bool client_keep_alive = false;
    bool from_loopback = false;  // the client's address is a loopback one
    // A committed plain write: its version, and its answer as the bytes
    // PlainWriteReply made (written as they are when the connection stays
    // open; else `res` is built from the version). `res` is unused then.
    std::optional<Version> plain_version;
    std::string plain_reply;
  };

  // --- http.cc: connections (I/O thread) ---
  asio::awaitable<void> AcceptLoop();
  void Refuse(tcp::socket& socket);
  asio::awaitable<void> Session(tcp::socket socket);
  // --- http_tls.cc ---
  // Reads the client's first bytes into `buffer`: a TLS handshake record is
  // answered with the handshake, a plaintext request with a 400 saying the
  // port speaks HTTPS, anything else with a close. True: TLS is up and the
  // connection serves requests.
  asio::awaitable<bool> StartTls(Conn& conn, beast::flat_buffer& buffer);
  asio::awaitable<void> RefusePlaintext(Conn& conn);
  // Reads one request, answers it. False: the connection is done (closed,
  // failed, not kept alive, or handed to an event stream that ended it).
  asio::awaitable<bool> ServeRequest(std::shared_ptr<Conn> conn, beast::flat_buffer& buffer);
  // The route, then the checks from the headers alone and, when they pass,
  // the body and the handler. False as for ServeRequest.
  asio::awaitable<bool> Dispatch(std::shared_ptr<Conn> conn, beast::flat_buffer& buffer,
                                 http::request_parser<http::empty_body>& header_parser,
                                 Exchange& x);
  // The refusal a request earns from its headers (token, route, method,
  // target, declared size), if any.
  std::optional<Response> CheckRequest(const http::request_parser<http::empty_body>& header_parser,
                                       const Exchange& x, size_t body_limit) const;
  // Reads the body (after a 100 Continue when asked) and runs the handler
  // on the worker pool, or serves the event stream. The body is held in
  // `body_hold`, which must outlive the handler. False as for ServeRequest.
  // A PUT or DELETE of one key without If-Match (a plain write, committed
  // with the others queued at the time: http_writes_internal.h).
  static bool IsPlainWrite(const Exchange& x, const Request& req);
  // Commits a plain write through `writes` and sets x.res.
  asio::awaitable<void> CommitPlainWrite(Exchange& x, Request& req);
  asio::awaitable<bool> ReadAndHandle(std::shared_ptr<Conn> conn, beast::flat_buffer& buffer,
                                      http::request_parser<http::empty_body>& header_parser,
                                      size_t body_limit, ByteReservation* body_hold, Exchange& x);
  // Reads the request's body into *req (then x.at_boundary is set), or
  // refuses it in x.res (413, 400, 503 over the budget). False: the
  // connection failed or timed out mid-body.
  asio::awaitable<bool> ReadBody(Conn& conn, beast::flat_buffer& buffer,
                                 http::request_parser<http::empty_body>& header_parser,
                                 size_t body_limit, ByteReservation* body_hold, Exchange& x,
                                 Request* req);
  // Counts and writes x.res; closes (lingering if the body was not read)
  // unless the connection is kept alive. True: serve the next request.
  asio::awaitable<bool> Respond(Conn& conn, Exchange& x);
  asio::awaitable<bool> Write(Conn& conn, Response& res);
  asio::awaitable<bool> WriteRaw(Conn& conn, const std::string& bytes);
  void CloseAll();

  // --- http_routes.cc: handlers (worker pool) ---
  // HEAD is handled as GET; the I/O thread drops the body.
  Result<Response> Handle(http::verb method, const Route& route, const RequestMeta& meta,
                          std::string body);
  Result<Response> HandleKey(http::verb method, const Route& route, const RequestMeta& meta,
                             std::string body);
  Result<Response> HandleScan(const Route& route, const RequestMeta& meta);
  // DELETE /v1/maps/{map}: clears the map (http_clear.cc).
  Result<Response> HandleClearMap(const Route& route);
  // --- http_conditional.cc ---
  Result<Response> HandleGetKey(const Route& route, const RequestMeta& meta);
  // PUT or DELETE with If-Match: a compare-and-set (Replica::PutIf, DeleteIf);
  // a PUT's `put_options` (its ttl) apply as for a plain PUT.
  Result<Response> HandleWriteIf(http::verb method, const Route& route, const std::string& if_match,
                                 const PutOptions& put_options, std::string body);
  // --- http_batch.cc ---
  Result<Response> HandleBatch(const RequestMeta& meta, std::string body);
  Result<Response> HandleHealth();
  Result<Response> HandleStatus();
  Result<Response> HandlePending(const Route& route);
  Result<Response> HandleMetrics();
  // --- http_ui.cc: the web console's files (worker pool) ---
  Result<Response> HandleUi(const Route& route);

  // HEAD /v1/watch (http_watch.cc, worker pool): the stream's status and
  // headers, without opening one.
  Result<Response> HandleWatchHead(const Route& route);
  // POST /v1/admin/reload (worker pool): re-reads the config and trust file.
  Result<Response> HandleReload();
  // GET and POST /v1/admin/rekey (worker pool; http_rekey.cc): the rekey's
  // progress, or the start of one on the rekey job's own thread.
  Result<Response> HandleRekey(http::verb method, std::string body);

  // --- http_snapshot.cc: GET /v1/snapshot, a chunked stream (I/O thread),
  // and its HEAD (worker pool) ---
  asio::awaitable<void> ServeSnapshot(std::shared_ptr<Conn> conn, const Route& route);
  Result<Response> HandleSnapshotHead();

  // --- http_watch.cc: event streams (I/O thread) ---
  asio::awaitable<void> ServeWatch(std::shared_ptr<Conn> conn, const Request& req,
                                   const Route& route);
  // Creates w's queue and timer and registers the queue for Stop().
  void OpenWatchQueue(Conn& conn, WatchState* w);
  // The refusal (410, or an error) of a resume from `from`, if any.
  asio::awaitable<std::optional<Response>> CheckResumable(uint64_t from);
  // Sends events until the client goes, the server stops or the stream fails.
  asio::awaitable<void> StreamWatch(Conn& conn, WatchState& w);
  // One read of the oplog while replaying; one look at the queue when live.
  // False: the stream ends (w.final_code may say why).
  asio::awaitable<bool> ReplayStep(Conn& conn, WatchState& w);
  asio::awaitable<bool> LiveStep(Conn& conn, WatchState& w);
  asio::awaitable<void> WatchReader(std::shared_ptr<Conn> conn);
  asio::awaitable<void> ReplyAndClose(std::shared_ptr<Conn> conn, http::verb method,
                                      const Route& route, Response res);
  asio::awaitable<bool> WriteEvents(Conn& conn, const std::string& text, uint64_t events);
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_INTERNAL_H_
