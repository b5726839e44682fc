// Proves `tidemap serve --http-tls-cert FILE --http-tls-key FILE` and
// `--log-format json` end to end with the real executable: a daemon serving
// its API over HTTPS only (certificate from a CA this test makes with
// openssl), the CLI reaching it with `--http https://... --cacert`, refused
// without the CA; a bad certificate or key stopping the daemon at start
// (exit 3 naming the file; exit 4 for a key others may read); and, with
// json logs, every line the daemon logs parsing as a JSON object with
// time, level and msg.
#include <signal.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"

namespace tidemap {
namespace {

using testing::ChildProcess;
using testing::RunResult;

RunResult RunTidemap(const std::vector<std::string>& args, std::string_view input = {}) {
  return testing::RunProgram(TIDEMAP_BIN, args, input);
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class ServeHttpsTest : public ::testing::Test {
 protected:
  ServeHttpsTest() : tmp_(testing::MakeTempDir("tidemap-serve-https-test")), data_(tmp_ + "/n") {}
  ~ServeHttpsTest() override {
    daemon_.reset();
    std::error_code ec;
    std::filesystem::remove_all(tmp_, ec);
  }

  void SetUp() override {
    certs_ = testing::MakeTestCerts(tmp_);
    const RunResult init = RunTidemap({"init", "--data", data_});
    ASSERT_EQ(init.exit_code, 0) << init;
    http_port_ = testing::FreeTcpPort();
  }

  std::vector<std::string> ServeArgs(const std::string& cert, const std::string& key) const {
    return {"serve",
            "--data",
            data_,
            "--listen",
            "127.0.0.1:" + std::to_string(testing::FreeTcpPort()),
            "--http",
            "127.0.0.1:" + std::to_string(http_port_),
            "--http-tls-cert",
            cert,
            "--http-tls-key",
            key};
  }

  std::string Https() const { return "https://127.0.0.1:" + std::to_string(http_port_); }

  const std::string tmp_;
  const std::string data_;
  testing::TestCerts certs_;
  uint16_t http_port_ = 0;
  std::unique_ptr<ChildProcess> daemon_;
};

TEST_F(ServeHttpsTest, CliTalksHttpsToTheDaemonAndEveryLogLineIsJson) {
  std::vector<std::string> args = ServeArgs(certs_.server_cert, certs_.server_key);
  args.insert(args.end(), {"--log-format", "json"});
  daemon_ = std::make_unique<ChildProcess>(TIDEMAP_BIN, args, tmp_ + "/serve.log");
  ASSERT_TRUE(daemon_->started());
  const std::vector<std::string> status = {"status", "--http", Https(), "--cacert", certs_.ca};
  ASSERT_TRUE(testing::WaitUntil(20'000, 50, [&] { return RunTidemap(status).exit_code == 0; }))
      << daemon_->Log();

  const RunResult put =
      RunTidemap({"put", "--http", Https(), "--cacert", certs_.ca, "m", "k", "over https"});
  ASSERT_EQ(put.exit_code, 0) << put;
  const RunResult get = RunTidemap({"get", "--http", Https(), "--cacert", certs_.ca, "m", "k"});
  EXPECT_EQ(get.exit_code, 0) << get;
  EXPECT_EQ(get.out, "over https");
  // A bare HOST:PORT with --cacert means https too.
  const std::string bare = "127.0.0.1:" + std::to_string(http_port_);
  EXPECT_EQ(RunTidemap({"get", "--http", bare, "--cacert", certs_.ca, "m", "k"}).out, "over https");
  // Without the CA the node is not verified: unreachable, exit 3.
  const RunResult unverified = RunTidemap({"get", "--http", Https(), "m", "k"});
  EXPECT_EQ(unverified.exit_code, 3) << unverified;
  EXPECT_TRUE(Contains(unverified.err, "certificate verify failed")) << unverified;
  // Plain HTTP to the HTTPS port: the node's 400 says why.
  const RunResult plain = RunTidemap({"get", "--http", bare, "m", "k"});
  EXPECT_EQ(plain.exit_code, 2) << plain;
  EXPECT_TRUE(Contains(plain.err, "this port speaks HTTPS")) << plain;

  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->Wait(20'000), 0) << daemon_->Log();
  std::istringstream log(daemon_->Log());
  std::string line, messages;
  int lines = 0;
  const std::regex time(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  while (std::getline(log, line)) {
    ++lines;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
    // time, level, event, peer, msg, fields (server/log_format.h).
    ASSERT_EQ(j.size(), 6u) << line;
    EXPECT_TRUE(j.at("event").is_string() && j.at("fields").is_object()) << line;
    EXPECT_TRUE(j.at("peer").is_null() || j.at("peer").is_string()) << line;
    EXPECT_TRUE(std::regex_match(j.at("time").get<std::string>(), time)) << line;
    EXPECT_TRUE(j.at("level") == "info" || j.at("level") == "warning") << line;
    messages += j.at("msg").get<std::string>() + "\n";
  }
  EXPECT_GE(lines, 3);
  EXPECT_TRUE(Contains(messages, "HTTP API on " + bare + " (TLS)")) << messages;
  EXPECT_TRUE(Contains(messages, "SIGTERM: shutting down")) << messages;
}

TEST_F(ServeHttpsTest, BadCertificateOrKeyStopsTheDaemonAtStart) {
  const std::string junk = tmp_ + "/junk.pem";
  std::ofstream(junk) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  ASSERT_EQ(chmod(junk.c_str(), 0600), 0);
  const RunResult bad_cert = RunTidemap(ServeArgs(junk, certs_.server_key));
  EXPECT_EQ(bad_cert.exit_code, 3) << bad_cert;
  EXPECT_TRUE(Contains(bad_cert.err, "certificate file " + junk)) << bad_cert;

  const RunResult bad_key = RunTidemap(ServeArgs(certs_.server_cert, junk));
  EXPECT_EQ(bad_key.exit_code, 3) << bad_key;
  EXPECT_TRUE(Contains(bad_key.err, "key file " + junk)) << bad_key;

  const RunResult no_key = RunTidemap(ServeArgs(certs_.server_cert, tmp_ + "/absent"));
  EXPECT_EQ(no_key.exit_code, 3) << no_key;
  EXPECT_TRUE(Contains(no_key.err, tmp_ + "/absent")) << no_key;

  ASSERT_EQ(chmod(certs_.server_key.c_str(), 0640), 0);
  const RunResult open_key = RunTidemap(ServeArgs(certs_.server_cert, certs_.server_key));
  EXPECT_EQ(open_key.exit_code, 4) << "refused, as a token file others may read: " << open_key;
  EXPECT_TRUE(Contains(open_key.err, certs_.server_key) && Contains(open_key.err, "0640"))
      << open_key;

  std::vector<std::string> half = ServeArgs(certs_.server_cert, certs_.server_key);
  half.resize(half.size() - 2);  // --http-tls-cert alone
  EXPECT_EQ(RunTidemap(half).exit_code, 2);
  std::vector<std::string> bad_format = ServeArgs(certs_.server_cert, certs_.server_key);
  bad_format.insert(bad_format.end(), {"--log-format", "xml"});
  const RunResult xml = RunTidemap(bad_format);
  EXPECT_EQ(xml.exit_code, 2) << xml;
  EXPECT_TRUE(Contains(xml.err, "xml")) << xml;
}

}  // namespace
}  // namespace tidemap
