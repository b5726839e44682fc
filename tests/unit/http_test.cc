// Proves the HTTP API of server/http.h against a real server: an in-process
// HttpServer on 127.0.0.1 (port 0) over a Replica in a temp dir, driven by a
// raw-socket client written here (independent of server/http_client.h), so
// every byte on the wire is the test's own. Covers every route with binary
// keys, the error statuses (400, 401, 404, 405, 410, 413 before the body is
// read, 431, 503 past the connection limit, 503 "overloaded" past the budget
// of request bodies in flight and past the cap on event streams), bearer tokens
// (and the web console's files, served without one), server-sent events
// (local and remote changes, replay from a seq and from Last-Event-ID,
// a pruned seq, a slow client dropped, Stop closing streams), the Prometheus
// exposition (checked with promtool when installed) and the URL helpers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/fault_env.h"
#include "tests/support/http_reply.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/version.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/server/byte_budget_internal.h>
#include <tidemap/server/http.h>
#include <tidemap/server/http_client.h>
#include <tidemap/server/http_writes_internal.h>
#include <tidemap/server/json.h>
#include <tidemap/server/metrics.h>
#include <tidemap/server/status.h>
#include <tidemap/server/ui_assets_internal.h>
#include <tidemap/server/url.h>

namespace tidemap {
namespace {

constexpr uint64_t kNode = 0x1234abcd5678ef01;
constexpr int kIoTimeoutMs = 10'000;

// ---- a raw HTTP/1.1 client over POSIX sockets ----

class Socket {
 public:
  explicit Socket(uint16_t port) {
    fd_ = testing::ConnectLoopback(port);
    if (fd_ < 0) ADD_FAILURE() << "connect to port " << port << ": " << std::strerror(errno);
  }
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  bool ok() const { return fd_ >= 0; }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads into buffer() until `done(buffer())` holds, EOF, or `timeout_ms`
  // passes. Returns whether `done` held.
  bool ReadUntil(const std::function<bool(const std::string&)>& done,
                 int timeout_ms = kIoTimeoutMs) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!done(buf_)) {
      if (eof_) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(left));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      char chunk[65536];
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        eof_ = true;
      }
    }
    return true;
  }
  bool ReadToEof(int timeout_ms = kIoTimeoutMs) {
    return ReadUntil([this](const std::string&) { return eof_; }, timeout_ms) || eof_;
  }

  std::string& buffer() { return buf_; }
  bool eof() const { return eof_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

using Reply = testing::HttpReply;
using testing::Lower;
using testing::ParseReply;

std::string RequestText(std::string_view method, std::string_view target, std::string_view body,
                        const std::vector<std::string>& headers, bool close = true) {
  std::string req = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n";
  for (const auto& h : headers) req += h + "\r\n";
  if (!body.empty() || method == "PUT")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (close) req += "Connection: close\r\n";
  req += "\r\n";
  req += body;
  return req;
}

// Reads one complete response from `s`.
Reply ReadReply(Socket& s, int timeout_ms = kIoTimeoutMs) {
  Reply r;
  size_t used = 0;
  s.ReadUntil([&](const std::string& buf) { return (used = ParseReply(buf, false, &r)) > 0; },
              timeout_ms);
  if (used == 0 && s.eof()) used = ParseReply(s.buffer(), true, &r);
  if (used == 0) {
    ADD_FAILURE() << "no complete response; got: " << s.buffer().substr(0, 300);
    return r;
  }
  s.buffer().erase(0, used);
  return r;
}

Reply Exchange(uint16_t port, std::string_view method, std::string_view target,
               std::string_view body = {}, const std::vector<std::string>& headers = {}) {
  Socket s(port);
  if (!s.ok()) return {};
  EXPECT_TRUE(s.Send(RequestText(method, target, body, headers)));
  return ReadReply(s);
}

// One server-sent event.
struct Event {
  std::string id, event;
  nlohmann::json data;
};

// Takes the complete events at the front of `buf` (comments skipped).
std::vector<Event> TakeEvents(std::string* buf) {
  std::vector<Event> out;
  for (size_t end; (end = buf->find("\n\n")) != std::string::npos;) {
    const std::string block = buf->substr(0, end);
    buf->erase(0, end + 2);
    Event e;
    bool any = false;
    size_t pos = 0;
    while (pos <= block.size()) {
      size_t nl = block.find('\n', pos);
      if (nl == std::string::npos) nl = block.size();
      const std::string line = block.substr(pos, nl - pos);
      pos = nl + 1;
      if (line.rfind("id: ", 0) == 0) e.id = line.substr(4), any = true;
      if (line.rfind("event: ", 0) == 0) e.event = line.substr(7), any = true;
      if (line.rfind("data: ", 0) == 0) {
        e.data = nlohmann::json::parse(line.substr(6), nullptr, false);
        any = true;
      }
    }
    if (any) out.push_back(std::move(e));
  }
  return out;
}

// An open /v1/watch stream.
class Watch {
 public:
  Watch(uint16_t port, const std::string& target, const std::vector<std::string>& headers = {})
      : socket_(port) {
    if (!socket_.ok()) return;
    EXPECT_TRUE(socket_.Send(RequestText("GET", target, {}, headers, /*close=*/false)));
    const bool got = socket_.ReadUntil(
        [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; });
    EXPECT_TRUE(got) << socket_.buffer();
    const std::string& b = socket_.buffer();
    status_ = b.size() >= 12 ? std::atoi(b.substr(9, 3).c_str()) : 0;
    const size_t end = b.find("\r\n\r\n");
    head_ = b.substr(0, end);
    socket_.buffer().erase(0, end == std::string::npos ? b.size() : end + 4);
  }

  int status() const { return status_; }
  const std::string& head() const { return head_; }
  Socket& socket() { return socket_; }

  // Waits for `n` events (comments do not count).
  std::vector<Event> Next(size_t n, int timeout_ms = kIoTimeoutMs) {
    socket_.ReadUntil(
        [&](const std::string&) {
          std::vector<Event> got = TakeEvents(&socket_.buffer());
          pending_.insert(pending_.end(), got.begin(), got.end());
          return pending_.size() >= n;
        },
        timeout_ms);
    std::vector<Event> out(pending_.begin(),
                           pending_.begin() + static_cast<long>(std::min(n, pending_.size())));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(out.size()));
    EXPECT_EQ(out.size(), n) << "buffer: " << socket_.buffer().substr(0, 300);
    return out;
  }

 private:
  Socket socket_;
  int status_ = 0;
  std::string head_;
  std::vector<Event> pending_;
};

// "key@seq" (plus "/remote", "/deleted") over change events.
std::string Render(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) {
    if (!out.empty()) out += ' ';
    if (e.event != "change") {
      out += e.event + ":" + e.data.value("code", "?");
      continue;
    }
    out += e.data.value("key", "<binary>") + "@" + e.id;
    if (e.data.value("remote", false)) out += "/remote";
    if (e.data.value("tombstone", false)) out += "/deleted";
  }
  return out;
}

bool IsHlcText(const std::string& s) {
  static const std::regex kHlc(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z-\d{5}$)");
  return std::regex_match(s, kHlc);
}

std::string AllBytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  return s;
}

// ---- fixture ----

class HttpTest : public ::testing::Test {
 protected:
  HttpTest() : dir_(testing::MakeTempDir("tidemap-http-test")) {}
  ~HttpTest() override {
    server_.reset();
    replica_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void OpenReplica(const Limits& limits = {}, const OplogRetention& retention = {}) {
    ReplicaOptions o;
    o.path = dir_ + "/db";
    o.clock = &clock_;
    o.node_id = kNode;
    o.durability = Durability::kRelaxed;
    o.limits = limits;
    o.retention = retention;
    auto r = Replica::Open(std::move(o));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replica_ = std::move(r).value();
  }

  void StartServer(HttpOptions options = {}, std::function<net::NetStatus()> net = {}) {
    if (!replica_) OpenReplica();
    if (options.listen == HttpOptions{}.listen) options.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(std::move(options), HttpContext{replica_.get(), "pubkey", net});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    port_ = server_->port();
    ASSERT_NE(port_, 0);
  }

  Reply Call(std::string_view method, std::string_view target, std::string_view body = {},
             const std::vector<std::string>& headers = {}) {
    return Exchange(port_, method, target, body, headers);
  }

  // The value of `series` (a metric name with its labels, as rendered) in
  // GET /metrics; -1 when it is absent.
  double Metric(const std::string& series) {
    const Reply r = Call("GET", "/metrics");
    EXPECT_EQ(r.status, 200) << r;
    const size_t at = r.body.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::strtod(r.body.c_str() + at + 1 + series.size() + 1, nullptr);
  }

  // Polls Metric(series) until it equals `value` (the server updates it
  // asynchronously); false if it never does within a few seconds.
  bool WaitForMetric(const std::string& series, double value) {
    for (int i = 0; i < 250; ++i) {
      if (Metric(series) == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << series << " stayed at " << Metric(series) << ", expected " << value;
    return false;
  }

  static std::string KeyPath(const std::string& map, const std::string& key) {
    return "/v1/maps/" + PercentEncode(map) + "/keys/" + PercentEncode(key);
  }

  const std::string dir_;
  SystemClock clock_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
};

// ---- URL helpers ----

TEST(UrlTest, PercentEncodingRoundTripsEveryByte) {
  const std::string all = AllBytes();
  const std::string enc = PercentEncode(all);
  EXPECT_EQ(
      enc.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%"),
      std::string::npos);
  auto dec = PercentDecode(enc, false);
  ASSERT_TRUE(dec.ok());
  EXPECT_TRUE(*dec == all);
  EXPECT_EQ(*PercentDecode("a%2fb%2F+c", false), "a/b/+c");
  EXPECT_EQ(*PercentDecode("a+b", true), "a b");
  for (const char* bad : {"%", "%4", "%zz", "a%g0"}) {
    EXPECT_TRUE(PercentDecode(bad, false).status().IsInvalidArgument()) << bad;
  }
}

TEST(UrlTest, QueryAndHostPort) {
  auto q = ParseQuery("prefix=a%20b&limit=5&flag&after=x+y&");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)["prefix"], "a b");
  EXPECT_EQ((*q)["limit"], "5");
  EXPECT_EQ((*q)["flag"], "");
  EXPECT_EQ((*q)["after"], "x y");
  EXPECT_TRUE(ParseQuery("a=1&a=2").status().IsInvalidArgument());
  EXPECT_TRUE(ParseQuery("")->empty());

  auto hp = ParseHostPort("127.0.0.1:7080");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 7080);
  EXPECT_EQ(ParseHostPort("[::1]:0")->host, "::1");
  EXPECT_EQ(ParseHostPort(":80")->host, "");
  for (const char* bad : {"localhost", "h:", "h:65536", "h:-1", "::1:80", "[::1]80", "h:8x"}) {
    EXPECT_TRUE(ParseHostPort(bad).status().IsInvalidArgument()) << bad;
  }
}

// ---- keys ----

TEST_F(HttpTest, PutGetDeleteWithBinaryKeysAndValues) {
  StartServer();
  const std::string all = AllBytes();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"plain", "hello"},
      {"with/slash and space?&=#%", "v"},
      {all, all + all},  // every byte, NUL and '/' included
      {std::string("\x00", 1), std::string(100000, '\xa5')},
      {"empty-value", ""},
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(Printable(key));
    const std::string path = KeyPath("bin map/\xff", key);
    const Reply put = Call("PUT", path, value);
    ASSERT_EQ(put.status, 200) << put;
    const std::string hlc = put.Json().at("hlc").get<std::string>();
    EXPECT_TRUE(IsHlcText(hlc)) << hlc;
    // The replica holds exactly these bytes under exactly this key.
    auto rec = replica_->Get("bin map/\xff", key);
    ASSERT_TRUE(rec.ok()) << rec.status().ToString();
    EXPECT_TRUE(rec->value == value);
    EXPECT_EQ(rec->version.hlc.ToString(), hlc);

    const Reply get = Call("GET", path);
    ASSERT_EQ(get.status, 200) << get;
    EXPECT_TRUE(get.body == value);
    EXPECT_EQ(get.headers.at("x-tidemap-hlc"), hlc);
    EXPECT_EQ(get.headers.at("content-type"), "application/octet-stream");

    const Reply del = Call("DELETE", path);
    ASSERT_EQ(del.status, 200) << del;
    EXPECT_GT(del.Json().at("hlc").get<std::string>(), hlc);
    const Reply gone = Call("GET", path);
    EXPECT_EQ(gone.status, 404) << gone;
    EXPECT_EQ(gone.Json().at("code"), "not_found");
    EXPECT_TRUE(gone.Json().at("error").is_string());
  }
  // An unescaped '/' after keys/ belongs to the key.
  ASSERT_EQ(Call("PUT", "/v1/maps/m/keys/a/b", "ab").status, 200);
  EXPECT_EQ(replica_->Get("m", "a/b")->value, "ab");
  EXPECT_EQ(Call("GET", "/v1/maps/m/keys/never").status, 404);
}

TEST_F(HttpTest, KeepAliveServesManyRequestsOnOneConnection) {
  StartServer();
  Socket s(port_);
  ASSERT_TRUE(s.ok());
  for (int i = 0; i < 20; ++i) {
    const std::string path = "/v1/maps/m/keys/k" + std::to_string(i);
    ASSERT_TRUE(s.Send(RequestText("PUT", path, "v" + std::to_string(i), {}, false)));
    EXPECT_EQ(ReadReply(s).status, 200);
    ASSERT_TRUE(s.Send(RequestText("GET", path, {}, {}, false)));
    const Reply get = ReadReply(s);
    EXPECT_EQ(get.status, 200);
    EXPECT_EQ(get.body, "v" + std::to_string(i));
  }
  // Errors without a body keep the connection too.
  ASSERT_TRUE(s.Send(RequestText("GET", "/nowhere", {}, {}, false)));
  EXPECT_EQ(ReadReply(s).status, 404);
  ASSERT_TRUE(s.Send(RequestText("GET", "/v1/maps/m/keys/k0", {}, {}, false)));
  EXPECT_EQ(ReadReply(s).status, 200);
}

// A plain write's answer, written as bytes made on the commit thread when the
// connection stays open, is byte for byte what Beast writes for its response.
TEST(PlainWriteReplyTest, IsWhatBeastWritesForTheResponse) {
  namespace bhttp = boost::beast::http;
  for (const Version v : {Version{Timestamp::FromParts(1'700'000'000'123, 7), kNode},
                          Version{Timestamp::FromParts(1, 0), 0}}) {
    for (const bhttp::verb method : {bhttp::verb::put, bhttp::verb::delete_}) {
      auto res = WriteResponse(method, v);
      res.keep_alive(true);
      res.prepare_payload();
      std::ostringstream beast_bytes;
      beast_bytes << res;
      EXPECT_EQ(PlainWriteReply(method, v), beast_bytes.str());
    }
  }
}

TEST_F(HttpTest, ConcurrentWritersAllLand) {
  StartServer();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const Reply r = Exchange(
            port_, "PUT", "/v1/maps/c/keys/t" + std::to_string(t) + "-" + std::to_string(i), "x");
        if (r.status == 200) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 100);
  EXPECT_EQ(replica_->Stats()->keys, 100u);
}

// Plain writes of concurrent clients are committed together, yet each
// request gets the answer it would get alone: a key over the limit among
// them is refused as a lone one is, the others land with the version their
// answer names, deletes and ttls included.
TEST_F(HttpTest, ConcurrentWritesEachKeepTheirOwnAnswer) {
  Limits limits;
  limits.key_bytes_max = 16;
  OpenReplica(limits);
  StartServer();
  const std::string long_key(17, 'k');
  const Reply alone = Call("PUT", KeyPath("c", long_key), "x");
  ASSERT_NE(alone.status, 200) << alone;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 30; ++i) {
        const std::string key = "t" + std::to_string(t) + "-" + std::to_string(i);
        const bool refused = i % 5 == 0;
        const std::string path =
            KeyPath("c", refused ? long_key : key) + (i % 7 == 1 ? "?ttl=1h" : "");
        const Reply r = Exchange(port_, "PUT", path, "v" + key);
        if (refused) {
          if (r.status != alone.status || r.body != alone.body) ++failures;
          continue;
        }
        auto rec = replica_->Get("c", key);
        if (r.status != 200 || !rec.ok() || rec->value != "v" + key ||
            r.Json().at("hlc").get<std::string>() != rec->version.hlc.ToString() ||
            (i % 7 == 1) != (rec->expiry_ms != 0)) {
          ++failures;
        }
        if (i % 3 == 0) {
          const Reply del = Exchange(port_, "DELETE", KeyPath("c", key));
          if (del.status != 200 || !replica_->Get("c", key).status().IsNotFound()) ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // 24 keys per thread written, 8 of them (i a multiple of 3, not of 5) deleted.
  EXPECT_EQ(replica_->Stats()->keys, 8u * 16u);
}

// ---- scan ----

TEST_F(HttpTest, ScanPagesMatchScanJson) {
  StartServer();
  for (const char* k : {"cherry", "apple", "banana", "apricot", "date"}) {
    ASSERT_TRUE(replica_->Put("fruit", k, std::string("v-") + k).ok());
  }
  ASSERT_TRUE(replica_->Delete("fruit", "date").ok());
  ASSERT_TRUE(replica_->Put("fruit", std::string("\xc0\xff", 2), std::string("\x00\x01", 2)).ok());

  const Reply all = Call("GET", "/v1/maps/fruit");
  ASSERT_EQ(all.status, 200) << all;
  EXPECT_EQ(all.headers.at("content-type"), "application/json");
  auto expected = replica_->Scan("fruit", "", std::nullopt, 1000);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(all.Json(), ScanPageJson(*expected));
  EXPECT_EQ(all.body, ScanPageJson(*expected).dump(2) + "\n") << "the bytes `scan --json` prints";

  const Reply page1 = Call("GET", "/v1/maps/fruit?limit=2");
  ASSERT_EQ(page1.status, 200);
  EXPECT_EQ(page1.Json().at("items").size(), 2u);
  EXPECT_EQ(page1.Json().at("next"), "apricot");
  const Reply page2 = Call("GET", "/v1/maps/fruit?limit=2&after=apricot");
  EXPECT_EQ(page2.Json().at("items")[0].at("key"), "banana");
  EXPECT_EQ(page2.Json().at("next"), "cherry");
  // The binary key is last: its page has no next; the page before gives next_base64.
  const Reply page3 = Call("GET", "/v1/maps/fruit?limit=1&after=cherry");
  EXPECT_TRUE(page3.Json().at("next").is_null());
  EXPECT_EQ(page3.Json().at("items")[0].at("key_base64"), "wP8=");
  const Reply page_b = Call("GET", "/v1/maps/fruit?limit=1&after=banana");
  EXPECT_EQ(page_b.Json().at("next"), "cherry");

  const Reply prefix = Call("GET", "/v1/maps/fruit?prefix=ap");
  ASSERT_EQ(prefix.status, 200);
  EXPECT_EQ(prefix.Json().at("items").size(), 2u);
  const Reply binary_after = Call("GET", "/v1/maps/fruit?after=" + PercentEncode("cherry"));
  EXPECT_EQ(binary_after.Json().at("items").size(), 1u);
  EXPECT_EQ(Call("GET", "/v1/maps/empty").Json().at("items").size(), 0u);

  for (const char* bad :
       {"/v1/maps/fruit?limit=0", "/v1/maps/fruit?limit=10001", "/v1/maps/fruit?limit=x",
        "/v1/maps/fruit?bogus=1", "/v1/maps/fruit?prefix=%zz", "/v1/maps/"}) {
    const Reply r = Call("GET", bad);
    EXPECT_EQ(r.status, 400) << bad << " " << r;
    EXPECT_EQ(r.Json().at("code"), "invalid_argument") << bad;
  }
}

TEST_F(HttpTest, ScanPageStopsAtItsByteBudget) {
  Limits limits;
  OpenReplica(limits);
  StartServer();
  const std::string big(3 << 20, 'b');  // 3 MiB: at most three fit under 8 MiB
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(replica_->Put("big", "k" + std::to_string(i), big).ok());
  const Reply r = Call("GET", "/v1/maps/big?limit=5");
  ASSERT_EQ(r.status, 200);
  const auto j = r.Json();
  EXPECT_EQ(j.at("items").size(), 2u);
  EXPECT_EQ(j.at("next"), "k1");
  EXPECT_EQ(Call("GET", "/v1/maps/big?after=k1").Json().at("items").size(), 2u);
}

// ---- status and metrics ----

TEST_F(HttpTest, StatusIsTheStatusDocument) {
  StartServer();
  ASSERT_TRUE(replica_->Put("m", "a", "1").ok());
  ASSERT_TRUE(replica_->Put("m", "b", "2").ok());
  ASSERT_TRUE(replica_->Delete("m", "a").ok());
  ASSERT_TRUE(replica_->AddPeer(0xbeef).ok());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*replica_).SetPeerAck(0xbeef, 1).ok());

  const Reply r = Call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200) << r;
  nlohmann::json j = r.Json();
  auto info = CollectStatusInfo(replica_.get(), "pubkey");
  ASSERT_TRUE(info.ok());
  auto peers = PeersFromOplog(replica_.get(), info->stats.oplog_last_seq, clock_.NowMillis());
  ASSERT_TRUE(peers.ok());
  nlohmann::json expected = StatusJson(*info, *peers);
  // lag_seconds follows the clock; compare it apart.
  ASSERT_EQ(j.at("peers").size(), 1u) << j.dump();
  EXPECT_GE(j["peers"][0]["lag_seconds"].get<double>(), 0.0);
  j["peers"][0]["lag_seconds"] = 0;
  expected["peers"][0]["lag_seconds"] = 0;
  EXPECT_EQ(j, expected);
  EXPECT_EQ(j.at("keys"), 1);
  EXPECT_EQ(j.at("tombstones"), 1);
  EXPECT_EQ(j.at("public_key"), "pubkey");
  const auto& p = j["peers"][0];
  EXPECT_EQ(p.at("node_id"), "000000000000beef");
  EXPECT_EQ(p.at("connected"), false);
  EXPECT_EQ(p.at("acked_seq"), 1);
  EXPECT_EQ(p.at("lag"), 2);
  EXPECT_TRUE(p.at("public_key").is_null());
  EXPECT_TRUE(p.at("last_error").is_null());
}

net::NetStatus SampleNet() {
  net::NetStatus n;
  net::PeerStatus p;
  p.node_id = 0x3f2a000000000001;
  p.public_key = "ab12";
  p.address = "10.0.0.2:7000";
  p.connected = true;
  p.acked_seq = 5;
  p.lag = 2;
  p.lag_seconds = 1.5;
  p.clock_offset_ms = -40;
  p.last_error = "peer 3f2a: clock 94 s ahead, limit 60 s";
  p.sync_in_progress = true;
  p.sync_percent = 37;
  p.bytes_in = 1000;
  p.bytes_out = 2000;
  p.frames_in = 10;
  p.frames_out = 20;
  p.records_sent = 7;
  p.records_applied = 3;
  p.sync_rounds = 4;
  n.peers.push_back(p);
  n.counters.refused_connections["untrusted"] = 2;
  n.counters.decode_errors = 1;
  n.counters.handshakes_completed = 9;
  n.counters.sync_round_seconds.Observe(0.02);
  n.counters.sync_round_seconds.Observe(3);
  return n;
}

TEST_F(HttpTest, StatusTakesPeersFromTheTransport) {
  StartServer({}, [] { return SampleNet(); });
  const Reply r = Call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200) << r;
  const auto j = r.Json();
  ASSERT_EQ(j.at("peers").size(), 1u);
  const auto& p = j["peers"][0];
  EXPECT_EQ(p.at("node_id"), "3f2a000000000001");
  EXPECT_EQ(p.at("public_key"), "ab12");
  EXPECT_EQ(p.at("address"), "10.0.0.2:7000");
  EXPECT_EQ(p.at("connected"), true);
  EXPECT_EQ(p.at("lag_seconds"), 1.5);
  EXPECT_EQ(p.at("clock_offset_ms"), -40);
  EXPECT_EQ(p.at("sync_in_progress"), true);
  EXPECT_EQ(p.at("sync_percent"), 37);
  EXPECT_EQ(p.at("last_error"), "peer 3f2a: clock 94 s ahead, limit 60 s");
}

TEST_F(HttpTest, MetricsPassPromtoolAndCount) {
  StartServer({}, [] { return SampleNet(); });
  ASSERT_EQ(Call("PUT", "/v1/maps/m/keys/a", "1").status, 200);
  ASSERT_EQ(Call("GET", "/v1/maps/m/keys/a").status, 200);
  ASSERT_EQ(Call("GET", "/v1/maps/m/keys/zz").status, 404);
  KeyedRecord rec{"m", "r", "x", Version{ReplicaTestAccess::hlc(*replica_).Now(), 77}, false};
  ASSERT_TRUE(replica_->ApplyRemote(std::span<const KeyedRecord>(&rec, 1), 77).ok());

  const Reply r = Call("GET", "/metrics");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.headers.at("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string& m = r.body;
  for (const char* line : {
           "tidemap_writes_total 1\n",
           "tidemap_reads_total 2\n",
           "tidemap_remote_records_applied_total 1\n",
           "tidemap_keys 2\n",
           "tidemap_oplog_rows 2\n",
           "tidemap_peer_received_bytes_total{peer=\"3f2a000000000001\"} 1000\n",
           "tidemap_peer_sent_frames_total{peer=\"3f2a000000000001\"} 20\n",
           "tidemap_peer_clock_offset_seconds{peer=\"3f2a000000000001\"} -0.04\n",
           "tidemap_peer_lag_records{peer=\"3f2a000000000001\"} 2\n",
           "tidemap_peer_sync_progress_ratio{peer=\"3f2a000000000001\"} 0.37\n",
           "tidemap_sync_duration_seconds_bucket{le=\"0.05\"} 1\n",
           "tidemap_sync_duration_seconds_bucket{le=\"+Inf\"} 2\n",
           "tidemap_sync_duration_seconds_count 2\n",
           "tidemap_refused_connections_total{reason=\"untrusted\"} 2\n",
           "tidemap_decode_errors_total 1\n",
           "tidemap_http_requests_total{method=\"PUT\",route=\"/v1/maps/{map}/keys/{key}\","
           "code=\"200\"} 1\n",
           "tidemap_http_requests_total{method=\"GET\",route=\"/v1/maps/{map}/keys/{key}\","
           "code=\"404\"} 1\n",
           "# TYPE tidemap_leveldb_size_bytes gauge\n",
       }) {
    EXPECT_NE(m.find(line), std::string::npos) << "missing: " << line << "\n" << m;
  }
  if (!testing::ExpectPromtoolPasses(m)) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  }
}

TEST(MetricsTest, RenderWithoutTransportPassesPromtool) {
  MetricsSnapshot snap;
  snap.replica.keys = 3;
  snap.http.requests[HttpRequestKey{"GET", "/v1/status", 200}] = 4;
  snap.http.refused_connections["http_connections_max"] = 1;
  snap.http.refused_requests["http_watch_streams_max"] = 2;
  snap.http.body_bytes_in_flight = 5;
  snap.http.body_bytes_in_flight_peak = 7;
  const std::string m = RenderMetrics(snap);
  EXPECT_EQ(m.find("tidemap_peer_"), std::string::npos) << "no transport, no peer families";
  EXPECT_NE(m.find("tidemap_refused_connections_total{reason=\"http_connections_max\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("tidemap_http_refused_requests_total{reason=\"http_watch_streams_max\"} 2\n"),
            std::string::npos);
  EXPECT_NE(m.find("tidemap_http_request_body_in_flight_bytes 5\n"), std::string::npos);
  EXPECT_NE(m.find("tidemap_http_request_body_in_flight_peak_bytes 7\n"), std::string::npos);
  if (!testing::ExpectPromtoolPasses(m)) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  }
}

// ---- errors and limits ----

TEST_F(HttpTest, ErrorsAreJsonWithFittingStatus) {
  StartServer();
  struct Case {
    std::string method, target;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"GET", "/", 404, "not_found"},
      {"GET", "/v1/nothing", 404, "not_found"},
      {"GET", "/v1/maps/m/other/k", 404, "not_found"},
      {"POST", "/v1/maps/m/keys/k", 405, "method_not_allowed"},
      {"PUT", "/v1/status", 405, "method_not_allowed"},
      {"DELETE", "/metrics", 405, "method_not_allowed"},
      {"GET", "/v1/maps/m/keys/%zz", 400, "invalid_argument"},
      {"GET", "/v1/maps/m/keys/", 400, "invalid_argument"},
      {"GET", "/v1/maps//keys/k", 400, "invalid_argument"},
      {"PUT", "/v1/maps//keys/k", 400, "invalid_argument"},
      {"GET", "/v1/watch?from=abc", 400, "invalid_argument"},
      {"GET", "/v1/watch?bogus=1", 400, "invalid_argument"},
      {"GET", "/v1/maps/m/keys/k?bogus=1", 400, "invalid_argument"},
      {"PUT", "/v1/maps/m/keys/k?ttl=1", 400, "invalid_argument"},
      {"DELETE", "/v1/maps/m/keys/k?x", 400, "invalid_argument"},
      {"GET", "/v1/status?pretty=1", 400, "invalid_argument"},
      {"GET", "/metrics?bogus=1", 400, "invalid_argument"},
      {"PUT", "/v1/maps/m/keys/" + std::string(4097, 'k'), 413, "refused"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + " " + c.target.substr(0, 60));
    const Reply r = Call(c.method, c.target, c.method == "PUT" ? "v" : "");
    EXPECT_EQ(r.status, c.status) << r;
    EXPECT_EQ(r.Header("content-type"), "application/json");
    const auto j = r.Json();
    EXPECT_EQ(j.value("code", ""), c.code) << j.dump();
    EXPECT_FALSE(j.value("error", "").empty()) << j.dump();
    if (c.status == 405) {
      EXPECT_FALSE(r.Header("allow").empty());
    }
  }
  EXPECT_NE(Call("PUT", "/v1/maps/m/keys/" + std::string(4097, 'k'), "v").body.find("4097"),
            std::string::npos);
  // A malformed request line gets 400 and the connection closes.
  Socket s(port_);
  ASSERT_TRUE(s.Send("NOT HTTP AT ALL\r\n\r\n"));
  const Reply bad = ReadReply(s);
  EXPECT_EQ(bad.status, 400) << bad;
}

TEST_F(HttpTest, OversizedValueIsRefusedFromContentLengthBeforeTheBody) {
  Limits limits;
  limits.value_bytes_max = 1024;
  OpenReplica(limits);
  StartServer();
  Socket s(port_);
  ASSERT_TRUE(
      s.Send("PUT /v1/maps/m/keys/k HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n"
             "\r\n"));  // 10 GB announced, nothing sent
  const auto start = std::chrono::steady_clock::now();
  const Reply r = ReadReply(s, 3000);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(r.status, 413) << r;
  EXPECT_EQ(r.Json().at("code"), "refused");
  EXPECT_NE(r.body.find("10000000000"), std::string::npos) << r;
  EXPECT_NE(r.body.find("1024"), std::string::npos) << r;
  EXPECT_TRUE(s.ReadToEof(3000)) << "the connection closes: its body was never read";

  // A client that sends the body anyway still reads the refusal: the server
  // drains what it did not read before closing, rather than resetting.
  for (int i = 0; i < 5; ++i) {
    Socket eager(port_);
    ASSERT_TRUE(eager.Send(RequestText("PUT", "/v1/maps/m/keys/eager", std::string(300000, 'e'), {},
                                       /*close=*/false)));
    const Reply er = ReadReply(eager, 3000);
    EXPECT_EQ(er.status, 413) << er;
  }

  // With Expect: 100-continue the refusal comes instead of the 100.
  Socket e(port_);
  ASSERT_TRUE(
      e.Send("PUT /v1/maps/m/keys/k HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n"
             "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(ReadReply(e, 3000).status, 413);

  // Exactly at the limit is fine, with or without 100-continue.
  EXPECT_EQ(Call("PUT", "/v1/maps/m/keys/k", std::string(1024, 'x')).status, 200);
  Socket c(port_);
  ASSERT_TRUE(
      c.Send("PUT /v1/maps/m/keys/c HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
             "Expect: 100-continue\r\nConnection: close\r\n\r\n"));
  ASSERT_TRUE(c.ReadUntil([](const std::string& b) { return b.find("\r\n\r\n") != b.npos; }));
  EXPECT_EQ(c.buffer().rfind("HTTP/1.1 100", 0), 0u) << c.buffer();
  c.buffer().erase(0, c.buffer().find("\r\n\r\n") + 4);
  ASSERT_TRUE(c.Send("abc"));
  EXPECT_EQ(ReadReply(c).status, 200);
  EXPECT_EQ(replica_->Get("m", "c")->value, "abc");

  // A chunked body is cut off once it crosses the limit.
  Socket ch(port_);
  std::string chunked =
      "PUT /v1/maps/m/keys/ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "200\r\n" + std::string(512, 'c') + "\r\n";
  ASSERT_TRUE(ch.Send(chunked));  // 1536 bytes so far, no final chunk
  const Reply cr = ReadReply(ch, 3000);
  EXPECT_EQ(cr.status, 413) << cr;
  EXPECT_TRUE(replica_->Get("m", "ch").status().IsNotFound());

  // Bodies on routes that take none are bounded too.
  EXPECT_EQ(Call("GET", "/v1/status", std::string(100 * 1024, 'x')).status, 413);
}

// Proves the budget of request bodies in flight with a 1 MiB budget: uploads
// that stall mid-body hold their Content-Length; one that does not fit in
// what remains gets 503 "overloaded" (Retry-After) while its body is still
// unsent, taking nothing; a chunked body is refused once it outgrows the
// rest; closing the stalled uploads returns their bytes, so a large upload
// then succeeds; and the bytes held never pass the budget (the peak gauge).
TEST_F(HttpTest, BodiesInFlightStayWithinTheirBudget) {
  constexpr uint64_t kBudget = 1 << 20;
  constexpr size_t kUpload = 400 * 1024;
  const std::string kHeld = "tidemap_http_request_body_in_flight_bytes";
  const std::string kPeak = "tidemap_http_request_body_in_flight_peak_bytes";
  HttpOptions o;
  o.body_bytes_in_flight_max = kBudget;
  StartServer(o);
  auto head = [](const std::string& key, size_t length) {
    return "PUT /v1/maps/m/keys/" + key +
           " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
  };
  // Two uploads announce 400 KiB each, send 10 KiB of it and stall.
  std::vector<std::unique_ptr<Socket>> stalled;
  for (int i = 0; i < 2; ++i) {
    stalled.push_back(std::make_unique<Socket>(port_));
    ASSERT_TRUE(
        stalled.back()->Send(head("s" + std::to_string(i), kUpload) + std::string(10 * 1024, 's')));
  }
  ASSERT_TRUE(WaitForMetric(kHeld, 2 * kUpload));

  // A third would hold 1200 KiB in all: refused while its body is unsent.
  Socket third(port_);
  ASSERT_TRUE(third.Send(head("third", kUpload) + std::string(10 * 1024, 't')));
  const Reply r = ReadReply(third, 3000);
  EXPECT_EQ(r.status, 503) << r;
  EXPECT_EQ(r.Json().at("code"), "overloaded");
  EXPECT_EQ(r.Header("retry-after"), "1");
  EXPECT_NE(r.body.find(std::to_string(kBudget)), std::string::npos) << r;
  EXPECT_TRUE(third.ReadToEof(3000)) << "the connection closes";
  EXPECT_EQ(Metric(kHeld), 2 * kUpload) << "the refused body took nothing";
  // With Expect: 100-continue the refusal comes instead of the 100.
  Socket expect(port_);
  ASSERT_TRUE(
      expect.Send("PUT /v1/maps/m/keys/e HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n"
                  "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(ReadReply(expect, 3000).status, 503);

  // A chunked body holds what it grows to: past the 224 KiB left, refused.
  Socket chunked(port_);
  std::string text =
      "PUT /v1/maps/m/keys/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) text += "10000\r\n" + std::string(65536, 'c') + "\r\n";
  ASSERT_TRUE(chunked.Send(text));  // 320 KiB so far, no final chunk
  const Reply cr = ReadReply(chunked, 3000);
  EXPECT_EQ(cr.status, 503) << cr;
  EXPECT_EQ(cr.Json().at("code"), "overloaded");
  EXPECT_TRUE(replica_->Get("m", "chunked").status().IsNotFound());
  EXPECT_EQ(Metric("tidemap_http_refused_requests_total{reason=\"http_body_bytes_in_flight_max\"}"),
            3);

  // Closing the stalled uploads returns their bytes: 900 KiB fits again.
  stalled.clear();
  ASSERT_TRUE(WaitForMetric(kHeld, 0));
  const std::string big(900 * 1024, 'b');
  EXPECT_EQ(Call("PUT", "/v1/maps/m/keys/big", big).status, 200);
  EXPECT_EQ(replica_->Get("m", "big")->value, big);
  EXPECT_EQ(Metric(kHeld), 0);
  const double peak = Metric(kPeak);
  EXPECT_LE(peak, kBudget);
  EXPECT_GE(peak, 900 * 1024) << "the gauge saw the large upload";
}

// Proves the budget's arithmetic: reservations grow only within what
// remains, a failed growth keeps what was held, and destruction returns it.
TEST(ByteBudgetTest, ReservationsShareTheBudgetAndReturnIt) {
  ByteBudget budget(100);
  {
    ByteReservation a(&budget);
    ByteReservation b(&budget);
    EXPECT_TRUE(a.GrowTo(60));
    EXPECT_TRUE(a.GrowTo(50)) << "shrinking is not asked of it";
    EXPECT_FALSE(b.GrowTo(41));
    EXPECT_EQ(b.bytes(), 0u);
    EXPECT_TRUE(b.GrowTo(40));
    EXPECT_EQ(budget.bytes_held(), 100u);
    EXPECT_FALSE(b.GrowTo(41));
    EXPECT_EQ(b.bytes(), 40u);
    b.Release();
    EXPECT_EQ(budget.bytes_held(), 60u);
  }
  EXPECT_EQ(budget.bytes_held(), 0u);
  EXPECT_EQ(budget.bytes_held_peak(), 100u);
}

TEST_F(HttpTest, OversizedHeadersGet431) {
  HttpOptions o;
  o.header_bytes_max = 1024;
  StartServer(o);
  const Reply r = Call("GET", "/v1/status", {}, {"X-Big: " + std::string(2000, 'h')});
  EXPECT_EQ(r.status, 431) << r;
  EXPECT_EQ(Call("GET", "/v1/status").status, 200);
}

TEST_F(HttpTest, ConnectionsOverTheLimitGet503) {
  HttpOptions o;
  o.connections_max = 2;
  StartServer(o);
  // Two kept-alive connections, each proven accepted by a full exchange.
  auto a = std::make_unique<Socket>(port_);
  Socket b(port_);
  for (Socket* s : {a.get(), &b}) {
    ASSERT_TRUE(s->Send(RequestText("GET", "/v1/status", {}, {}, false)));
    EXPECT_EQ(ReadReply(*s).status, 200);
  }
  const Reply refused = Call("GET", "/v1/status");
  EXPECT_EQ(refused.status, 503) << refused;
  EXPECT_EQ(refused.Json().at("code"), "unavailable");
  // Once one closes, a new connection is served.
  a.reset();
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {  // the server notices the close asynchronously
    served = Call("GET", "/v1/status").status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

// Proves the cap on event streams: with watch_streams_max streams open, an
// ordinary request is still served and one more watch gets 503 "overloaded"
// (Retry-After) before any stream starts; the open streams carry on, and a
// closed one frees its slot.
TEST_F(HttpTest, WatchStreamsOverTheCapGet503AndLeaveRoomForRequests) {
  HttpOptions o;
  o.connections_max = 8;
  o.watch_streams_max = 3;
  StartServer(o);
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < 3; ++i) {
    watches.push_back(std::make_unique<Watch>(port_, "/v1/watch?map=m"));
    ASSERT_EQ(watches.back()->status(), 200) << watches.back()->head();
  }
  EXPECT_EQ(Call("GET", "/v1/status").status, 200);
  Watch over(port_, "/v1/watch?map=m");
  EXPECT_EQ(over.status(), 503) << over.head();
  EXPECT_NE(Lower(over.head()).find("retry-after: 1"), std::string::npos) << over.head();
  EXPECT_EQ(over.head().find("text/event-stream"), std::string::npos) << over.head();
  ASSERT_TRUE(over.socket().ReadToEof(3000));
  EXPECT_EQ(nlohmann::json::parse(over.socket().buffer(), nullptr, false).value("code", ""),
            "overloaded")
      << over.socket().buffer();
  EXPECT_EQ(Metric("tidemap_http_refused_requests_total{reason=\"http_watch_streams_max\"}"), 1);

  ASSERT_TRUE(replica_->Put("m", "k", "v").ok());
  for (auto& w : watches) EXPECT_EQ(Render(w->Next(1)), "k@1");

  watches.pop_back();
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {  // the server notices the close asynchronously
    Watch again(port_, "/v1/watch?map=m");
    served = again.status() == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

// Proves the cap stays below connections_max: with two connections and the
// default cap, one watch takes a connection and the other stays for requests.
TEST_F(HttpTest, WatchCapLeavesAConnectionForRequests) {
  HttpOptions o;
  o.connections_max = 2;
  StartServer(o);
  Watch first(port_, "/v1/watch");
  ASSERT_EQ(first.status(), 200) << first.head();
  Watch second(port_, "/v1/watch");
  EXPECT_EQ(second.status(), 503) << second.head();
  EXPECT_EQ(Call("GET", "/v1/status").status, 200);
}

// ---- health ----

TEST_F(HttpTest, HealthIsOkOnceServing) {
  StartServer();
  const Reply r = Call("GET", "/v1/health");
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_EQ(r.Json(), nlohmann::json({{"status", "ok"}}));
  EXPECT_EQ(Call("PUT", "/v1/health", "x").status, 405);
  EXPECT_EQ(Call("GET", "/v1/health?verbose=1").status, 400);
}

// Health is readiness: while the storage refuses writes (a full disk, here a
// FaultEnv over an in-memory file system) it is 503 with the reason, and 200
// again once the storage took writes back.
TEST(HttpHealthTest, StorageThatRefusesWritesIs503UntilItHeals) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  testing::FaultEnv env(mem.get());
  SystemClock clock;
  ReplicaOptions o;
  o.path = "/db";
  o.env = &env;
  o.clock = &clock;
  o.node_id = kNode;
  auto replica = Replica::Open(o);
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  HttpOptions ho;
  ho.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(ho, HttpContext{replica->get(), "pubkey", {}});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const uint16_t port = (*server)->port();
  EXPECT_EQ(Exchange(port, "GET", "/v1/health", {}, {}).status, 200);

  env.SetWriteError(true);
  EXPECT_EQ(Exchange(port, "PUT", "/v1/maps/m/keys/k", "v", {}).status, 503);
  const Reply degraded = Exchange(port, "GET", "/v1/health", {}, {});
  EXPECT_EQ(degraded.status, 503) << degraded;
  EXPECT_EQ(degraded.Json().at("status"), "degraded") << degraded;
  EXPECT_NE(degraded.Json().at("reason").get<std::string>().find("storage refuses writes: "),
            std::string::npos)
      << degraded;

  env.SetWriteError(false);
  ASSERT_TRUE((*replica)->RetryStorage().ok());
  const Reply healed = Exchange(port, "GET", "/v1/health", {}, {});
  EXPECT_EQ(healed.status, 200) << healed;
  (*server)->Stop();
}

// ---- tokens ----

TEST_F(HttpTest, BearerTokenIsRequiredWhenSet) {
  HttpOptions o;
  o.bearer_token = "s3cret-token";
  StartServer(o);
  for (const std::string target : {"/v1/status", "/metrics", "/v1/maps/m/keys/k", "/nowhere"}) {
    SCOPED_TRACE(target);
    const Reply none = Call("GET", target);
    EXPECT_EQ(none.status, 401) << none;
    EXPECT_EQ(none.Json().at("code"), "unauthorized");
    EXPECT_NE(none.Header("www-authenticate").find("Bearer"), std::string::npos);
    EXPECT_EQ(Call("GET", target, {}, {"Authorization: Bearer wrong"}).status, 401);
    EXPECT_EQ(Call("GET", target, {}, {"Authorization: Bearer s3cret-token-and-more"}).status, 401);
    EXPECT_EQ(Call("GET", target, {}, {"Authorization: Basic s3cret-token"}).status, 401);
  }
  EXPECT_EQ(Call("PUT", "/v1/maps/m/keys/k", "v", {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_TRUE(replica_->Get("m", "k").status().IsNotFound()) << "a refused write wrote nothing";
  EXPECT_EQ(Call("PUT", "/v1/maps/m/keys/k", "v", {"Authorization: Bearer s3cret-token"}).status,
            200);
  EXPECT_EQ(Call("GET", "/v1/maps/m/keys/k", {}, {"authorization: bearer s3cret-token"}).status,
            200);
  EXPECT_EQ(Call("GET", "/v1/status", {}, {"Authorization: Bearer s3cret-token"}).status, 200);
  // A probe from loopback needs no token for health, and a wrong one changes nothing.
  const Reply health = Call("GET", "/v1/health");
  EXPECT_EQ(health.status, 200) << health;
  EXPECT_EQ(health.Json().at("status"), "ok");
  EXPECT_EQ(Call("GET", "/v1/health", {}, {"Authorization: Bearer wrong"}).status, 200);

  // The client sends the token it is given.
  HttpClientOptions co;
  co.address = "127.0.0.1:" + std::to_string(port_);
  EXPECT_TRUE(ReplyStatus(*HttpCall(co, "GET", "/v1/status")).IsRefused());
  co.bearer_token = "s3cret-token";
  EXPECT_EQ(HttpCall(co, "GET", "/v1/status")->status, 200);
}

// The web console's files hold no data: served without the token, while
// every API route it calls still needs it.
TEST_F(HttpTest, WebConsoleIsServedWithoutTheToken) {
  HttpOptions o;
  o.bearer_token = "s3cret-token";
  StartServer(o);
  ASSERT_FALSE(UiAssets().empty());
  for (const UiAsset& asset : UiAssets()) {
    const std::string target = "/ui/" + std::string(asset.path);
    SCOPED_TRACE(target);
    const Reply r = Call("GET", target);
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_TRUE(r.body == asset.bytes);
    EXPECT_EQ(r.Header("content-type"), asset.content_type);
    EXPECT_EQ(r.Header("cache-control"), "no-cache");
    EXPECT_EQ(r.Header("x-content-type-options"), "nosniff");
    EXPECT_NE(r.Header("content-security-policy").find("default-src 'self'"), std::string::npos);
  }
  for (const std::string target : {"/ui", "/ui/", "/ui/index.html"}) {
    SCOPED_TRACE(target);
    const Reply r = Call("GET", target);
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_EQ(r.Header("content-type"), "text/html; charset=utf-8");
    EXPECT_NE(r.body.find("/ui/app.js"), std::string::npos);
  }
  const Reply missing = Call("GET", "/ui/nope.js");
  EXPECT_EQ(missing.status, 404) << missing;
  EXPECT_EQ(missing.Json().at("code"), "not_found");
  EXPECT_EQ(Call("GET", "/uix").status, 401) << "not the console: an unknown route";
  EXPECT_EQ(Call("GET", "/uix", {}, {"Authorization: Bearer s3cret-token"}).status, 404);
  EXPECT_EQ(Call("GET", "/ui?x=1").status, 400);
  const Reply post = Call("POST", "/ui", "x");
  EXPECT_EQ(post.status, 405) << post;
  EXPECT_EQ(post.Header("allow"), "GET, HEAD");
  EXPECT_EQ(Call("GET", "/v1/status").status, 401);
  EXPECT_EQ(Call("GET", "/v1/watch").status, 401);
  // The console's node panel shows the version from the status.
  const Reply status = Call("GET", "/v1/status", {}, {"Authorization: Bearer s3cret-token"});
  ASSERT_EQ(status.status, 200) << status;
  EXPECT_EQ(status.Json().at("version"), TIDEMAP_VERSION_STRING);
}

TEST_F(HttpTest, NonLoopbackWithoutTokenIsRefusedAtStart) {
  OpenReplica();
  for (const char* listen : {"0.0.0.0:0", ":0", "[::]:0"}) {
    HttpOptions o;
    o.listen = listen;
    auto s = HttpServer::Start(o, HttpContext{replica_.get(), "pk", {}});
    ASSERT_FALSE(s.ok()) << listen;
    EXPECT_TRUE(s.status().IsInvalidArgument()) << s.status().ToString();
    EXPECT_NE(s.status().message().find("bearer token"), std::string::npos) << s.status().message();
  }
  HttpOptions o;
  o.listen = "0.0.0.0:0";
  o.bearer_token = "t";
  auto s = HttpServer::Start(o, HttpContext{replica_.get(), "pk", {}});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  (*s)->Stop();
  (*s)->Stop();  // idempotent

  o = HttpOptions{};
  o.listen = "localhost:0";
  auto local = HttpServer::Start(o, HttpContext{replica_.get(), "pk", {}});
  EXPECT_TRUE(local.ok()) << local.status().ToString();
  o.listen = "127.0.0.1";
  EXPECT_TRUE(
      HttpServer::Start(o, HttpContext{replica_.get(), "pk", {}}).status().IsInvalidArgument());
}

TEST_F(HttpTest, PortInUseIsUnavailable) {
  StartServer();
  HttpOptions o;
  o.listen = "127.0.0.1:" + std::to_string(port_);
  auto second = HttpServer::Start(o, HttpContext{replica_.get(), "pk", {}});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsUnavailable()) << second.status().ToString();
}

// ---- server-sent events ----

TEST_F(HttpTest, WatchStreamsLocalAndRemoteChanges) {
  StartServer();
  Watch w(port_, "/v1/watch?map=m");
  ASSERT_EQ(w.status(), 200) << w.head();
  EXPECT_NE(w.head().find("text/event-stream"), std::string::npos) << w.head();
  // The subscription is in place once the headers arrived.
  auto put = replica_->Put("m", "local", "v");
  ASSERT_TRUE(put.ok());
  ASSERT_TRUE(replica_->Put("other", "x", "v").ok());  // another map: not streamed
  const Version remote_version{ReplicaTestAccess::hlc(*replica_).Now(), 77};
  KeyedRecord rec{"m", "from-peer", "x", remote_version, false};
  ASSERT_TRUE(replica_->ApplyRemote(std::span<const KeyedRecord>(&rec, 1), 77).ok());
  ASSERT_TRUE(replica_->Delete("m", "local").ok());
  const std::vector<Event> events = w.Next(3);
  EXPECT_EQ(Render(events), "local@1 from-peer@3/remote local@4/deleted");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].data.at("hlc"), put->hlc.ToString());
  EXPECT_EQ(events[0].data.at("origin"), NodeIdToString(kNode));
  EXPECT_EQ(events[0].data.at("map"), "m");
  EXPECT_EQ(events[0].data.at("seq"), 1);
  EXPECT_EQ(events[0].data.at("tombstone"), false);
  EXPECT_EQ(events[1].data.at("origin"), "000000000000004d");
  EXPECT_EQ(events[1].data.at("hlc"), remote_version.hlc.ToString());
  EXPECT_EQ(events[2].data.at("tombstone"), true);

  // A watch of every map sees both maps; binary keys come as key_base64.
  Watch all(port_, "/v1/watch");
  ASSERT_EQ(all.status(), 200);
  ASSERT_TRUE(replica_->Put("x", std::string("\xff\x00", 2), "v").ok());
  ASSERT_TRUE(replica_->Put("m", "k", "v").ok());
  const auto both = all.Next(2);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].data.at("key_base64"), "/wA=");
  EXPECT_EQ(both[1].data.at("map"), "m");
}

TEST_F(HttpTest, WatchResumesFromASeqThenGoesLive) {
  StartServer();
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(replica_->Put("m", "k" + std::to_string(i), "v").ok());
  ASSERT_TRUE(replica_->Put("other", "o", "v").ok());  // seq 6, filtered out of the replay
  Watch w(port_, "/v1/watch?map=m&from=2");
  ASSERT_EQ(w.status(), 200) << w.head();
  EXPECT_EQ(Render(w.Next(3)), "k3@3 k4@4 k5@5");
  ASSERT_TRUE(replica_->Put("m", "live", "v").ok());
  EXPECT_EQ(Render(w.Next(1)), "live@7");

  // Last-Event-ID (what a reconnecting EventSource sends) wins over from=.
  Watch again(port_, "/v1/watch?map=m&from=0", {"Last-Event-ID: 4"});
  ASSERT_EQ(again.status(), 200);
  EXPECT_EQ(Render(again.Next(2)), "k5@5 live@7");

  // A replay longer than one read of the oplog, with writes during it.
  for (int i = 0; i < 600; ++i) ASSERT_TRUE(replica_->Put("m", "bulk", std::to_string(i)).ok());
  Watch bulk(port_, "/v1/watch?map=m&from=7");
  ASSERT_EQ(bulk.status(), 200);
  std::thread writer([&] {
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(replica_->Put("m", "during", "v").ok());
  });
  const auto events = bulk.Next(650);
  writer.join();
  ASSERT_EQ(events.size(), 650u);
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].id, std::to_string(8 + i)) << "in seq order, none twice, none missed";
  }
}

TEST_F(HttpTest, WatchFromBelowThePrunedPointIs410) {
  OplogRetention retention;
  retention.rows_max = 3;
  OpenReplica({}, retention);
  StartServer();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(replica_->Put("m", "k" + std::to_string(i), "v").ok());
  auto pruned = replica_->PruneOplog();
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  ASSERT_EQ(pruned->pruned_through, 7u);
  Watch w(port_, "/v1/watch?map=m&from=3");
  EXPECT_EQ(w.status(), 410) << w.head();
  Watch ok(port_, "/v1/watch?map=m&from=7");
  ASSERT_EQ(ok.status(), 200);
  EXPECT_EQ(Render(ok.Next(3)), "k7@8 k8@9 k9@10");
}

// Out of storage: a put and a batch with a put get 507 quota_exceeded, a
// delete and a read go on, the metrics say `full`, and every watch stream
// (whatever its map) gets one `quota` event per state change, without an id.
TEST_F(HttpTest, OutOfStorageIs507AndAQuotaEventOnWatchStreams) {
  StartServer();
  ASSERT_EQ(Call("PUT", "/v1/maps/m/keys/a", "1").status, 200);
  Watch w(port_, "/v1/watch?map=other");
  ASSERT_EQ(w.status(), 200) << w.head();
  replica_->SetStorageQuota(1);
  const Reply refused = Call("PUT", "/v1/maps/m/keys/b", "2");
  EXPECT_EQ(refused.status, 507) << refused;
  EXPECT_EQ(refused.Json().value("code", ""), "quota_exceeded") << refused;
  const Reply batch =
      Call("POST", "/v1/batch", R"({"ops":[{"op":"put","map":"m","key":"c","value":"3"}]})",
           {"Content-Type: application/json"});
  EXPECT_EQ(batch.status, 507) << batch;
  EXPECT_EQ(Call("GET", "/v1/maps/m/keys/a").status, 200);
  EXPECT_EQ(Call("DELETE", "/v1/maps/m/keys/a").status, 200);
  EXPECT_EQ(Metric("tidemap_storage_state{state=\"full\"}"), 1);
  EXPECT_EQ(Metric("tidemap_storage_quota_bytes"), 1);
  replica_->SetStorageQuota(0);
  EXPECT_EQ(Call("PUT", "/v1/maps/m/keys/b", "2").status, 200);
  const std::vector<Event> events = w.Next(2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].event, "quota");
  EXPECT_TRUE(events[0].id.empty());
  EXPECT_EQ(events[0].data.at("state"), "full");
  EXPECT_EQ(events[0].data.at("quota_bytes"), 1);
  EXPECT_GT(events[0].data.at("used_bytes").get<uint64_t>(), 0u);
  EXPECT_EQ(events[1].event, "quota");
  EXPECT_EQ(events[1].data.at("state"), "ok");
  EXPECT_EQ(events[1].data.at("quota_bytes"), 0);
}

TEST_F(HttpTest, SlowWatchClientIsDroppedWithAFinalEvent) {
  HttpOptions o;
  o.sse_queue_events_max = 4;
  StartServer(o);
  Watch w(port_, "/v1/watch?map=m");
  ASSERT_EQ(w.status(), 200);
  // Batches commit (and deliver) many events at once, faster than the stream
  // drains them into the socket: the queue of 4 overflows.
  for (int b = 0; b < 20; ++b) {
    WriteBatch batch;
    for (int i = 0; i < 500; ++i) batch.Put("m", "k" + std::to_string(i), std::string(100, 'v'));
    ASSERT_TRUE(replica_->Write(batch).ok());
  }
  ASSERT_TRUE(w.socket().ReadToEof()) << "the server closes the stream";
  const std::vector<Event> events = TakeEvents(&w.socket().buffer());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "error");
  EXPECT_EQ(events.back().data.at("code"), "too_slow");
  EXPECT_LT(events.size(), 10'000u);
  // resume_from: the seq of the last change event it got.
  const uint64_t last_seq = events.size() >= 2 ? std::stoull(events[events.size() - 2].id) : 0;
  EXPECT_EQ(events.back().data.at("resume_from"), last_seq);
  const Reply m = Call("GET", "/metrics");
  EXPECT_NE(m.body.find("tidemap_http_watch_dropped_total 1\n"), std::string::npos) << m.body;
}

TEST_F(HttpTest, WatchKeepaliveAndStopClosesStreams) {
  HttpOptions o;
  o.sse_keepalive_ms = 50;
  StartServer(o);
  Watch w(port_, "/v1/watch?map=m");
  ASSERT_EQ(w.status(), 200);
  EXPECT_TRUE(w.socket().ReadUntil(
      [](const std::string& b) { return b.find(": keepalive\n\n") != std::string::npos; }, 3000));
  Socket idle(port_);  // an idle keep-alive connection too
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_TRUE(w.socket().ReadToEof(3000));
  EXPECT_TRUE(idle.ReadToEof(3000));
  // Writes after Stop reach no stream and do not crash.
  EXPECT_TRUE(replica_->Put("m", "after", "v").ok());
}

}  // namespace
}  // namespace tidemap
