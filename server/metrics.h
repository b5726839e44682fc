// Prometheus text exposition (format 0.0.4) of a node's counters: what the
// replica keeps (ReplicaStats), what the transport reports (net::NetStatus)
// and what the HTTP server counts itself. Every name starts with `tidemap_`
// and carries its unit (_total, _bytes, _seconds). RenderMetrics is a pure
// function of a snapshot, so it is tested without a server.
#ifndef TIDEMAP_SERVER_METRICS_H_
#define TIDEMAP_SERVER_METRICS_H_

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// One series of tidemap_http_requests_total.
struct HttpRequestKey {
  std::string method;  // "GET", ...; "OTHER" for methods the API does not know
  std::string route;   // the route template, e.g. "/v1/maps/{map}/keys/{key}"; "unknown"
  int code = 0;        // the HTTP status sent
  friend auto operator<=>(const HttpRequestKey&, const HttpRequestKey&) = default;
};

// What the HTTP server counts (since it started).
struct HttpCounters {
  std::map<HttpRequestKey, uint64_t> requests;
  std::map<std::string, uint64_t> refused_connections;  // by reason, e.g. "http_connections_max"
  // Requests refused with 503 "overloaded", by reason: "http_body_bytes_in_flight_max",
  // "http_watch_streams_max".
  std::map<std::string, uint64_t> refused_requests;
  uint64_t body_bytes_in_flight = 0;       // request body bytes held now
  uint64_t body_bytes_in_flight_peak = 0;  // the most held at once since the server started
  uint64_t connections = 0;                // open now
  uint64_t watch_clients = 0;              // open SSE streams now
  uint64_t watch_dropped = 0;              // SSE clients dropped for falling behind
  uint64_t watch_events = 0;               // SSE change events sent
};

struct MetricsSnapshot {
  ReplicaStats replica;
  std::optional<net::NetStatus> net;  // nullopt: no transport (its families are left out)
  HttpCounters http;
};

// The exposition text; families without samples are left out.
std::string RenderMetrics(const MetricsSnapshot& snapshot);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_METRICS_H_
