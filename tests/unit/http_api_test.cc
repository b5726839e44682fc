// Proves the HTTP conventions and batch writes of server/http.h against a
// real server on 127.0.0.1 (port 0), with a raw-socket client that reads each
// response to EOF (so a HEAD response that carried a body would show):
// POST /v1/batch (JSON and NDJSON, atomic, limits refused whole with the op
// index), HEAD on every GET route, ETag / If-None-Match / If-Match,
// gzip scan pages, and the OpenAPI document against the route table. Also
// the batch body parser (server/batch.h) and Replica::PutIf / DeleteIf.
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/http_reply.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/batch.h>
#include <tidemap/server/http.h>
#include <tidemap/server/http_api_internal.h>
#include <tidemap/server/url.h>

namespace tidemap {
namespace {

constexpr uint64_t kNode = 0x1234abcd5678ef01;

using Reply = testing::HttpReply;
using testing::Lower;

// One request on its own connection (Connection: close); the reply is read to EOF.
Reply Call(uint16_t port, std::string_view method, std::string_view target,
           std::string_view body = {}, const std::vector<std::string>& headers = {}) {
  const int fd = testing::ConnectLoopback(port);
  if (fd < 0) {
    ADD_FAILURE() << "connect: " << std::strerror(errno);
    return {};
  }
  std::string req = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n";
  bool has_length = false;
  for (const auto& h : headers) {
    req += h + "\r\n";
    has_length = has_length || Lower(h.substr(0, 15)) == "content-length:";
  }
  if (!has_length && (!body.empty() || method == "PUT" || method == "POST")) {
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "Connection: close\r\n\r\n";
  req += body;
  for (std::string_view rest = req; !rest.empty();) {
    const ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  std::string buf;
  char chunk[65536];
  for (;;) {
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
  }
  close(fd);
  Reply r;
  const size_t body_at = testing::ParseReplyHead(buf, &r);
  if (body_at == 0) {
    ADD_FAILURE() << "no response head: " << buf.substr(0, 200);
    return r;
  }
  r.body = buf.substr(body_at);
  return r;
}

std::string Gunzip(const std::string& bytes) {
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  char chunk[65536];
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(chunk, sizeof(chunk) - z.avail_out);
  }
  EXPECT_EQ(rc, Z_STREAM_END);
  inflateEnd(&z);
  return out;
}

class HttpApiTest : public ::testing::Test {
 protected:
  HttpApiTest() : dir_(testing::MakeTempDir("tidemap-http-api-test")) {}
  ~HttpApiTest() override {
    server_.reset();
    replica_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Start(const Limits& limits = {}) {
    ReplicaOptions o;
    o.path = dir_ + "/db";
    o.clock = &clock_;
    o.node_id = kNode;
    o.durability = Durability::kRelaxed;
    o.limits = limits;
    auto r = Replica::Open(std::move(o));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replica_ = std::move(r).value();
    HttpOptions options;
    options.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(std::move(options), HttpContext{replica_.get(), "pubkey", {}});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
  }

  Reply Call(std::string_view method, std::string_view target, std::string_view body = {},
             const std::vector<std::string>& headers = {}) {
    return tidemap::Call(server_->port(), method, target, body, headers);
  }

  const std::string dir_;
  SystemClock clock_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<HttpServer> server_;
};

// ---- POST /v1/batch ----

TEST_F(HttpApiTest, BatchJsonWritesAcrossMapsInOneCommit) {
  Start();
  ASSERT_TRUE(replica_->Put("m2", "gone", "x").ok());
  const std::string binary("\x00\xff\x01", 3);
  nlohmann::json ops = nlohmann::json::array();
  ops.push_back({{"op", "put"}, {"map", "m1"}, {"key", "a"}, {"value", "1"}});
  ops.push_back({{"op", "put"},
                 {"map", "m1"},
                 {"key_base64", crypto::Base64Encode(binary)},
                 {"value_base64", crypto::Base64Encode(binary + binary)}});
  ops.push_back({{"op", "delete"}, {"map", "m2"}, {"key", "gone"}});
  const uint64_t seq_before = replica_->LastSeq();
  const Reply r = Call("POST", "/v1/batch", nlohmann::json{{"ops", ops}}.dump(),
                       {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r;
  const auto hlcs = r.Json().at("hlcs");
  ASSERT_EQ(hlcs.size(), 3u);
  EXPECT_EQ(replica_->Get("m1", "a")->value, "1");
  EXPECT_EQ(replica_->Get("m1", binary)->value, binary + binary);
  EXPECT_TRUE(replica_->Get("m2", "gone").status().IsNotFound());
  EXPECT_EQ(replica_->Get("m1", "a")->version.hlc.ToString(), hlcs[0].get<std::string>());
  EXPECT_EQ(replica_->LastSeq(), seq_before + 3);
  // An empty batch writes nothing; no Content-Type means JSON.
  const Reply empty = Call("POST", "/v1/batch", R"({"ops": []})");
  ASSERT_EQ(empty.status, 200) << empty;
  EXPECT_EQ(empty.Json().at("hlcs"), nlohmann::json::array());
}

TEST_F(HttpApiTest, BatchNdjsonTakesOneOpPerLine) {
  Start();
  std::string body;
  for (int i = 0; i < 100; ++i) {
    body += nlohmann::json{{"op", "put"},
                           {"map", "nd"},
                           {"key", "k" + std::to_string(i)},
                           {"value", std::to_string(i)}}
                .dump() +
            "\n";
    if (i % 10 == 0) body += "\r\n";  // blank lines are skipped
  }
  body += R"({"op":"delete","map":"nd","key":"k7"})";  // no final newline
  const Reply r =
      Call("POST", "/v1/batch", body, {"Content-Type: application/x-ndjson; charset=utf-8"});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.Json().at("hlcs").size(), 101u);
  EXPECT_EQ(replica_->Get("nd", "k99")->value, "99");
  EXPECT_TRUE(replica_->Get("nd", "k7").status().IsNotFound());
}

TEST_F(HttpApiTest, BatchPutsWithATtlExpireLikeASinglePut) {
  Start();
  const uint64_t before_ms = clock_.NowMillis();
  const Reply r = Call("POST", "/v1/batch",
                       R"({"ops":[{"op":"put","map":"m","key":"short","value":"v","ttl":"90s"},
                                  {"op":"put","map":"m","key":"kept","value":"v"}]})",
                       {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r;
  auto rec = replica_->Get("m", "short");
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_GE(rec->expiry_ms, before_ms + 90'000);
  EXPECT_LE(rec->expiry_ms, clock_.NowMillis() + 90'000);
  auto kept = replica_->Get("m", "kept");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->expiry_ms, 0u);
  const Reply scan = Call("GET", "/v1/maps/m");
  ASSERT_EQ(scan.status, 200) << scan;
  EXPECT_TRUE(scan.Json()["items"][1].contains("expires")) << scan;  // "short" sorts second
}

TEST_F(HttpApiTest, BatchOverALimitOrMalformedIsRefusedWholeWithTheOpIndex) {
  Limits limits;
  limits.batch_ops_max = 3;
  limits.value_bytes_max = 10;
  Start(limits);
  auto put = [](const std::string& key, const std::string& value) {
    return nlohmann::json{{"op", "put"}, {"map", "m"}, {"key", key}, {"value", value}}.dump();
  };
  struct Case {
    std::string body;
    int status;
    nlohmann::json op;
    std::string code;
  };
  const std::vector<Case> cases = {
      {put("a", "1") + "\n" + put("b", std::string(11, 'v')) + "\n", 413, 1, "refused"},
      {put("a", "1") + "\n" + put("b", "2") + "\n" + put("c", "3") + "\n" + put("d", "4"), 413, 3,
       "refused"},
      {put("a", "1") + "\n" + put("b", "2") + "\n" + R"({"op":"put","map":"m","key":"c"})", 400, 2,
       "invalid_argument"},
      {put("a", "1") + "\n" + R"({"op":"put","map":"m","key":"b","value":"2","ttl":1})", 400, 1,
       "invalid_argument"},
      {put("a", "1") + "\n" + R"({"op":"delete","map":"","key":"b"})", 400, 1, "invalid_argument"},
      {put("a", "1") + "\nnot json\n", 400, 1, "invalid_argument"},
      {put("a", "1") + "\n" + R"({"op":"put","map":"m","key":"b","value_base64":"!!"})", 400, 1,
       "invalid_argument"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const Reply r = Call("POST", "/v1/batch", c.body, {"Content-Type: application/x-ndjson"});
    EXPECT_EQ(r.status, c.status) << r;
    EXPECT_EQ(r.Json().at("op"), c.op);
    EXPECT_EQ(r.Json().at("code"), c.code);
    EXPECT_TRUE(r.Json().at("error").is_string());
    EXPECT_TRUE(replica_->Get("m", "a").status().IsNotFound()) << "nothing of it was written";
  }
  // The body as a whole: not JSON, not {"ops": [...]}, an unknown media type.
  for (const std::string body : {"{", R"({"ops": {}})", R"({"ops": [], "more": 1})", "[]"}) {
    const Reply r = Call("POST", "/v1/batch", body, {"Content-Type: application/json"});
    EXPECT_EQ(r.status, 400) << r;
    EXPECT_TRUE(r.Json().at("op").is_null()) << r;
  }
  EXPECT_EQ(Call("POST", "/v1/batch", "a=1", {"Content-Type: text/plain"}).status, 415);
  // Only POST; a body over the route's limit is refused from its Content-Length.
  const Reply get = Call("GET", "/v1/batch");
  EXPECT_EQ(get.status, 405) << get;
  EXPECT_EQ(get.Header("allow"), "POST");
  const Reply big =
      Call("POST", "/v1/batch", {}, {"Content-Length: " + std::to_string(uint64_t{1} << 40)});
  EXPECT_EQ(big.status, 413) << big;
}

TEST(BatchParseTest, FormatsAndFieldRules) {
  EXPECT_EQ(BatchFormatFor(""), BatchFormat::kJson);
  EXPECT_EQ(BatchFormatFor("application/json; charset=utf-8"), BatchFormat::kJson);
  EXPECT_EQ(BatchFormatFor("Application/X-NDJSON"), BatchFormat::kNdjson);
  EXPECT_FALSE(BatchFormatFor("text/csv").has_value());
  const Limits limits;
  ParsedBatch both = ParseBatch(R"({"ops":[{"op":"put","map":"m","map_base64":"bQ==","key":"k",
                                   "value":"v"}]})",
                                BatchFormat::kJson, limits);
  ASSERT_TRUE(both.error.has_value());
  EXPECT_EQ(both.error->op, 0u);
  ParsedBatch del_value = ParseBatch(R"({"op":"delete","map":"m","key":"k","value":"v"})",
                                     BatchFormat::kNdjson, limits);
  ASSERT_TRUE(del_value.error.has_value());
  ParsedBatch ok = ParseBatch(
      "\n"
      R"({"op":"put","map_base64":"bQ==","key":"k","value":""})"
      "\n\n",
      BatchFormat::kNdjson, limits);
  ASSERT_FALSE(ok.error.has_value()) << ok.error->status.ToString();
  ASSERT_EQ(ok.batch.size(), 1u);
  EXPECT_EQ(ok.batch.op(0).map, "m");
  EXPECT_EQ(ok.batch.op(0).value, "");
  EXPECT_FALSE(ok.batch.op(0).tombstone);
}

TEST(BatchParseTest, APutMayCarryATtl) {
  const Limits limits;
  ParsedBatch ok = ParseBatch(R"({"ops":[{"op":"put","map":"m","key":"a","value":"v","ttl":"90s"},
                                        {"op":"put","map":"m","key":"b","value":"v"}]})",
                              BatchFormat::kJson, limits);
  ASSERT_FALSE(ok.error.has_value()) << ok.error->status.ToString();
  ASSERT_EQ(ok.batch.size(), 2u);
  EXPECT_EQ(ok.batch.op(0).ttl_ms, 90'000u);
  EXPECT_EQ(ok.batch.op(1).ttl_ms, 0u);
  ParsedBatch nd = ParseBatch(R"({"op":"put","map":"m","key":"a","value":"v","ttl":"7d"})",
                              BatchFormat::kNdjson, limits);
  ASSERT_FALSE(nd.error.has_value()) << nd.error->status.ToString();
  EXPECT_EQ(nd.batch.op(0).ttl_ms, 7u * 24 * 3600 * 1000);
  for (const char* bad : {R"({"op":"put","map":"m","key":"a","value":"v","ttl":"90"})",
                          R"({"op":"put","map":"m","key":"a","value":"v","ttl":"0s"})",
                          R"({"op":"put","map":"m","key":"a","value":"v","ttl":"101000d"})",
                          R"({"op":"delete","map":"m","key":"a","ttl":"90s"})"}) {
    SCOPED_TRACE(bad);
    ParsedBatch refused = ParseBatch(
        std::string("{\"op\":\"put\",\"map\":\"m\",\"key\":\"x\",\"value\":\"\"}\n") + bad,
        BatchFormat::kNdjson, limits);
    ASSERT_TRUE(refused.error.has_value());
    EXPECT_EQ(refused.error->op, 1u);
    EXPECT_EQ(refused.error->status.code(), Status::Code::kInvalidArgument);
  }
}

// The fast reader of flat ops and the full parser agree: escapes, \u,
// non-ASCII, duplicates and other value types give the same batch or error.
TEST(BatchParseTest, FastAndFullParsersAgree) {
  const Limits limits;
  struct Case {
    std::string line;
    std::string key;  // the key written; empty: an error
  };
  const std::vector<Case> cases = {
      {R"({"op":"put","map":"m","key":"a\"b\\c\/d\n","value":"v"})", "a\"b\\c/d\n"},
      {R"({"op":"put","map":"m","key":"\u00e9\ud83d\ude00","value":"v"})",
       "\xc3\xa9\xf0\x9f\x98\x80"},
      {"{\"op\":\"put\",\"map\":\"m\",\"key\":\"\xc3\xa9\",\"value\":\"v\"}", "\xc3\xa9"},
      {R"(  { "op" : "put" , "map" : "m" , "key" : "k" , "value" : "v" }  )", "k"},
      {R"({"op":"put","map":"m","key":"k","key":"k2","value":"v"})", "k2"},
      {R"({"op":"put","map":"m","key":"k","value":1})", ""},
      {R"({"op":"put","map":"m","key":"k","value":"v"} x)", ""},
      {R"({"op":"put","map":"m","key":"\x","value":"v"})", ""},
      {"{\"op\":\"put\",\"map\":\"m\",\"key\":\"\xff\",\"value\":\"v\"}", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    for (const BatchFormat format : {BatchFormat::kNdjson, BatchFormat::kJson}) {
      const std::string body =
          format == BatchFormat::kNdjson ? c.line : R"({"ops": [)" + c.line + "]}";
      ParsedBatch p = ParseBatch(body, format, limits);
      if (c.key.empty()) {
        EXPECT_TRUE(p.error.has_value());
        continue;
      }
      ASSERT_FALSE(p.error.has_value()) << p.error->status.ToString();
      ASSERT_EQ(p.batch.size(), 1u);
      EXPECT_EQ(p.batch.op(0).key, c.key);
    }
  }
}

// Base64 in ops decodes as crypto::Base64Decode does: every length and
// byte, and the same refusals (padding, stray bits, foreign characters).
TEST(BatchParseTest, Base64ValuesDecodeLikeTheLibrary) {
  const Limits limits;
  std::string bytes;
  for (int n = 0; n < 70; ++n) {
    const std::string b64 = crypto::Base64Encode(bytes);
    ParsedBatch p = ParseBatch(R"({"op":"put","map":"m","key":"k","value_base64":")" + b64 + "\"}",
                               BatchFormat::kNdjson, limits);
    ASSERT_FALSE(p.error.has_value()) << b64;
    EXPECT_EQ(p.batch.op(0).value, bytes);
    bytes.push_back(static_cast<char>(n * 37 + 200));
  }
  for (const char* bad :
       {"QQ=", "QQ", "QR==", "QUJ=", "Q===", "====", "QUJD=QUJD", "QU JD", "QUJD\\n", "QU-_"}) {
    ParsedBatch p =
        ParseBatch(std::string(R"({"op":"put","map":"m","key":"k","value_base64":")") + bad + "\"}",
                   BatchFormat::kNdjson, limits);
    EXPECT_TRUE(p.error.has_value()) << bad;
    EXPECT_FALSE(crypto::Base64Decode(bad).ok()) << bad;
  }
}

// ---- HEAD, ETag, conditional requests, gzip ----

TEST_F(HttpApiTest, HeadOnEveryGetRouteHasGetsHeadersAndNoBody) {
  Start();
  ASSERT_TRUE(replica_->Put("m", "k", "value").ok());
  // A concrete target for each route template.
  const std::map<std::string, std::string> targets = {
      {"/v1/maps/{map}/keys/{key}", "/v1/maps/m/keys/k"},
      {"/v1/maps/{map}", "/v1/maps/m?prefix=k"},
      {"/v1/watch", "/v1/watch?map=m"},
      {"/ui/{file}", "/ui/app.js"},
  };
  // Bodies that change between two requests (counters, times) only keep
  // their Content-Length's presence.
  const std::set<std::string> dynamic = {"/v1/status", "/metrics", "/v1/watch"};
  size_t get_routes = 0;
  for (const HttpRouteSpec& route : HttpRouteTable()) {
    if (std::string(route.methods).find("GET") == std::string::npos) continue;
    ++get_routes;
    EXPECT_NE(std::string(route.methods).find("HEAD"), std::string::npos) << route.path;
    const std::string path(route.path);
    const std::string target = targets.count(path) ? targets.at(path) : path;
    SCOPED_TRACE(target);
    const Reply head = Call("HEAD", target);
    EXPECT_EQ(head.status, 200) << head;
    EXPECT_TRUE(head.body.empty()) << head.body.substr(0, 100);
    if (path == "/v1/watch") {
      EXPECT_EQ(head.Header("content-type"), "text/event-stream");
      EXPECT_EQ(head.Header("content-length"), "");  // a stream has no length to announce
      continue;                                      // GET would open a stream
    }
    if (path == "/v1/snapshot") {
      EXPECT_EQ(head.Header("content-type"), "application/octet-stream");
      EXPECT_EQ(head.Header("content-length"), "");
      continue;  // GET streams a snapshot file (chunked: no Content-Length to compare)
    }
    const Reply get = Call("GET", target);
    EXPECT_EQ(get.status, 200) << get;
    for (const char* h : {"content-type", "etag", "x-tidemap-hlc", "vary"}) {
      EXPECT_EQ(head.Header(h), get.Header(h)) << h;
    }
    if (dynamic.count(path)) {
      EXPECT_FALSE(head.Header("content-length").empty());
    } else {
      EXPECT_EQ(head.Header("content-length"), std::to_string(get.body.size()));
    }
  }
  EXPECT_EQ(get_routes, 12u);
  // Errors too: the status and headers of GET, no body.
  const Reply missing = Call("HEAD", "/v1/maps/m/keys/none");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(missing.body.empty());
  EXPECT_EQ(Call("HEAD", "/v1/watch?bad=1").status, 400);
  // HEAD is in Allow where GET is.
  EXPECT_EQ(Call("POST", "/v1/status").Header("allow"), "GET, HEAD");
  EXPECT_EQ(Call("POST", "/v1/maps/m/keys/k").Header("allow"), "GET, HEAD, PUT, DELETE");
}

// DELETE /v1/maps/{map} clears the map: 200 with the clear's version, the
// older keys gone at once for GET and scans, other maps untouched; it takes
// no query parameter, and Allow lists it.
TEST_F(HttpApiTest, DeleteOfAMapClearsIt) {
  Start();
  ASSERT_TRUE(replica_->Put("m", "a", "1").ok());
  ASSERT_TRUE(replica_->Put("m", "b", "2").ok());
  ASSERT_TRUE(replica_->Put("other", "a", "kept").ok());
  const Reply cleared = Call("DELETE", "/v1/maps/m");
  ASSERT_EQ(cleared.status, 200) << cleared;
  const nlohmann::json j = cleared.Json();
  ASSERT_TRUE(j.contains("hlc") && j["hlc"].is_string()) << cleared;
  EXPECT_GT(j["hlc"].get<std::string>(), replica_->Get("other", "a")->version.hlc.ToString());
  EXPECT_EQ(Call("GET", "/v1/maps/m/keys/a").status, 404);
  EXPECT_EQ(Call("GET", "/v1/maps/m").Json()["items"].size(), 0u);
  EXPECT_EQ(Call("GET", "/v1/maps/other/keys/a").body, "kept");
  ASSERT_EQ(Call("PUT", "/v1/maps/m/keys/c", "after").status, 200);
  EXPECT_EQ(Call("GET", "/v1/maps/m").Json()["items"].size(), 1u);
  EXPECT_EQ(Call("DELETE", "/v1/maps/m?prefix=a").status, 400);
  EXPECT_EQ(Call("POST", "/v1/maps/m").Header("allow"), "GET, HEAD, DELETE");
  const nlohmann::json status = Call("GET", "/v1/status").Json();
  EXPECT_EQ(status["clears"]["maps"], 1);
}

TEST_F(HttpApiTest, ETagIsTheVersionAndIfNoneMatchGives304) {
  Start();
  const Reply put = Call("PUT", "/v1/maps/m/keys/k", "v1");
  ASSERT_EQ(put.status, 200) << put;
  const std::string etag = put.Header("etag");
  const Result<Record> rec = replica_->Get("m", "k");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(etag, "\"" + rec->version.ToString() + "\"");
  const Reply get = Call("GET", "/v1/maps/m/keys/k");
  EXPECT_EQ(get.Header("etag"), etag);
  for (const std::string& inm :
       {etag, "W/" + etag, "\"other\", " + etag, std::string("*"), "\"x\"," + etag + ",\"y\""}) {
    SCOPED_TRACE(inm);
    for (const char* method : {"GET", "HEAD"}) {
      const Reply r = Call(method, "/v1/maps/m/keys/k", {}, {"If-None-Match: " + inm});
      EXPECT_EQ(r.status, 304) << r;
      EXPECT_TRUE(r.body.empty());
      EXPECT_EQ(r.Header("etag"), etag);
    }
  }
  const Reply stale = Call("GET", "/v1/maps/m/keys/k", {}, {"If-None-Match: \"nope\""});
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.body, "v1");
  // A new version, a new tag.
  ASSERT_EQ(Call("PUT", "/v1/maps/m/keys/k", "v2").status, 200);
  const Reply after = Call("GET", "/v1/maps/m/keys/k", {}, {"If-None-Match: " + etag});
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(after.body, "v2");
  EXPECT_NE(after.Header("etag"), etag);
  EXPECT_EQ(Call("GET", "/v1/maps/m/keys/none", {}, {"If-None-Match: *"}).status, 404);
}

TEST_F(HttpApiTest, IfMatchIsACompareAndSet) {
  Start();
  const std::string path = "/v1/maps/m/keys/k";
  // Absent key: any If-Match fails, "*" included, and nothing is written.
  for (const char* im : {"*", "\"2026-01-01T00:00:00.000Z-00000/1234abcd5678ef01\""}) {
    const Reply r = Call("PUT", path, "v", {std::string("If-Match: ") + im});
    EXPECT_EQ(r.status, 412) << r;
    EXPECT_EQ(r.Json().at("code"), "precondition_failed");
    EXPECT_TRUE(r.Header("etag").empty());
  }
  EXPECT_TRUE(replica_->Get("m", "k").status().IsNotFound());
  const std::string e1 = Call("PUT", path, "v1").Header("etag");
  // A stale or weak tag fails with the current tag; the value stays.
  ASSERT_EQ(Call("PUT", path, "v2", {"If-Match: " + e1}).status, 200);
  const std::string e2 = Call("GET", path).Header("etag");
  for (const std::string& im : {e1, "W/" + e2, std::string("\"garbage\"")}) {
    const Reply r = Call("PUT", path, "v3", {"If-Match: " + im});
    EXPECT_EQ(r.status, 412) << r;
    EXPECT_EQ(r.Header("etag"), e2);
  }
  EXPECT_EQ(replica_->Get("m", "k")->value, "v2");
  // One of a list matches; "*" matches any live version.
  const Reply listed = Call("PUT", path, "v3", {"If-Match: \"x\", " + e2});
  ASSERT_EQ(listed.status, 200) << listed;
  const std::string e3 = listed.Header("etag");
  EXPECT_EQ(e3, Call("GET", path).Header("etag"));
  ASSERT_EQ(Call("PUT", path, "v4", {"If-Match: *"}).status, 200);
  // DELETE likewise; a deleted key then fails "*".
  EXPECT_EQ(Call("DELETE", path, {}, {"If-Match: " + e3}).status, 412);
  const std::string e4 = Call("GET", path).Header("etag");
  ASSERT_EQ(Call("DELETE", path, {}, {"If-Match: " + e4}).status, 200);
  EXPECT_EQ(Call("PUT", path, "v5", {"If-Match: *"}).status, 412);
  EXPECT_EQ(Call("DELETE", path, {}, {"If-Match: *"}).status, 412);
  EXPECT_TRUE(replica_->Get("m", "k").status().IsNotFound());
}

TEST_F(HttpApiTest, ScanPagesAreGzippedWhenAsked) {
  Start();
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(replica_->Put("m", "key" + std::to_string(i), std::string(100, 'x')).ok());
  }
  const Reply plain = Call("GET", "/v1/maps/m");
  ASSERT_EQ(plain.status, 200);
  EXPECT_TRUE(plain.Header("content-encoding").empty());
  EXPECT_EQ(plain.Header("vary"), "Accept-Encoding");
  for (const char* ae : {"gzip", "deflate, gzip;q=0.5", "br, *", "GZIP"}) {
    SCOPED_TRACE(ae);
    const Reply z = Call("GET", "/v1/maps/m", {}, {std::string("Accept-Encoding: ") + ae});
    ASSERT_EQ(z.status, 200) << z;
    EXPECT_EQ(z.Header("content-encoding"), "gzip");
    EXPECT_EQ(z.Header("vary"), "Accept-Encoding");
    EXPECT_LT(z.body.size(), plain.body.size() / 4);
    EXPECT_EQ(Gunzip(z.body), plain.body);
  }
  for (const char* ae : {"gzip;q=0", "deflate", "identity", "gzip; q=0.000"}) {
    const Reply r = Call("GET", "/v1/maps/m", {}, {std::string("Accept-Encoding: ") + ae});
    EXPECT_TRUE(r.Header("content-encoding").empty()) << ae;
    EXPECT_EQ(r.body, plain.body) << ae;
  }
  // Only scan pages: a key's value is served as it is.
  const Reply value = Call("GET", "/v1/maps/m/keys/key1", {}, {"Accept-Encoding: gzip"});
  EXPECT_TRUE(value.Header("content-encoding").empty());
  EXPECT_EQ(value.body, std::string(100, 'x'));
}

// ---- the OpenAPI document ----

// The document's paths and methods are exactly the route table's: a route
// served without being documented, or documented without being served, fails.
TEST_F(HttpApiTest, OpenApiDocumentCoversEveryRouteAndNoOther) {
  Start();
  const Reply r = Call("GET", "/v1/openapi.json");
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_EQ(r.body, std::string(OpenApiDocument()));
  const nlohmann::json doc = r.Json();
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.at("openapi").get<std::string>().substr(0, 2), "3.");
  std::map<std::string, std::set<std::string>> served, documented;
  for (const HttpRouteSpec& route : HttpRouteTable()) {
    std::string methods(route.methods);
    for (size_t at = 0; at < methods.size();) {
      const size_t comma = std::min(methods.find(',', at), methods.size());
      std::string m = Lower(methods.substr(at, comma - at));
      m.erase(0, m.find_first_not_of(' '));
      served[std::string(route.path)].insert(m);
      at = comma + 1;
    }
  }
  const std::set<std::string> verbs = {"get", "head", "put", "post", "delete", "patch", "options"};
  for (const auto& [path, item] : doc.at("paths").items()) {
    for (const auto& [name, op] : item.items()) {
      if (verbs.count(name)) documented[path].insert(name);
    }
  }
  EXPECT_EQ(served, documented);
  // Every documented path is routed (not 404 "no route"), whatever its method.
  for (const auto& [path, methods] : documented) {
    std::string target = path;
    for (auto [from, to] : {std::pair<std::string, std::string>{"{map}", "m"}, {"{key}", "k"}}) {
      if (const size_t at = target.find(from); at != std::string::npos) {
        target.replace(at, from.size(), to);
      }
    }
    const Reply probe = Call("OPTIONS", target);
    EXPECT_EQ(probe.status, 405) << path << ": " << probe;
  }
}

// ---- Replica::PutIf / DeleteIf ----

// Threads increment one counter by compare-and-set: every increment that
// reports success is counted exactly once.
// ---- GET /v1/pending ----

TEST_F(HttpApiTest, PendingListsWhatAPeerHasNotAcknowledged) {
  Start();
  constexpr uint64_t kPeer = 0x00000000000000f2;
  ASSERT_TRUE(replica_->AddPeer(kPeer).ok());
  ASSERT_TRUE(replica_->Put("m", "a", "1").ok());
  ASSERT_TRUE(replica_->Put("m", "b", "2").ok());
  ASSERT_TRUE(replica_->Delete("m", "a").ok());
  const std::string peer = NodeIdToString(kPeer);

  const Reply all = Call("GET", "/v1/pending?peer=" + peer);
  ASSERT_EQ(all.status, 200) << all;
  const nlohmann::json doc = all.Json();
  ASSERT_EQ(doc["peers"].size(), 1u) << doc;
  const nlohmann::json& p = doc["peers"][0];
  EXPECT_EQ(p["node_id"], peer);
  EXPECT_EQ(p["count"], 3);
  EXPECT_EQ(p["acked_seq"], 0);
  ASSERT_EQ(p["items"].size(), 3u);
  EXPECT_EQ(p["items"][2]["op"], "delete");
  EXPECT_TRUE(p["next"].is_null());
  nlohmann::json every = Call("GET", "/v1/pending").Json();  // every peer: here the one
  ASSERT_EQ(every["peers"].size(), 1u) << every;
  EXPECT_EQ(every["peers"][0]["items"], p["items"]);
  EXPECT_EQ(every["peers"][0]["count"], 3);

  const nlohmann::json first = Call("GET", "/v1/pending?peer=" + peer + "&limit=2").Json();
  ASSERT_EQ(first["peers"][0]["items"].size(), 2u) << first;
  const uint64_t next = first["peers"][0]["next"].get<uint64_t>();
  EXPECT_EQ(next, first["peers"][0]["items"][1]["seq"].get<uint64_t>());
  const nlohmann::json rest =
      Call("GET", "/v1/pending?peer=" + peer + "&after=" + std::to_string(next)).Json();
  ASSERT_EQ(rest["peers"][0]["items"].size(), 1u) << rest;
  EXPECT_EQ(rest["peers"][0]["items"][0]["key"], "a");
  EXPECT_EQ(rest["peers"][0]["count"], 3) << "the count is the peer's, whatever the page";

  EXPECT_EQ(Call("GET", "/v1/pending?peer=" + NodeIdToString(7)).status, 404);
  for (const char* bad : {"/v1/pending?peer=zz", "/v1/pending?limit=0", "/v1/pending?limit=1001",
                          "/v1/pending?after=-1", "/v1/pending?map=m"}) {
    SCOPED_TRACE(bad);
    const Reply r = Call("GET", bad);
    EXPECT_EQ(r.status, 400) << r;
    EXPECT_EQ(r.Json()["code"], "invalid_argument") << r;
  }
}

TEST_F(HttpApiTest, CompareAndSetLosesNoIncrement) {
  Start();
  ASSERT_TRUE(replica_->Put("c", "n", "0").ok());
  std::atomic<int> won{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        Result<Record> rec = replica_->Get("c", "n");
        ASSERT_TRUE(rec.ok());
        const int n = std::stoi(rec->value);
        Result<ConditionalWrite> w =
            replica_->PutIf("c", "n", std::to_string(n + 1), WriteCondition{{rec->version}});
        ASSERT_TRUE(w.ok()) << w.status().ToString();
        if (w->written) {
          ++won;
        } else {
          EXPECT_TRUE(w->version.has_value());
          EXPECT_NE(*w->version, rec->version);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(won.load(), 0);
  EXPECT_EQ(std::stoi(replica_->Get("c", "n")->value), won.load());
  // A failed condition writes nothing: no oplog entry either.
  const uint64_t seq = replica_->LastSeq();
  Result<ConditionalWrite> stale = replica_->DeleteIf("c", "n", WriteCondition{{Version{}}});
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->written);
  EXPECT_EQ(replica_->LastSeq(), seq);
  // Limits apply as to Put.
  EXPECT_TRUE(replica_->PutIf("", "n", "v", WriteCondition{{}, true}).status().IsInvalidArgument());
}

}  // namespace
}  // namespace tidemap
