// The HTTP API's routes as the server serves them, and its OpenAPI 3
// document (server/openapi.json, embedded at build time), for GET
// /v1/openapi.json and for the test that holds the two to each other.
//
// Contract: pure functions over constant data; the views stay valid for
// the life of the process.
#ifndef TIDEMAP_SERVER_HTTP_API_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_API_INTERNAL_H_

#include <string_view>
#include <vector>

namespace tidemap {

struct HttpRouteSpec {
  std::string_view path;     // an OpenAPI path template, e.g. "/v1/maps/{map}"
  std::string_view methods;  // as an Allow header lists them, e.g. "GET, HEAD"
};

// Every route the server answers (not "unknown").
std::vector<HttpRouteSpec> HttpRouteTable();

// The OpenAPI 3 document (JSON text).
std::string_view OpenApiDocument();

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_API_INTERNAL_H_
