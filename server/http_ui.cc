// The web console: GET /ui (and /ui/) answers index.html, GET /ui/NAME one of
// the other files of server/ui/, all compiled into the binary
// (server/ui_assets_internal.h). The files hold no data, so they are served
// without the bearer token; the page asks for the token and sends it with
// each API call it makes (README "Web console").
#include <tidemap/server/http_internal.h>
#include <tidemap/server/ui_assets_internal.h>

namespace tidemap {

namespace {

constexpr std::string_view kUiRoot = "/ui";
constexpr std::string_view kUiIndex = "index.html";

// The page talks only to the node that served it, runs only its own files
// and is never framed by another site; the token it holds stays out of
// Referer headers.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

void SetHeader(Response* res, beast::string_view name, std::string_view value) {
  res->set(name, beast::string_view(value.data(), value.size()));
}

}  // namespace

bool MatchUiRoute(std::string_view path, Route* r) {
  if (path.substr(0, kUiRoot.size()) != kUiRoot) return false;
  const std::string_view rest = path.substr(kUiRoot.size());
  if (!rest.empty() && rest.front() != '/') return false;  // e.g. "/uix"
  r->kind = RouteKind::kUi;
  r->name = "/ui";
  r->key = std::string(rest.empty() ? rest : rest.substr(1));
  return true;
}

Result<Response> HttpServer::Impl::HandleUi(const Route& route) {
  const std::string_view name = route.key.empty() ? kUiIndex : std::string_view(route.key);
  for (const UiAsset& asset : UiAssets()) {
    if (asset.path != name) continue;
    Response res = MakeResponse(http::status::ok, std::string(asset.bytes), asset.content_type);
    // Revalidated on every load, so a node that was upgraded serves its own console.
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Referrer-Policy", "no-referrer");
    SetHeader(&res, "Content-Security-Policy", kContentSecurityPolicy);
    return res;
  }
  return Status::NotFound("no file '" + Printable(name) + "' in the web console");
}

}  // namespace tidemap
