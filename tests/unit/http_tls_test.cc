// Proves the HTTP API over TLS (server/http.h tls_cert_file, tls_key_file)
// against a real server: an in-process HttpServer on 127.0.0.1 with a
// certificate from a CA this test makes with openssl, called by Debian's curl
// (an independent TLS client) and by server/http_client.h. Covers: a route
// over HTTPS with the CA (200), without it (verification fails), plain HTTP
// to the TLS port (400 "this port speaks HTTPS"), an event stream delivering
// a change, and refusals at start (bad certificate, bad key, a key that does
// not match, a key others may read, one file of the two).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/http.h>
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

using testing::RunResult;

constexpr const char* kCurl = "/usr/bin/curl";

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class HttpTlsTest : public ::testing::Test {
 protected:
  HttpTlsTest() : dir_(testing::MakeTempDir("tidemap-http-tls-test")) {}
  ~HttpTlsTest() override {
    server_.reset();
    replica_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void SetUp() override {
    if (!std::filesystem::exists(kCurl)) GTEST_SKIP() << "curl not installed (Debian package curl)";
    certs_ = testing::MakeTestCerts(dir_);
    ReplicaOptions o;
    o.path = dir_ + "/db";
    o.clock = &clock_;
    o.node_id = 0x1234abcd5678ef01;
    o.durability = Durability::kRelaxed;
    auto r = Replica::Open(std::move(o));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replica_ = std::move(r).value();
  }

  Result<std::unique_ptr<HttpServer>> Start(const std::string& cert, const std::string& key) {
    HttpOptions o;
    o.listen = "127.0.0.1:0";
    o.tls_cert_file = cert;
    o.tls_key_file = key;
    return HttpServer::Start(std::move(o), HttpContext{replica_.get(), "pubkey", {}});
  }

  void StartTls() {
    auto s = Start(certs_.server_cert, certs_.server_key);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
  }

  std::string Url(const std::string& scheme, const std::string& path) const {
    return scheme + "://127.0.0.1:" + std::to_string(server_->port()) + path;
  }

  // curl ARGS... printing the body, then a line with the status code.
  RunResult Curl(std::vector<std::string> args, int timeout_ms = 30'000) {
    args.insert(args.begin(), {"--silent", "--show-error", "--write-out", "\n%{http_code}"});
    return testing::RunProgram(kCurl, args, {}, {}, timeout_ms);
  }

  const std::string dir_;
  SystemClock clock_;
  testing::TestCerts certs_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpTlsTest, CurlWithTheCaGetsStatusOverHttps) {
  StartTls();
  const RunResult r = Curl({"--cacert", certs_.ca, Url("https", "/v1/status")});
  ASSERT_EQ(r.exit_code, 0) << r;
  const size_t end = r.out.rfind('\n');
  EXPECT_EQ(r.out.substr(end + 1), "200") << r;
  const auto j = nlohmann::json::parse(r.out.substr(0, end), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j.at("public_key"), "pubkey");
  // localhost is in the certificate too.
  const RunResult by_name =
      Curl({"--cacert", certs_.ca,
            "https://localhost:" + std::to_string(server_->port()) + "/v1/status"});
  EXPECT_EQ(by_name.exit_code, 0) << by_name;
}

TEST_F(HttpTlsTest, CurlWithoutTheCaFailsVerification) {
  StartTls();
  const RunResult r = Curl({Url("https", "/v1/status")});
  EXPECT_EQ(r.exit_code, 60) << "curl's 'peer certificate cannot be authenticated': " << r;
  // The server carries on.
  EXPECT_EQ(Curl({"--cacert", certs_.ca, Url("https", "/v1/status")}).exit_code, 0);
}

TEST_F(HttpTlsTest, PlainHttpToTheTlsPortGets400SayingItSpeaksHttps) {
  StartTls();
  const RunResult r = Curl({Url("http", "/v1/status")});
  ASSERT_EQ(r.exit_code, 0) << r;
  const size_t end = r.out.rfind('\n');
  EXPECT_EQ(r.out.substr(end + 1), "400") << r;
  const auto j = nlohmann::json::parse(r.out.substr(0, end), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_TRUE(Contains(j.at("error").get<std::string>(), "this port speaks HTTPS")) << r;
  EXPECT_EQ(j.at("code"), "invalid_argument");
  const RunResult metrics = Curl({"--cacert", certs_.ca, Url("https", "/metrics")});
  EXPECT_TRUE(Contains(metrics.out,
                       "tidemap_refused_connections_total{reason=\"http_plaintext_on_tls\"} 1"))
      << metrics;
  // Garbage that is neither TLS nor HTTP is closed without an answer.
  const int fd = testing::ConnectLoopback(server_->port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "\x01\x02", 2), 2);
  char c;
  EXPECT_EQ(read(fd, &c, 1), 0);
  close(fd);
}

TEST_F(HttpTlsTest, WatchStreamOverTlsDeliversAnEvent) {
  StartTls();
  // Written through the project's own client over HTTPS.
  HttpClientOptions client;
  client.address = Url("https", "");
  client.ca_file = certs_.ca;
  auto put = HttpCall(client, "PUT", "/v1/maps/m/keys/over-tls", "v1");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->status, 200) << put->body;
  // The stream replays from seq 0, then stays open until curl's --max-time.
  const RunResult r = Curl({"--no-buffer", "--max-time", "2", "--cacert", certs_.ca,
                            Url("https", "/v1/watch?map=m&from=0")});
  EXPECT_EQ(r.exit_code, 28) << "ended by --max-time, the stream still open: " << r;
  EXPECT_TRUE(Contains(r.out, "event: change")) << r;
  EXPECT_TRUE(Contains(r.out, "over-tls")) << r;
}

TEST_F(HttpTlsTest, ClientVerifiesTheNode) {
  StartTls();
  HttpClientOptions client;
  client.address = "127.0.0.1:" + std::to_string(server_->port());
  client.ca_file = certs_.ca;  // a bare HOST:PORT with a CA file means https
  auto ok = HttpCall(client, "GET", "/v1/status");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->status, 200);
  client.address = Url("https", "/");
  client.ca_file.clear();  // the system's CAs do not know the test CA
  auto unverified = HttpCall(client, "GET", "/v1/status");
  ASSERT_FALSE(unverified.ok());
  EXPECT_TRUE(unverified.status().IsUnavailable()) << unverified.status().ToString();
  EXPECT_TRUE(Contains(unverified.status().message(), "certificate verify failed"))
      << unverified.status().ToString();
  client.address = Url("http", "/");  // plain HTTP: the node's 400
  auto plain = HttpCall(client, "GET", "/v1/status");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->status, 400);
  EXPECT_TRUE(Contains(ReplyStatus(*plain).message(), "speaks HTTPS")) << plain->body;
}

TEST_F(HttpTlsTest, BadCertificateOrKeyIsRefusedAtStartNamingTheFile) {
  const std::string junk = dir_ + "/junk.pem";
  std::ofstream(junk) << "not a certificate\n";
  ASSERT_EQ(chmod(junk.c_str(), 0600), 0);
  auto bad_cert = Start(junk, certs_.server_key);
  ASSERT_FALSE(bad_cert.ok());
  EXPECT_TRUE(bad_cert.status().IsUnavailable()) << bad_cert.status().ToString();
  EXPECT_TRUE(Contains(bad_cert.status().message(), "certificate file " + junk));

  auto bad_key = Start(certs_.server_cert, junk);
  ASSERT_FALSE(bad_key.ok());
  EXPECT_TRUE(bad_key.status().IsUnavailable()) << bad_key.status().ToString();
  EXPECT_TRUE(Contains(bad_key.status().message(), "key file " + junk));

  // The CA's key is a valid key, but not the certificate's.
  const std::string ca_key = dir_ + "/ca.key";
  ASSERT_EQ(chmod(ca_key.c_str(), 0600), 0);
  auto mismatch = Start(certs_.server_cert, ca_key);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(mismatch.status().IsUnavailable());
  EXPECT_TRUE(Contains(mismatch.status().message(), "mismatch")) << mismatch.status().ToString();

  auto missing = Start(certs_.server_cert, dir_ + "/absent.key");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsUnavailable());
  EXPECT_TRUE(Contains(missing.status().message(), dir_ + "/absent.key"));

  ASSERT_EQ(chmod(certs_.server_key.c_str(), 0644), 0);
  auto open_key = Start(certs_.server_cert, certs_.server_key);
  ASSERT_FALSE(open_key.ok());
  EXPECT_TRUE(open_key.status().IsRefused()) << open_key.status().ToString();
  EXPECT_TRUE(Contains(open_key.status().message(), "0644")) << open_key.status().ToString();

  auto one_file = Start(certs_.server_cert, "");
  ASSERT_FALSE(one_file.ok());
  EXPECT_TRUE(one_file.status().IsInvalidArgument()) << one_file.status().ToString();
}

TEST_F(HttpTlsTest, TlsIsNoSubstituteForATokenOffLoopback) {
  HttpOptions o;
  o.listen = "0.0.0.0:0";
  o.tls_cert_file = certs_.server_cert;
  o.tls_key_file = certs_.server_key;
  auto s = HttpServer::Start(o, HttpContext{replica_.get(), "pubkey", {}});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsInvalidArgument()) << s.status().ToString();
  EXPECT_TRUE(Contains(s.status().message(), "bearer token")) << s.status().ToString();
}

}  // namespace
}  // namespace tidemap
