// The event stream of GET /v1/watch: server-sent events of the replica's
// changes, replayed from the oplog when the client resumes from a seq, then
// live from a subscription. Runs on the I/O thread; oplog reads go to the
// worker pool.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

#include <tidemap/server/http_internal.h>
#include <tidemap/server/json.h>

namespace tidemap {

namespace {

// Oplog rows read per step while an event stream replays.
constexpr size_t kReplayRowsPerRead = 256;

// An `expire` event has no id: it is no oplog change, so a resuming client
// does not get it again.
std::string FormatExpireEvent(const WatchEvent& e) {
  nlohmann::json j;
  PutBytesJson(&j, "map", e.map);
  PutBytesJson(&j, "key", e.key);
  j["hlc"] = e.version.hlc.ToString();
  j["origin"] = NodeIdToString(e.version.origin);
  j["expires"] = ExpiryString(e.expiry_ms);
  return "event: expire\ndata: " + Dump(j) + "\n\n";
}

// A map's clear: one event for the map, with the clear's version.
std::string FormatClearEvent(const WatchEvent& e) {
  nlohmann::json j;
  PutBytesJson(&j, "map", e.map);
  j["hlc"] = e.version.hlc.ToString();
  j["origin"] = NodeIdToString(e.version.origin);
  j["seq"] = e.seq;
  j["remote"] = e.remote;
  return "id: " + std::to_string(e.seq) + "\nevent: clear\ndata: " + Dump(j) + "\n\n";
}

// A `quota` event has no id either: the storage state at that moment.
std::string FormatQuotaEvent(const WatchEvent& e) {
  const nlohmann::json j = {{"state", std::string(StorageStateName(e.storage.state))},
                            {"used_bytes", e.storage.used_bytes},
                            {"quota_bytes", e.storage.quota_bytes}};
  return "event: quota\ndata: " + Dump(j) + "\n\n";
}

std::string FormatEvent(const WatchEvent& e) {
  if (e.expire) return FormatExpireEvent(e);
  if (e.clear) return FormatClearEvent(e);
  if (e.quota) return FormatQuotaEvent(e);
  nlohmann::json j;
  PutBytesJson(&j, "map", e.map);
  PutBytesJson(&j, "key", e.key);
  j["hlc"] = e.version.hlc.ToString();
  j["origin"] = NodeIdToString(e.version.origin);
  j["tombstone"] = e.tombstone;
  j["seq"] = e.seq;
  j["remote"] = e.remote;
  return "id: " + std::to_string(e.seq) + "\nevent: change\ndata: " + Dump(j) + "\n\n";
}

std::string FormatErrorEvent(std::string_view code, const std::string& message,
                             uint64_t resume_from) {
  const nlohmann::json j = {
      {"error", message}, {"code", std::string(code)}, {"resume_from", resume_from}};
  return "event: error\ndata: " + Dump(j) + "\n\n";
}

// Reads the stream's parameters into `w`: the map (empty: every map), and
// where to resume from (`from`, or a reconnecting EventSource's last id).
Status ParseWatch(const Request& req, const Route& route, WatchState* w) {
  TIDEMAP_ASSIGN_OR_RETURN(auto params, Params(route.query, {"map", "from"}));
  w->map = params["map"];
  if (params.count("from")) {
    TIDEMAP_ASSIGN_OR_RETURN(w->from, ParseU64("from", params["from"]));
  }
  // A reconnecting EventSource sends the last id it saw: later than `from`.
  if (const auto last_id = View(req["Last-Event-ID"]); !last_id.empty()) {
    TIDEMAP_ASSIGN_OR_RETURN(w->from, ParseU64("Last-Event-ID", last_id));
  }
  return Status::Ok();
}

// The response head, written by hand: the body runs until either side closes.
std::string WatchHead(const WatchState& w) {
  std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
  head += ": watching " + (w.map.empty() ? std::string("every map") : "map " + Printable(w.map)) +
          (w.from.has_value() ? " from seq " + std::to_string(*w.from) : std::string()) + "\n\n";
  return head;
}

// Appends the events past the cursor to `out` and moves the cursor on.
void AppendEvents(const std::deque<WatchEvent>& events, WatchState* w, std::string* out,
                  uint64_t* count) {
  for (const WatchEvent& e : events) {
    if (e.expire || e.quota) {
      *out += FormatEvent(e);
      ++*count;
      continue;
    }
    if (e.seq <= w->cursor) continue;
    *out += FormatEvent(e);
    w->cursor = e.seq;
    ++*count;
  }
}

// Holds one of the watch_streams_max slots (Impl::watch_streams) until destroyed.
class WatchSlot {
 public:
  explicit WatchSlot(HttpServer::Impl* impl) : impl_(impl) { ++impl_->watch_streams; }
  ~WatchSlot() { --impl_->watch_streams; }
  WatchSlot(const WatchSlot&) = delete;
  WatchSlot& operator=(const WatchSlot&) = delete;

 private:
  HttpServer::Impl* const impl_;
};

}  // namespace

asio::awaitable<void> HttpServer::Impl::WatchReader(std::shared_ptr<Conn> conn) {
  // An event stream's client sends nothing more: any read completing means it
  // closed (or misbehaves); either way the stream ends. Reads the raw socket,
  // outside tcp_stream's write timeouts (beneath TLS too: a close_notify or
  // any other record ends the stream all the same).
  char buf[512];
  beast::error_code ec;
  co_await conn->stream.socket().async_read_some(asio::buffer(buf),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  conn->peer_gone = true;
  if (conn->watch_timer) conn->watch_timer->cancel();
}

asio::awaitable<void> HttpServer::Impl::ReplyAndClose(std::shared_ptr<Conn> conn, http::verb method,
                                                      const Route& route, Response res) {
  CountRequest(method, route, res.result());
  res.keep_alive(false);
  res.prepare_payload();
  co_await Write(*conn, res);
  conn->Close();
}

asio::awaitable<bool> HttpServer::Impl::WriteEvents(Conn& conn, const std::string& text,
                                                    uint64_t events) {
  if (text.empty()) co_return true;
  const bool ok = co_await WriteRaw(conn, text);
  if (ok) {
    MutexLock l(&counters_mu);
    counters.watch_events += events;
  }
  co_return ok;
}

void HttpServer::Impl::OpenWatchQueue(Conn& conn, WatchState* w) {
  w->timer = std::make_shared<asio::steady_timer>(*ioc);
  conn.watch_timer = w->timer;
  auto wake = [ex = ioc->get_executor(), weak = std::weak_ptr<asio::steady_timer>(w->timer)] {
    asio::post(ex, [weak] {
      if (auto t = weak.lock()) t->cancel();
    });
  };
  w->queue = std::make_shared<WatchQueue>(options.sse_queue_events_max, std::move(wake));
  {
    MutexLock l(&watches_mu);
    watches.insert(w->queue);
  }
  if (stopping.load()) w->queue->Close();  // Stop() may have swept the set already
}

asio::awaitable<std::optional<Response>> HttpServer::Impl::CheckResumable(uint64_t from) {
  Replica* replica = context.replica;
  auto read_pruned = [replica] { return replica->OplogPrunedThrough(); };
  Result<uint64_t> pruned = co_await OnPool(std::move(read_pruned));
  if (!pruned.ok()) co_return StatusResponse(pruned.status());
  if (from < *pruned) {
    // The body names the oldest seq still kept, so a client can tell how far
    // behind it fell and resume from `pruned_through` after a scan.
    const std::string message = "the oplog is pruned through seq " + std::to_string(*pruned) +
                                ": changes after seq " + std::to_string(from) +
                                " are no longer kept; scan the map and watch from seq " +
                                std::to_string(*pruned);
    co_return JsonResponse(http::status::gone, {{"error", message},
                                                {"code", "gone"},
                                                {"oldest_seq", *pruned + 1},
                                                {"pruned_through", *pruned}});
  }
  co_return std::nullopt;
}

asio::awaitable<void> HttpServer::Impl::ServeWatch(std::shared_ptr<Conn> conn, const Request& req,
                                                   const Route& route) {
  const http::verb method = req.method();
  WatchState w;
  Status bad = ParseWatch(req, route, &w);
  if (!bad.ok()) {
    co_await ReplyAndClose(conn, method, route, StatusResponse(bad));
    co_return;
  }
  // Checked and taken with no suspension in between (one I/O thread).
  if (watch_streams >= WatchStreamsMax()) {
    co_await ReplyAndClose(conn, method, route,
                           Overloaded("http_watch_streams_max",
                                      "too many event streams (limit " +
                                          std::to_string(WatchStreamsMax()) + "): retry later"));
    co_return;
  }
  const WatchSlot slot(this);
  // Subscribe before reading the oplog, so nothing committed in between is
  // missed; events the replay already sent are skipped by seq.
  OpenWatchQueue(*conn, &w);
  const Replica::SubscriptionId sub = context.replica->Subscribe(
      w.map, [queue = w.queue](const ChangeEvent& e) { queue->Push(e); });
  struct Cleanup {
    Impl* impl;
    std::shared_ptr<WatchQueue> queue;
    Replica::SubscriptionId sub;
    ~Cleanup() {
      queue->Close();
      impl->context.replica->Unsubscribe(sub);
      MutexLock l(&impl->watches_mu);
      impl->watches.erase(queue);
    }
  } cleanup{this, w.queue, sub};
  if (w.from.has_value()) {
    std::optional<Response> refusal = co_await CheckResumable(*w.from);
    if (refusal.has_value()) {
      co_await ReplyAndClose(conn, method, route, std::move(*refusal));
      co_return;
    }
  }
  CountRequest(method, route, http::status::ok);
  {
    MutexLock l(&counters_mu);
    ++counters.watch_clients;
  }
  struct ClientCount {
    Impl* impl;
    ~ClientCount() {
      MutexLock l(&impl->counters_mu);
      --impl->counters.watch_clients;
    }
  } client_count{this};
  const std::string head = WatchHead(w);
  if (!co_await WriteRaw(*conn, head)) {
    conn->Close();
    co_return;
  }
  asio::co_spawn(*ioc, WatchReader(conn), LogException{});
  co_await StreamWatch(*conn, w);
  conn->Close();
}

asio::awaitable<void> HttpServer::Impl::StreamWatch(Conn& conn, WatchState& w) {
  w.cursor = w.from.value_or(0);
  w.replaying = w.from.has_value();  // else live from the start: the queue has it all
  while (!stopping.load() && !conn.peer_gone) {
    bool go_on = false;
    if (w.replaying) {
      go_on = co_await ReplayStep(conn, w);
    } else {
      go_on = co_await LiveStep(conn, w);
    }
    if (!go_on) break;
  }
  if (!w.final_code.empty()) {
    const std::string text = FormatErrorEvent(w.final_code, w.final_message, w.cursor);
    co_await WriteRaw(conn, text);
  }
}

asio::awaitable<bool> HttpServer::Impl::ReplayStep(Conn& conn, WatchState& w) {
  Replica* replica = context.replica;
  auto read_rows = [replica, cursor = w.cursor]() -> Result<std::vector<OplogEntry>> {
    TIDEMAP_ASSIGN_OR_RETURN(auto r, replica->ReadOplog(cursor, kReplayRowsPerRead));
    if (!r.empty() && r.front().seq > cursor + 1) {
      // Rows are missing after the cursor: pruned since the check above?
      TIDEMAP_ASSIGN_OR_RETURN(uint64_t pruned, replica->OplogPrunedThrough());
      if (pruned > cursor) {
        return Status::NotFound("the oplog was pruned through seq " + std::to_string(pruned) +
                                " while this stream replayed from seq " + std::to_string(cursor));
      }
    }
    return r;
  };
  Result<std::vector<OplogEntry>> rows = co_await OnPool(std::move(read_rows));
  if (!rows.ok()) {
    w.final_code =
        rows.status().IsNotFound() ? "gone" : std::string(Status::CodeName(rows.status().code()));
    w.final_message = rows.status().message();
    co_return false;
  }
  std::string out;
  uint64_t count = 0;
  if (!rows->empty()) {
    for (const OplogEntry& row : *rows) {
      if (w.map.empty() || row.map == w.map) {
        out += FormatEvent(WatchEvent{row.map, row.key, row.version, row.tombstone, row.seq,
                                      row.via != 0, false, 0, row.tombstone && row.key.empty()});
        ++count;
      }
    }
    w.cursor = rows->back().seq;
    co_return co_await WriteEvents(conn, out, count);
  }
  // Caught up with the oplog. Whatever committed after the rows just read
  // is in the queue, unless it overflowed meanwhile: then read on.
  bool overflowed = false;
  std::deque<WatchEvent> events = w.queue->Take(&overflowed);
  if (overflowed) co_return true;
  w.replaying = false;
  AppendEvents(events, &w, &out, &count);
  co_return co_await WriteEvents(conn, out, count);
}

asio::awaitable<bool> HttpServer::Impl::LiveStep(Conn& conn, WatchState& w) {
  bool overflowed = false;
  std::deque<WatchEvent> events = w.queue->Take(&overflowed);
  if (overflowed) {
    {
      MutexLock l(&counters_mu);
      ++counters.watch_dropped;
    }
    w.final_code = "too_slow";
    w.final_message =
        "this stream fell more than " + std::to_string(options.sse_queue_events_max) +
        " events behind and is closed; reconnect with from=" + std::to_string(w.cursor) +
        " (or Last-Event-ID) to resume";
    co_return false;
  }
  if (events.empty()) {
    const auto keepalive =
        std::chrono::milliseconds(std::max<uint64_t>(options.sse_keepalive_ms, 1));
    w.timer->expires_after(keepalive);
    beast::error_code ec;
    co_await w.timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && !co_await WriteRaw(conn, ": keepalive\n\n")) co_return false;
    co_return true;  // woken (cancelled) or kept alive: look again
  }
  std::string out;
  uint64_t count = 0;
  AppendEvents(events, &w, &out, &count);
  co_return co_await WriteEvents(conn, out, count);
}

Result<Response> HttpServer::Impl::HandleWatchHead(const Route& route) {
  TIDEMAP_ASSIGN_OR_RETURN(auto params, Params(route.query, {"map", "from"}));
  if (params.count("from")) TIDEMAP_RETURN_IF_ERROR(ParseU64("from", params["from"]).status());
  // The head WatchHead writes, without the stream.
  Response res = MakeResponse(http::status::ok, std::string(), "text/event-stream");
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");
  return res;
}

}  // namespace tidemap
