// GET /v1/snapshot: a snapshot file of the node (server/snapshot.h) as a
// chunked application/octet-stream. Each piece (about a frame) is produced on
// the worker pool and written from the I/O thread before the next is read,
// so a slow client holds one piece in memory and no worker while it reads.
// A failure after the head closes the connection without the last chunk:
// the client sees a truncated transfer, never a short file taken for whole.
#include <cstdio>
#include <memory>
#include <string>

#include <tidemap/server/http_internal.h>
#include <tidemap/server/snapshot.h>

namespace tidemap {

namespace {

// A piece of the file and whether more follows.
struct SnapshotPiece {
  std::string bytes;
  bool more = true;
};

std::string ChunkHead(size_t bytes) {
  char head[32];
  std::snprintf(head, sizeof(head), "%zx\r\n", bytes);
  return head;
}

}  // namespace

Result<Response> HttpServer::Impl::HandleSnapshotHead() {
  Response res = MakeResponse(http::status::ok, std::string(), "application/octet-stream");
  res.set(http::field::cache_control, "no-store");
  return res;
}

asio::awaitable<void> HttpServer::Impl::ServeSnapshot(std::shared_ptr<Conn> conn,
                                                      const Route& route) {
  const http::verb method = http::verb::get;
  if (Status bad = Params(route.query, {}).status(); !bad.ok()) {
    co_await ReplyAndClose(conn, method, route, StatusResponse(bad));
    co_return;
  }
  auto open = [replica = context.replica,
               now_ms = clock.NowMillis()]() -> Result<std::shared_ptr<SnapshotStream>> {
    TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotStream> s,
                             SnapshotStream::Open(*replica, now_ms));
    return std::shared_ptr<SnapshotStream>(std::move(s));
  };
  Result<std::shared_ptr<SnapshotStream>> opened = co_await OnPool(std::move(open));
  if (!opened.ok()) {
    co_await ReplyAndClose(conn, method, route, StatusResponse(opened.status()));
    co_return;
  }
  std::shared_ptr<SnapshotStream> stream = *opened;
  CountRequest(method, route, http::status::ok);
  const std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
      "Cache-Control: no-store\r\nX-Tidemap-Snapshot-Seq: " +
      std::to_string(stream->counts().header.seq) +
      "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  bool ok = co_await WriteRaw(*conn, head);
  while (ok && !stopping.load()) {
    auto step = [stream]() -> Result<SnapshotPiece> {
      SnapshotPiece piece;
      TIDEMAP_ASSIGN_OR_RETURN(piece.more, stream->Next(kSnapshotFrameBytes, &piece.bytes));
      return piece;
    };
    Result<SnapshotPiece> piece = co_await OnPool(std::move(step));
    if (!piece.ok()) break;
    if (!piece->bytes.empty()) {
      ok = co_await WriteRaw(*conn, ChunkHead(piece->bytes.size()) + piece->bytes + "\r\n");
    }
    if (ok && !piece->more) {
      co_await WriteRaw(*conn, "0\r\n\r\n");
      break;
    }
  }
  conn->Close();
}

}  // namespace tidemap
