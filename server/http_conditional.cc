// Key reads and writes under HTTP's conditional requests (RFC 9110 13.1):
// a key's ETag is its version, strong and quoted ("HLC/ORIGIN", as
// Version::ToString prints it). GET and HEAD answer If-None-Match with 304;
// PUT and DELETE with If-Match are a compare-and-set (Replica::PutIf,
// DeleteIf), 412 when the key's version differs or the key is absent. Also
// the gzip encoding of scan pages.
#include <zlib.h>

#include <charconv>

#include <tidemap/server/http_internal.h>

namespace tidemap {

namespace {

constexpr std::string_view kOriginSep = "/";

// The entity tags of an If-Match or If-None-Match value, each as
// {weak, opaque text without quotes}; `any` for "*". A malformed member
// ends the list (what came before still counts).
struct ETagList {
  bool any = false;
  std::vector<std::pair<bool, std::string>> tags;
};

ETagList ParseETags(std::string_view text) {
  ETagList out;
  auto skip = [&text] {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == ',')) {
      text.remove_prefix(1);
    }
  };
  skip();
  if (text == "*") {
    out.any = true;
    return out;
  }
  while (skip(), !text.empty()) {
    bool weak = false;
    if (text.substr(0, 2) == "W/") {
      weak = true;
      text.remove_prefix(2);
    }
    if (text.empty() || text.front() != '"') break;
    const size_t close = text.find('"', 1);
    if (close == std::string_view::npos) break;
    out.tags.emplace_back(weak, std::string(text.substr(1, close - 1)));
    text.remove_prefix(close + 1);
  }
  return out;
}

// The version an ETag's text names, if it names one.
std::optional<Version> VersionOfETag(std::string_view text) {
  const size_t sep = text.rfind(kOriginSep);
  if (sep == std::string_view::npos) return std::nullopt;
  Result<Timestamp> hlc = Timestamp::Parse(text.substr(0, sep));
  const std::string_view origin = text.substr(sep + 1);
  uint64_t id = 0;
  const auto [ptr, ec] = std::from_chars(origin.data(), origin.data() + origin.size(), id, 16);
  if (!hlc.ok() || origin.size() != 16 || ec != std::errc() ||
      ptr != origin.data() + origin.size()) {
    return std::nullopt;
  }
  return Version{*hlc, id};
}

void SetVersionHeaders(const Version& v, Response* res) {
  res->set(http::field::etag, ETagOf(v));
  res->set("X-Tidemap-HLC", v.hlc.ToString());
  res->set("X-Tidemap-Origin", NodeIdToString(v.origin));
}

}  // namespace

std::string ETagOf(const Version& v) { return "\"" + v.ToString() + "\""; }

Result<Response> HttpServer::Impl::HandleGetKey(const Route& route, const RequestMeta& meta) {
  // Reads take the same names as writes: empty ones are a usage error (400).
  if (route.map.empty()) return Status::InvalidArgument("map name must not be empty");
  if (route.key.empty()) return Status::InvalidArgument("key must not be empty");
  TIDEMAP_ASSIGN_OR_RETURN(Record rec, context.replica->Get(route.map, route.key));
  bool not_modified = false;
  if (meta.if_none_match.has_value()) {
    // Weak comparison (RFC 9110 13.1.2): W/ is ignored.
    const ETagList list = ParseETags(*meta.if_none_match);
    const std::string current = rec.version.ToString();
    not_modified = list.any;
    for (const auto& [weak, tag] : list.tags) not_modified = not_modified || tag == current;
  }
  Response res =
      not_modified
          ? MakeResponse(http::status::not_modified, std::string(), "application/octet-stream")
          : MakeResponse(http::status::ok, std::move(rec.value), "application/octet-stream");
  SetVersionHeaders(rec.version, &res);
  return res;
}

Result<Response> HttpServer::Impl::HandleWriteIf(http::verb method, const Route& route,
                                                 const std::string& if_match,
                                                 const PutOptions& put_options, std::string body) {
  // Strong comparison: a weak tag never matches; neither does one that
  // names no version.
  const ETagList list = ParseETags(if_match);
  WriteCondition condition;
  condition.any_version = list.any;
  for (const auto& [weak, tag] : list.tags) {
    if (!weak) {
      if (std::optional<Version> v = VersionOfETag(tag)) condition.versions.push_back(*v);
    }
  }
  Result<ConditionalWrite> w =
      method == http::verb::put
          ? context.replica->PutIf(route.map, route.key, body, condition, put_options)
          : context.replica->DeleteIf(route.map, route.key, condition);
  if (!w.ok()) return w.status();
  if (!w->written) {
    Response res = ErrorResponse(http::status::precondition_failed, "precondition_failed",
                                 w->version.has_value()
                                     ? "If-Match: the key's version is " + w->version->ToString()
                                     : std::string("If-Match: the key does not exist"));
    if (w->version.has_value()) res.set(http::field::etag, ETagOf(*w->version));
    return res;
  }
  Response res = JsonResponse(http::status::ok, {{"hlc", w->version->hlc.ToString()}});
  if (method == http::verb::put) res.set(http::field::etag, ETagOf(*w->version));
  return res;
}

bool AcceptsGzip(std::string_view accept_encoding) {
  // Members "coding[;q=N]", comma-separated; gzip (or "*") with q > 0.
  for (std::string_view rest = accept_encoding; !rest.empty();) {
    const size_t comma = rest.find(',');
    std::string_view member = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t semi = member.find(';');
    std::string_view coding = member.substr(0, semi);
    while (!coding.empty() && coding.front() == ' ') coding.remove_prefix(1);
    while (!coding.empty() && coding.back() == ' ') coding.remove_suffix(1);
    const beast::string_view name(coding.data(), coding.size());
    if (!beast::iequals(name, "gzip") && !beast::iequals(name, "x-gzip") && coding != "*") {
      continue;
    }
    std::string_view params = semi == std::string_view::npos ? "" : member.substr(semi + 1);
    while (!params.empty() && params.front() == ' ') params.remove_prefix(1);
    if (params.substr(0, 2) == "q=" || params.substr(0, 2) == "Q=") {
      const std::string_view q = params.substr(2);
      if (q.find_first_not_of("0. ") == std::string_view::npos) continue;  // q=0: refused
    }
    return true;
  }
  return false;
}

Result<std::string> Gzip(std::string_view bytes) {
  z_stream z{};
  // windowBits 15 + 16: the gzip wrapper; level 1: a scan page is served
  // once, so speed matters more than the last few percent.
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return Status::Internal("gzip: deflateInit2 failed");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END)
    return Status::Internal("gzip: deflate failed (" + std::to_string(rc) + ")");
  return out;
}

}  // namespace tidemap
