// DELETE /v1/maps/{map}: clears a map (Replica::ClearMap), answering with the
// clear's version as a key's DELETE does.
#include <tidemap/server/http_internal.h>

namespace tidemap {

Result<Response> HttpServer::Impl::HandleClearMap(const Route& route) {
  // The scan's parameters mean nothing to a clear: any is an error.
  TIDEMAP_RETURN_IF_ERROR(Params(route.query, {}).status());
  TIDEMAP_ASSIGN_OR_RETURN(const Version v, context.replica->ClearMap(route.map));
  return JsonResponse(http::status::ok, {{"hlc", v.hlc.ToString()}});
}

}  // namespace tidemap
