// The HTTP server's routing and responses, and the handlers of the plain
// routes (keys, scans, health, status, metrics). Handlers run on the worker pool.
#include <algorithm>
#include <charconv>

#include <tidemap/server/duration.h>
#include <tidemap/server/http_api_internal.h>
#include <tidemap/server/http_internal.h>
#include <tidemap/server/json.h>
#include <tidemap/server/pending.h>
#include <tidemap/server/rekey_job.h>
#include <tidemap/server/status.h>
#include <tidemap/server/url.h>

namespace tidemap {

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

}  // namespace

std::string Dump(const nlohmann::json& j, int indent) {
  // `replace`: a message quoting raw bytes must not throw on invalid UTF-8.
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

Response MakeResponse(http::status status, std::string body, std::string_view content_type) {
  Response res{status, 11};
  res.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  res.body() = std::move(body);
  return res;
}

Response JsonResponse(http::status status, const nlohmann::json& j, bool pretty) {
  return MakeResponse(status, Dump(j, pretty ? 2 : -1) + (pretty ? "\n" : ""), "application/json");
}

Response ErrorResponse(http::status status, std::string_view code, std::string message) {
  return JsonResponse(status, {{"error", std::move(message)}, {"code", std::string(code)}});
}

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
    case Status::Code::kQuotaExceeded:
      return http::status::insufficient_storage;
  }
  return http::status::internal_server_error;
}

Response StatusResponse(const Status& s) {
  return ErrorResponse(HttpStatusFor(s), Status::CodeName(s.code()), s.message());
}

std::string_view View(beast::string_view v) { return std::string_view(v.data(), v.size()); }

bool IsHttpError(const beast::error_code& ec) {
  return ec.category() == beast::error_code(http::error::need_more).category();
}

Route MatchRoute(std::string_view target) {
  Route r;
  const size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) r.query = std::string(target.substr(q + 1));
  constexpr std::string_view kMaps = "/v1/maps/";
  if (const RouteKind fixed = FixedRoute(path); fixed != RouteKind::kUnknown) {
    r.kind = fixed;
    r.name = RouteTemplate(fixed);
  } else if (MatchUiRoute(path, &r)) {
    // the web console's files: `r` is filled in
  } else if (path.substr(0, kMaps.size()) == kMaps) {
    const std::string_view rest = path.substr(kMaps.size());
    const size_t slash = rest.find('/');
    auto map = PercentDecode(rest.substr(0, slash), false);
    if (slash == std::string_view::npos) {
      r.kind = RouteKind::kMap;
      r.name = RouteTemplate(RouteKind::kMap);
    } else {
      // Everything after "keys/" is the key, so an unescaped '/' belongs to it.
      constexpr std::string_view kKeys = "keys/";
      const std::string_view tail = rest.substr(slash + 1);
      if (tail.substr(0, kKeys.size()) != kKeys) return r;  // unknown
      r.kind = RouteKind::kKey;
      r.name = RouteTemplate(RouteKind::kKey);
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

Result<Response> HttpServer::Impl::Handle(http::verb method, const Route& route,
                                          const RequestMeta& meta, std::string body) {
  // Only scans, watches and pending take query parameters; elsewhere any is
  // an error, not something silently ignored.
  // Key routes check theirs in HandleKey (a put takes `ttl`).
  if (route.kind != RouteKind::kMap && route.kind != RouteKind::kWatch &&
      route.kind != RouteKind::kKey && route.kind != RouteKind::kPending) {
    TIDEMAP_RETURN_IF_ERROR(Params(route.query, {}).status());
  }
  if (method == http::verb::head) method = http::verb::get;
  switch (route.kind) {
    case RouteKind::kKey:
      return HandleKey(method, route, meta, std::move(body));
    case RouteKind::kMap:
      if (method == http::verb::delete_) return HandleClearMap(route);
      return HandleScan(route, meta);
    case RouteKind::kBatch:
      return HandleBatch(meta, std::move(body));
    case RouteKind::kOpenApi:
      return MakeResponse(http::status::ok, std::string(OpenApiDocument()), "application/json");
    case RouteKind::kHealth:
      return HandleHealth();
    case RouteKind::kStatus:
      return HandleStatus();
    case RouteKind::kPending:
      return HandlePending(route);
    case RouteKind::kMetrics:
      return HandleMetrics();
    case RouteKind::kUi:
      return HandleUi(route);
    case RouteKind::kReload:
      return HandleReload();
    case RouteKind::kRekey:
      return HandleRekey(method, std::move(body));
    case RouteKind::kWatch:  // only HEAD comes here: GET serves the stream
      return HandleWatchHead(route);
    case RouteKind::kSnapshot:  // likewise
      return HandleSnapshotHead();
    case RouteKind::kUnknown:
      break;
  }
  return Status::Internal("no handler for route " + std::string(route.name));
}

Result<PutOptions> KeyWriteOptions(http::verb method, const Route& route) {
  const bool put = method == http::verb::put;
  TIDEMAP_ASSIGN_OR_RETURN(auto params,
                           put ? Params(route.query, {"ttl"}) : Params(route.query, {}));
  PutOptions options;
  if (auto ttl = params.find("ttl"); ttl != params.end()) {
    TIDEMAP_ASSIGN_OR_RETURN(options.ttl_ms, ParseDurationMs("ttl", ttl->second, kTtlMaxMs));
  }
  return options;
}

Result<Response> HttpServer::Impl::HandleKey(http::verb method, const Route& route,
                                             const RequestMeta& meta, std::string body) {
  Replica* replica = context.replica;
  TIDEMAP_ASSIGN_OR_RETURN(const PutOptions put_options, KeyWriteOptions(method, route));
  if (method == http::verb::get) return HandleGetKey(route, meta);
  if (meta.if_match.has_value()) {
    return HandleWriteIf(method, route, *meta.if_match, put_options, std::move(body));
  }
  Result<Version> v = method == http::verb::put
                          ? replica->Put(route.map, route.key, body, put_options)
                          : replica->Delete(route.map, route.key);
  if (!v.ok()) return v.status();
  return WriteResponse(method, *v);
}

namespace {

// A scan page, gzipped when the client accepts it. Vary tells caches the
// encoding depends on Accept-Encoding.
Result<Response> ScanResponse(const ScanPage& page, bool gzip) {
  Response res = JsonResponse(http::status::ok, ScanPageJson(page), /*pretty=*/true);
  res.set(http::field::vary, "Accept-Encoding");
  if (gzip) {
    TIDEMAP_ASSIGN_OR_RETURN(res.body(), Gzip(res.body()));
    res.set(http::field::content_encoding, "gzip");
  }
  return res;
}

}  // namespace

Result<Response> HttpServer::Impl::HandleScan(const Route& route, const RequestMeta& meta) {
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
        return ScanResponse(page, meta.accepts_gzip);
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
  return ScanResponse(page, meta.accepts_gzip);
}

// Readiness, not mere liveness: a node whose storage refuses writes answers
// 503, so a load balancer or a start-up script waits for (or routes around)
// a node that could not take a put. Reads may still work; /v1/status says more.
Result<Response> HttpServer::Impl::HandleHealth() {
  const StorageHealth health = context.replica->storage_health();
  if (!health.error.empty()) {
    return JsonResponse(
        http::status::service_unavailable,
        {{"status", "degraded"}, {"reason", "storage refuses writes: " + health.error}});
  }
  return JsonResponse(http::status::ok, {{"status", "ok"}});
}

Result<Response> HttpServer::Impl::HandleReload() {
  if (!context.reload) return Status::NotFound("no route /v1/admin/reload: nothing to reload");
  TIDEMAP_ASSIGN_OR_RETURN(ReloadReport report, context.reload());
  return JsonResponse(http::status::ok, ReloadReportJson(report));
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
  nlohmann::json status = StatusJson(info, peers);
  if (context.rekey != nullptr) status["encryption"] = context.rekey->EncryptionJson();
  return JsonResponse(http::status::ok, status, /*pretty=*/true);
}

Result<Response> HttpServer::Impl::HandlePending(const Route& route) {
  TIDEMAP_ASSIGN_OR_RETURN(auto params, Params(route.query, {"peer", "after", "limit"}));
  uint64_t after = 0, limit = kPendingDefaultItems;
  if (auto it = params.find("after"); it != params.end()) {
    TIDEMAP_ASSIGN_OR_RETURN(after, ParseU64("after", it->second));
  }
  if (auto it = params.find("limit"); it != params.end()) {
    TIDEMAP_ASSIGN_OR_RETURN(limit, ParseU64("limit", it->second));
  }
  const uint64_t now_ms = clock.NowMillis();
  std::vector<net::PeerStatus> peers;
  if (context.net_status) {
    peers = context.net_status().peers;
  } else {
    TIDEMAP_ASSIGN_OR_RETURN(peers,
                             PeersFromOplog(context.replica, context.replica->LastSeq(), now_ms));
  }
  if (auto it = params.find("peer"); it != params.end()) {
    TIDEMAP_ASSIGN_OR_RETURN(net::PeerStatus peer, FindPeer(peers, it->second));
    peers = {std::move(peer)};
  }
  std::vector<PendingPage> pages;
  for (const net::PeerStatus& p : peers) {
    if (p.node_id == 0) continue;  // a configured address not identified yet
    TIDEMAP_ASSIGN_OR_RETURN(PendingPage page,
                             ReadPending(*context.replica, p, after, limit, now_ms));
    pages.push_back(std::move(page));
  }
  return JsonResponse(http::status::ok, PendingJson(pages), /*pretty=*/true);
}

Result<Response> HttpServer::Impl::HandleMetrics() {
  MetricsSnapshot snap;
  TIDEMAP_ASSIGN_OR_RETURN(snap.replica, context.replica->Stats());
  if (context.net_status) snap.net = context.net_status();
  {
    MutexLock l(&counters_mu);
    snap.http = counters;
  }
  snap.http.body_bytes_in_flight = body_budget->bytes_held();
  snap.http.body_bytes_in_flight_peak = body_budget->bytes_held_peak();
  std::string text = RenderMetrics(snap);
  if (context.rekey != nullptr) text += context.rekey->MetricsText();
  return MakeResponse(http::status::ok, std::move(text),
                      "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace tidemap
