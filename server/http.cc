// The HTTP server's connections: accepting, reading and checking one
// request after another, handing them to the routes (http_routes.cc) or the
// event stream (http_watch.cc), answering; and starting and stopping.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>

#include <tidemap/base/crypto.h>
#include <tidemap/base/thread_name.h>
#include <tidemap/server/http_internal.h>
#include <tidemap/server/url.h>

namespace tidemap {

namespace {

// Bodies of requests whose route takes none (GET, DELETE) are read and
// dropped up to this size; larger ones are refused (413).
constexpr size_t kOtherBodyBytesMax = 64 * 1024;
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
// The Retry-After of a 503 "overloaded": the load it sheds is short-lived.
constexpr std::string_view kOverloadedRetryAfterSeconds = "1";

// Opens, binds and starts `acceptor` listening on `endpoint` (`listen` as
// given, for messages); returns the bound port.
Result<uint16_t> Listen(tcp::acceptor& acceptor, const tcp::endpoint& endpoint,
                        const std::string& listen) {
  beast::error_code ec;
  auto fail = [&](std::string_view what) {
    return Status::Unavailable("cannot listen for HTTP on " + listen + ": " + std::string(what) +
                               ": " + ec.message());
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail("SO_REUSEADDR");
  acceptor.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  const uint16_t port = acceptor.local_endpoint(ec).port();
  if (ec) return fail("local endpoint");
  return port;
}

// The headers a handler reads.
RequestMeta MetaOf(const Request& req) {
  RequestMeta meta;
  meta.content_type = std::string(View(req[http::field::content_type]));
  if (auto it = req.find(http::field::if_match); it != req.end()) {
    meta.if_match = std::string(View(it->value()));
  }
  if (auto it = req.find(http::field::if_none_match); it != req.end()) {
    meta.if_none_match = std::string(View(it->value()));
  }
  meta.accepts_gzip = AcceptsGzip(View(req[http::field::accept_encoding]));
  return meta;
}

}  // namespace

void LogException::operator()(std::exception_ptr e) const {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "tidemap http: connection ended by exception: %s\n", ex.what());
  } catch (...) {
    std::fprintf(stderr, "tidemap http: connection ended by an unknown exception\n");
  }
}

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

Response HttpServer::Impl::Overloaded(std::string_view reason, std::string message) {
  {
    MutexLock l(&counters_mu);
    ++counters.refused_requests[std::string(reason)];
  }
  Response res = ErrorResponse(http::status::service_unavailable, "overloaded", std::move(message));
  res.set(http::field::retry_after, beast::string_view(kOverloadedRetryAfterSeconds.data(),
                                                       kOverloadedRetryAfterSeconds.size()));
  return res;
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
  auto conn = std::make_shared<Conn>(std::move(socket), tls.get());
  {
    // Asked once: the peer's address does not change while connected.
    beast::error_code ec;
    const tcp::endpoint client = conn->stream.socket().remote_endpoint(ec);
    conn->from_loopback = !ec && client.address().is_loopback();
  }
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
  if (tls && !co_await StartTls(*conn, buffer)) co_return;
  // One request per round, while the connection is kept alive.
  while (!stopping.load()) {
    if (!co_await ServeRequest(conn, buffer)) break;
  }
}

asio::awaitable<bool> HttpServer::Impl::ServeRequest(std::shared_ptr<Conn> conn,
                                                     beast::flat_buffer& buffer) {
  http::request_parser<http::empty_body> header_parser;
  header_parser.header_limit(static_cast<uint32_t>(
      std::min<size_t>(options.header_bytes_max, std::numeric_limits<uint32_t>::max())));
  // Bodies are limited per route below; Beast 1.74 mishandles body_limit(none).
  header_parser.body_limit(std::numeric_limits<uint64_t>::max());
  conn->stream.expires_after(std::chrono::milliseconds(options.request_timeout_ms));
  beast::error_code ec;
  co_await http::async_read_header(conn->stream, buffer, header_parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  Exchange x;
  if (ec == http::error::header_limit) {
    x.res = ErrorResponse(
        http::status::request_header_fields_too_large, "refused",
        "request headers over " + std::to_string(options.header_bytes_max) + " bytes");
  } else if (ec == http::error::end_of_stream || (ec && !IsHttpError(ec))) {
    // The peer closed or idled out, a socket error, or the server is stopping: no answer.
    co_return false;
  } else if (ec) {
    x.res = ErrorResponse(http::status::bad_request, "invalid_argument",
                          "malformed request: " + ec.message());
  } else if (!co_await Dispatch(conn, buffer, header_parser, x)) {
    co_return false;  // an event stream, or the connection failed mid-request
  }
  co_return co_await Respond(*conn, x);
}

std::optional<Response> HttpServer::Impl::CheckRequest(
    const http::request_parser<http::empty_body>& header_parser, const Exchange& x,
    size_t body_limit) const {
  const auto& req = header_parser.get();
  const std::string_view auth = View(req[http::field::authorization]);
  constexpr std::string_view kBearer = "Bearer ";
  // The web console's files hold no data: served without the token (http_ui.cc).
  // Health answers a local probe without one (it tells only whether the node serves).
  bool authorized = options.bearer_token.empty() || x.route.kind == RouteKind::kUi ||
                    (x.route.kind == RouteKind::kHealth && x.from_loopback);
  if (!authorized && auth.size() > kBearer.size() &&
      beast::iequals(beast::string_view(auth.data(), kBearer.size()), "Bearer ")) {
    authorized = crypto::SecretEquals(auth.substr(kBearer.size()), options.bearer_token);
  }
  if (!authorized) {
    Response res = ErrorResponse(
        http::status::unauthorized, "unauthorized",
        auth.empty() ? "missing bearer token (Authorization: Bearer TOKEN)" : "wrong bearer token");
    res.set(http::field::www_authenticate, "Bearer realm=\"tidemap\"");
    return res;
  }
  if (x.route.kind == RouteKind::kUnknown) {
    return ErrorResponse(http::status::not_found, "not_found",
                         "no route " + Printable(View(req.target())));
  }
  if (!MethodAllowed(x.route.kind, x.method)) {
    Response res = ErrorResponse(http::status::method_not_allowed, "method_not_allowed",
                                 "method " + std::string(View(req.method_string())) +
                                     " not allowed on " + std::string(x.route.name));
    const std::string_view allow = AllowHeader(x.route.kind);
    res.set(http::field::allow, beast::string_view(allow.data(), allow.size()));
    return res;
  }
  if (!x.route.error.ok()) {
    return ErrorResponse(http::status::bad_request, "invalid_argument", x.route.error.message());
  }
  if (header_parser.content_length().has_value() && *header_parser.content_length() > body_limit) {
    // Refused from the header alone: the body is never read.
    return ErrorResponse(http::status::payload_too_large, "refused",
                         (x.method == http::verb::put ? "value is " : "request body is ") +
                             std::to_string(*header_parser.content_length()) + " bytes, limit " +
                             std::to_string(body_limit));
  }
  return std::nullopt;
}

asio::awaitable<bool> HttpServer::Impl::Dispatch(
    std::shared_ptr<Conn> conn, beast::flat_buffer& buffer,
    http::request_parser<http::empty_body>& header_parser, Exchange& x) {
  const auto& req = header_parser.get();
  x.method = req.method();
  x.client_keep_alive = req.keep_alive();
  x.route = MatchRoute(View(req.target()));
  x.from_loopback = conn->from_loopback;
  const bool body_pending =
      header_parser.chunked() ||
      (header_parser.content_length().has_value() && *header_parser.content_length() > 0);
  size_t body_limit = kOtherBodyBytesMax;
  if (x.route.kind == RouteKind::kKey && x.method == http::verb::put) {
    body_limit = context.replica->limits().value_bytes_max;
  } else if (x.route.kind == RouteKind::kBatch) {
    body_limit = BatchBodyBytesMax(context.replica->limits());
  }
  // The body's bytes count against the budget from here until the request
  // is answered (this frame's end), or the connection dies.
  ByteReservation body_hold(body_budget.get());
  const boost::optional<uint64_t> length = header_parser.content_length();
  if (std::optional<Response> refusal = CheckRequest(header_parser, x, body_limit)) {
    x.res = std::move(*refusal);
  } else if (length.has_value() && !body_hold.GrowTo(*length)) {
    // Refused before any of the body is read.
    x.res = Overloaded("http_body_bytes_in_flight_max",
                       "request bodies in flight are at their limit of " +
                           std::to_string(body_budget->bytes_max()) + " bytes; this body of " +
                           std::to_string(*length) + " bytes does not fit: retry later");
  } else if (!co_await ReadAndHandle(conn, buffer, header_parser, body_limit, &body_hold, x)) {
    co_return false;
  }
  // Answered before reading the body: only a request without one leaves
  // the connection usable (`req` is not touched: the parser may be moved).
  if (!body_pending) x.at_boundary = true;
  co_return true;
}

asio::awaitable<bool> HttpServer::Impl::ReadBody(
    Conn& conn, beast::flat_buffer& buffer, http::request_parser<http::empty_body>& header_parser,
    size_t body_limit, ByteReservation* body_hold, Exchange& x, Request* req) {
  const auto timeout = std::chrono::milliseconds(options.request_timeout_ms);
  const bool body_pending =
      header_parser.chunked() ||
      (header_parser.content_length().has_value() && *header_parser.content_length() > 0);
  beast::error_code ec;
  if (body_pending && beast::iequals(header_parser.get()[http::field::expect], "100-continue")) {
    http::response<http::empty_body> cont{http::status::continue_, header_parser.get().version()};
    conn.stream.expires_after(timeout);
    co_await http::async_write(conn.stream, cont, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;
  }
  http::request_parser<BudgetedBody> parser(std::move(header_parser));
  parser.body_limit(body_limit);
  parser.get().body().reservation = body_hold;
  parser.get().body().bytes_max = body_limit;
  conn.stream.expires_after(timeout);
  co_await http::async_read(conn.stream, buffer, parser,
                            asio::redirect_error(asio::use_awaitable, ec));
  if (parser.get().body().over_budget) {
    x.res = Overloaded("http_body_bytes_in_flight_max",
                       "request bodies in flight are at their limit of " +
                           std::to_string(body_budget->bytes_max()) +
                           " bytes; this chunked body outgrew what remained: retry later");
  } else if (ec == http::error::body_limit) {
    x.res = ErrorResponse(http::status::payload_too_large, "refused",
                          (x.method == http::verb::put ? "value" : "request body") +
                              std::string(" is over the limit of ") + std::to_string(body_limit) +
                              " bytes");
  } else if (ec && IsHttpError(ec)) {
    x.res = ErrorResponse(http::status::bad_request, "invalid_argument",
                          "malformed request body: " + ec.message());
  } else if (ec) {
    co_return false;  // closed or timed out mid-body
  } else {
    x.at_boundary = true;
    auto& message = parser.get();
    *req = Request(std::move(message.base()));
    req->body() = std::move(message.body().bytes);
  }
  co_return true;
}

asio::awaitable<bool> HttpServer::Impl::ReadAndHandle(
    std::shared_ptr<Conn> conn, beast::flat_buffer& buffer,
    http::request_parser<http::empty_body>& header_parser, size_t body_limit,
    ByteReservation* body_hold, Exchange& x) {
  Request req;
  if (!co_await ReadBody(*conn, buffer, header_parser, body_limit, body_hold, x, &req)) {
    co_return false;
  }
  if (!x.at_boundary) co_return true;  // refused while reading: x.res says why
  if (x.route.kind == RouteKind::kWatch && x.method == http::verb::get) {
    // A stream outlives its request: its body (dropped) counts no longer.
    req.body() = std::string();
    body_hold->Release();
    co_await ServeWatch(conn, req, x.route);
    co_return false;  // an event stream ends its connection
  }
  if (x.route.kind == RouteKind::kSnapshot && x.method == http::verb::get) {
    co_await ServeSnapshot(conn, x.route);
    co_return false;  // so does a snapshot stream
  }
  if (IsPlainWrite(x, req)) {
    co_await CommitPlainWrite(x, req);
    co_return true;
  }
  auto handle = [this, method = x.method, route = x.route, meta = MetaOf(req),
                 body = std::move(req.body())]() mutable {
    return Handle(method, route, meta, std::move(body));
  };
  Result<Response> result = co_await OnPool(std::move(handle));
  x.res = result.ok() ? std::move(*result) : StatusResponse(result.status());
  co_return true;
}

bool HttpServer::Impl::IsPlainWrite(const Exchange& x, const Request& req) {
  return x.route.kind == RouteKind::kKey &&
         (x.method == http::verb::put || x.method == http::verb::delete_) &&
         req.find(http::field::if_match) == req.end();
}

asio::awaitable<void> HttpServer::Impl::CommitPlainWrite(Exchange& x, Request& req) {
  Result<PutOptions> put_options = KeyWriteOptions(x.method, x.route);
  if (!put_options.ok()) {
    x.res = StatusResponse(put_options.status());
    co_return;
  }
  auto w = std::make_shared<PlainWrite>();
  w->method = x.method;
  w->map = x.route.map;
  w->key = x.route.key;
  w->value = std::move(req.body());
  w->options = *put_options;
  // Runs once this coroutine is suspended; the coalescer takes the only
  // reference to the write (the coroutine keeps none: see http_writes_internal.h).
  auto submit = [this, &w](auto handler) {
    w->waiter = std::make_unique<PlainWriteWaiterOf<decltype(handler)>>(std::move(handler));
    writes->Submit(std::move(w));
  };
  PlainWriteResult r =
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(PlainWriteResult)>(
          submit, asio::use_awaitable);
  if (!r.status.ok()) {
    x.res = StatusResponse(r.status);
    co_return;
  }
  x.plain_version = r.version;
  x.plain_reply = std::move(r.reply);
}

asio::awaitable<bool> HttpServer::Impl::Respond(Conn& conn, Exchange& x) {
  const bool keep_alive = x.at_boundary && x.client_keep_alive && !stopping.load();
  if (x.plain_version.has_value()) {
    // A committed plain write: its answer's bytes as they are, or its
    // response, to be sent with "Connection: close".
    if (keep_alive) {
      CountRequest(x.method, x.route, http::status::ok);
      co_return co_await WriteRaw(conn, x.plain_reply);
    }
    x.res = WriteResponse(x.method, *x.plain_version);
  }
  CountRequest(x.method, x.route, x.res.result());
  x.res.keep_alive(keep_alive);
  x.res.prepare_payload();
  // HEAD: the headers a GET gets, Content-Length included, and no body. A
  // streamed route's length is known only once it is sent: no Content-Length
  // at all (RFC 9110 lets HEAD omit it), rather than a false 0.
  if (x.method == http::verb::head) {
    if (x.route.kind == RouteKind::kWatch || x.route.kind == RouteKind::kSnapshot) {
      x.res.erase(http::field::content_length);
    }
    x.res.body().clear();
  }
  if (!co_await Write(conn, x.res)) co_return false;
  if (keep_alive) co_return true;
  beast::error_code ec;
  if (conn.stream.tls() != nullptr && x.at_boundary) {
    // TLS close_notify, so the client sees a clean end rather than a
    // truncation; it completes when the client closes too, or times out.
    conn.stream.expires_after(kLingerTime);
    co_await conn.stream.tls()->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  }
  conn.stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!x.at_boundary) {
    // A lingering close: read and drop the unsent body (see kLingerTime).
    conn.stream.expires_after(kLingerTime);
    char sink[16384];
    for (size_t drained = 0; drained < kLingerBytesMax && !stopping.load();) {
      const size_t n = co_await conn.stream.async_read_some(
          asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      drained += n;
    }
  }
  co_return false;
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
      options.sse_queue_events_max == 0 || options.header_bytes_max == 0 ||
      options.body_bytes_in_flight_max == 0 || options.watch_streams_max == 0) {
    return Status::InvalidArgument(
        "HTTP options: worker_threads, connections_max, sse_queue_events_max, "
        "header_bytes_max, body_bytes_in_flight_max and watch_streams_max must be at least 1");
  }
  TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options.listen));
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Status::InvalidArgument(
        "HTTP TLS needs both a certificate file and a key file (--http-tls-cert, "
        "--http-tls-key)");
  }
  try {
    auto impl = std::make_unique<Impl>();
    if (!options.tls_cert_file.empty()) {
      TIDEMAP_ASSIGN_OR_RETURN(impl->tls,
                               LoadServerTls(options.tls_cert_file, options.tls_key_file));
    }
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
    TIDEMAP_ASSIGN_OR_RETURN(impl->port, Listen(*impl->acceptor, endpoint, options.listen));

    impl->options = std::move(options);
    impl->context = std::move(context);
    impl->body_budget = std::make_unique<ByteBudget>(impl->options.body_bytes_in_flight_max);
    impl->pool = std::make_unique<net::WorkerPool>(impl->options.worker_threads);
    impl->writes = std::make_unique<WriteCoalescer>(impl->context.replica, impl->ioc.get());
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
  s.pool->Join();
  s.writes->Join();
  // Frames still queued (a stopped loop) are destroyed here, on this thread,
  // with the I/O thread gone: first those of plain writes never committed
  // (their coalescer owns them), while the I/O context still exists.
  s.writes.reset();
  s.acceptor.reset();
  s.ioc.reset();
  s.pool.reset();
}

}  // namespace tidemap
