// POST /v1/batch: many puts and deletes, across maps, committed as one
// WriteBatch (all or none). The body is JSON or NDJSON (server/batch.h);
// the answer is {"hlcs": [...]}, one version per op in body order. A body
// refused (malformed, or an op or the batch over a limit) is refused whole,
// nothing written, with {"error", "code", "op"}: the index of the op at
// fault, null when the body as a whole is.
#include <tidemap/server/batch.h>
#include <tidemap/server/http_internal.h>

namespace tidemap {

size_t BatchBodyBytesMax(const Limits& limits) {
  return 2 * limits.batch_bytes_max + 256 * limits.batch_ops_max;
}

Result<Response> HttpServer::Impl::HandleBatch(const RequestMeta& meta, std::string body) {
  const std::optional<BatchFormat> format = BatchFormatFor(meta.content_type);
  if (!format.has_value()) {
    return ErrorResponse(http::status::unsupported_media_type, "invalid_argument",
                         "a batch is application/json or application/x-ndjson, not '" +
                             Printable(meta.content_type) + "'");
  }
  ParsedBatch parsed = ParseBatch(body, *format, context.replica->limits());
  body = std::string();  // the batch holds its own copy
  if (parsed.error.has_value()) {
    const Status& s = parsed.error->status;
    nlohmann::json j = {{"error", s.message()}, {"code", std::string(Status::CodeName(s.code()))}};
    j["op"] = parsed.error->op.has_value() ? nlohmann::json(*parsed.error->op) : nlohmann::json();
    return JsonResponse(HttpStatusFor(s), j);
  }
  TIDEMAP_ASSIGN_OR_RETURN(std::vector<Version> versions, context.replica->Write(parsed.batch));
  std::string out = "{\"hlcs\":[";
  out.reserve(out.size() + versions.size() * 33 + 3);
  for (size_t i = 0; i < versions.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    out += versions[i].hlc.ToString();
    out += '"';
  }
  out += "]}";
  return MakeResponse(http::status::ok, std::move(out), "application/json");
}

}  // namespace tidemap
