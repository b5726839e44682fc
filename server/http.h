// The node's HTTP API (the README's "HTTP API"): keys, batches, scans, health,
// status, server-sent events of changes, Prometheus metrics and the OpenAPI
// document (server/openapi.json), served with
// Boost.Beast. It needs only a Replica and callbacks, so the daemon, tests
// and tools construct it alike.
//
// Routes (every error is JSON {"error": message, "code": name}):
//   PUT    /v1/maps/{map}/keys/{key}   body = value  200 {"hlc": "..."} + ETag
//   GET    /v1/maps/{map}/keys/{key}   200 raw value + ETag, X-Tidemap-HLC | 304 | 404
//   DELETE /v1/maps/{map}/keys/{key}                 200 {"hlc": "..."}
//   POST   /v1/batch   JSON or NDJSON ops (server/batch.h)  200 {"hlcs": [...]}
//   GET    /v1/maps/{map}?prefix=&limit=&after=     200 scan page (server/json.h),
//                                                    gzip when Accept-Encoding allows
//   GET    /v1/openapi.json                          200 the OpenAPI 3 document
//   GET    /v1/health                                200 {"status":"ok"} |
//                                                     503 {"status":"degraded","reason":...}
//   GET    /v1/status                                200 status document
//   GET    /v1/watch?map=&from=SEQ                   200 text/event-stream | 410
//   GET    /metrics                                  200 Prometheus text
// HEAD is served on every GET route (GET's status and headers, no body). A
// key's ETag is its version, "HLC/ORIGIN"; If-None-Match on GET gives 304,
// If-Match on PUT or DELETE is a compare-and-set (Replica::PutIf, DeleteIf)
// that gives 412 when the version differs or the key is absent. The route
// table is server/http_table.cc. Map names and keys are path segments,
// percent-decoded to raw bytes. See README "HTTP API" for the status codes.
//
// TLS (HttpOptions::tls_cert_file): every route is served over HTTPS only. A
// connection whose first byte is an ASCII letter (a plaintext request) gets
// 400 {"error": "this port speaks HTTPS: ...", "code": "invalid_argument"} and
// is closed; other bytes that do not open a TLS handshake are closed unanswered.
//
// Limits (HttpOptions): headers over header_bytes_max get 431; a body over its
// route's limit (the replica's value_bytes_max for PUT, twice batch_bytes_max
// plus 256 bytes an op for POST /v1/batch, 64 KiB elsewhere) gets
// 413, from Content-Length before the body is read; past connections_max a
// new connection gets 503 "unavailable" and is closed. Two limits shed load
// with 503 "overloaded" and a Retry-After header, then close the connection:
//   - request bodies in flight: every body is held against one budget of
//     body_bytes_in_flight_max bytes, from its Content-Length before any of it
//     is read (a chunked body as its buffer grows) until its request is
//     answered or its connection dies; a body that does not fit in what
//     remains is refused before (more of) it is read;
//   - event streams: past watch_streams_max open streams, a watch is refused
//     before its stream starts; the cap stays below connections_max, so
//     ordinary requests still get connections when the watches are all taken.
// Refusals are counted in tidemap_http_refused_requests_total{reason}.
//
// Threading: one I/O thread runs every connection (accept, parse, write,
// event streams), so connection state needs no locks; replica calls, which
// may wait for an fsync, run on a small worker pool (net/worker_pool.h, the
// transport's design too) and hand their result back to the I/O thread, so a
// slow commit never stalls accepting or other connections. Subscription
// callbacks (on the committing thread) only append to a bounded per-stream
// queue and wake the I/O thread.
#ifndef TIDEMAP_SERVER_HTTP_H_
#define TIDEMAP_SERVER_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <tidemap/base/status.h>
#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/reload.h>

namespace tidemap {

class RekeyJob;  // server/rekey_job.h

struct HttpOptions {
  // HOST:PORT to listen on; port 0 picks a free port (see HttpServer::port()).
  // HOST is an IP address or a name ("localhost"); an empty HOST is every interface.
  std::string listen = "127.0.0.1:7080";
  // When non-empty, every request must carry "Authorization: Bearer <token>"
  // (else 401). Required when `listen` is not a loopback address.
  std::string bearer_token;
  // Both set: every route is served over TLS (HTTPS) with this PEM
  // certificate chain and PEM private key; both empty: plain HTTP. The key
  // file must be private to its owner. TLS is not authentication: a
  // non-loopback `listen` still needs `bearer_token`.
  std::string tls_cert_file;
  std::string tls_key_file;
  size_t header_bytes_max = 16 * 1024;  // request line + headers; over it: 431
  size_t connections_max = 256;         // open connections; over it: 503 and close
  // Bytes of request bodies held at once across every connection (see
  // "Limits" above); a body that does not fit gets 503 "overloaded". Set it
  // at least to the replica's value_bytes_max, or the largest values never fit.
  uint64_t body_bytes_in_flight_max = uint64_t{256} << 20;
  // Open event streams (GET /v1/watch); over it: 503 "overloaded". Capped at
  // connections_max - 1 (and at least 1) so a connection stays for the rest.
  size_t watch_streams_max = 128;
  uint64_t sse_keepalive_ms = 15000;  // a comment line on idle event streams
  // Change events queued for one event stream; a stream that falls further
  // behind gets a final `event: error` ("too_slow") and is closed.
  size_t sse_queue_events_max = 4096;
  // Reading one request (headers and body) and writing one response, each;
  // also how long an idle keep-alive connection stays open.
  uint64_t request_timeout_ms = 30000;
  size_t worker_threads = 4;  // the pool that runs replica calls (>= 1)
};

struct HttpContext {  // all borrowed; must outlive the server
  Replica* replica = nullptr;
  std::string public_key;  // this node's key, text form
  // The transport's view of peers and its counters; may be empty (no
  // transport): status then lists the oplog's cursors as peers, and metrics
  // leave out the transport's families. Called from a worker thread.
  std::function<net::NetStatus()> net_status;
  // POST /v1/admin/reload: re-reads the daemon's settings (see
  // server/reload.h); empty: the route answers 404. Called from a worker thread.
  std::function<Result<ReloadReport>()> reload = nullptr;
  // /v1/admin/rekey and status JSON's `encryption`: the daemon's rekey job;
  // null: POST answers 404, GET an idle progress, status has no `encryption`.
  RekeyJob* rekey = nullptr;
};

class HttpServer {
 public:
  // Binds `options.listen` and starts serving on its own threads.
  // InvalidArgument (the daemon exits 2) when `listen` is malformed, or not a
  // loopback address while `bearer_token` is empty, or when only one of the
  // TLS files is given; Unavailable when the address cannot be bound (e.g.
  // in use) or a TLS file cannot be read or used (the message names it);
  // Refused when the TLS key file is readable by group or others.
  static Result<std::unique_ptr<HttpServer>> Start(HttpOptions options, HttpContext context);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t port() const;  // the bound port
  // Closes the listener and every connection (event streams included), waits
  // for running replica calls, and joins the threads. Idempotent; not to be
  // called from a subscription callback.
  void Stop();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_H_
