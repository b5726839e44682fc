// The HTTP server's route table: each route's path template and methods.
// MatchRoute (http_routes.cc), the 405 checks and the Allow header read it,
// and a test holds it to the OpenAPI document, so a route cannot be served
// without being documented.
#include <tidemap/server/http_api_internal.h>
#include <tidemap/server/http_internal.h>

namespace tidemap {

namespace {

struct RouteEntry {
  RouteKind kind;
  std::string_view path;
  std::string_view methods;  // HEAD wherever GET is (RFC 9110 9.1)
};

constexpr RouteEntry kRoutes[] = {
    {RouteKind::kKey, "/v1/maps/{map}/keys/{key}", "GET, HEAD, PUT, DELETE"},
    {RouteKind::kMap, "/v1/maps/{map}", "GET, HEAD, DELETE"},
    {RouteKind::kBatch, "/v1/batch", "POST"},
    {RouteKind::kHealth, "/v1/health", "GET, HEAD"},
    {RouteKind::kStatus, "/v1/status", "GET, HEAD"},
    {RouteKind::kPending, "/v1/pending", "GET, HEAD"},
    {RouteKind::kWatch, "/v1/watch", "GET, HEAD"},
    {RouteKind::kMetrics, "/metrics", "GET, HEAD"},
    {RouteKind::kOpenApi, "/v1/openapi.json", "GET, HEAD"},
    {RouteKind::kReload, "/v1/admin/reload", "POST"},
    {RouteKind::kRekey, "/v1/admin/rekey", "GET, HEAD, POST"},  // http_rekey.cc
    {RouteKind::kSnapshot, "/v1/snapshot", "GET, HEAD"},
    {RouteKind::kUi, "/ui", "GET, HEAD"},  // the web console (http_ui.cc)
    {RouteKind::kUi, "/ui/{file}", "GET, HEAD"},
};

const RouteEntry* EntryOf(RouteKind kind) {
  for (const RouteEntry& e : kRoutes) {
    if (e.kind == kind) return &e;
  }
  return nullptr;
}

}  // namespace

std::vector<HttpRouteSpec> HttpRouteTable() {
  std::vector<HttpRouteSpec> out;
  for (const RouteEntry& e : kRoutes) out.push_back(HttpRouteSpec{e.path, e.methods});
  return out;
}

std::string_view RouteTemplate(RouteKind kind) {
  const RouteEntry* e = EntryOf(kind);
  return e == nullptr ? std::string_view("unknown") : e->path;
}

RouteKind FixedRoute(std::string_view path) {
  for (const RouteEntry& e : kRoutes) {
    if (e.path == path && e.path.find('{') == std::string_view::npos) return e.kind;
  }
  return RouteKind::kUnknown;
}

bool MethodAllowed(RouteKind kind, http::verb v) {
  const RouteEntry* e = EntryOf(kind);
  if (e == nullptr) return false;
  const std::string_view name = View(http::to_string(v));
  for (std::string_view rest = e->methods; !rest.empty();) {
    const size_t comma = rest.find(',');
    std::string_view token = rest.substr(0, comma);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    if (token == name) return true;
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return false;
}

std::string_view AllowHeader(RouteKind kind) {
  const RouteEntry* e = EntryOf(kind);
  return e == nullptr ? std::string_view() : e->methods;
}

}  // namespace tidemap
