// Proves, with the real `tidemap` binary on a small tmpfs that the test
// fills, that a full disk costs no acknowledged write and no restart:
// - `serve` refuses writes with 507 quota_exceeded naming the cause (a full
//   file system is refused as the storage quota is), keeps serving reads,
//   says so in its log, status (state `full`) and metrics, and takes writes
//   again on its own once space is back;
// - with the node stopped and the disk full, `get`, `scan` and `status` on
//   the data dir still answer (they open it read-only), and a refused `put`
//   loses nothing;
// - every write acknowledged along the way is there at the end.
// Mounting needs root (CI runs as root); elsewhere the test is skipped.
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

RunResult Tidemap(const std::vector<std::string>& args) {
  return testing::RunProgram(TIDEMAP_BIN, args, {}, {}, 60'000);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
    tmp_ = testing::MakeTempDir("tidemap-disk-full");
    disk_ = tmp_ + "/disk";
    fs::create_directory(disk_);
    ASSERT_EQ(::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=24m"), 0) << std::strerror(errno);
    mounted_ = true;
    dir_ = disk_ + "/node";
  }
  void TearDown() override {
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
    if (!tmp_.empty()) {
      std::error_code ec;
      fs::remove_all(tmp_, ec);
    }
  }

  // Fills what is left of the tmpfs with one file.
  void FillDisk() {
    std::ofstream filler(disk_ + "/filler", std::ios::binary | std::ios::app);
    const std::string chunk(64 << 10, 'f');
    while (filler.write(chunk.data(), static_cast<std::streamsize>(chunk.size()))) filler.flush();
  }
  void FreeDisk() { fs::remove(disk_ + "/filler"); }

  std::string tmp_, disk_, dir_;
  bool mounted_ = false;
  std::map<std::string, std::string> acknowledged_;  // key -> value
};

TEST_F(DiskFullTest, WritesStopAndComeBackReadsGoOnNothingAcknowledgedIsLost) {
  ASSERT_EQ(Tidemap({"init", "--data", dir_}).exit_code, 0);
  const std::string http = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
  const std::string listen = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
  testing::ChildProcess serve(TIDEMAP_BIN,
                              {"serve", "--data", dir_, "--http", http, "--listen", listen},
                              tmp_ + "/serve.log");
  ASSERT_TRUE(testing::WaitUntil(20'000, 50, [&] {
    return !serve.running() || Tidemap({"status", "--http", http}).exit_code == 0;
  }));
  ASSERT_TRUE(serve.running()) << serve.Log();
  HttpClientOptions client;
  client.address = http;
  const std::string value(4096, 'v');
  auto put = [&](int i) {
    const std::string key = "k" + std::to_string(i);
    auto reply = HttpCall(client, "PUT", "/v1/maps/m/keys/" + key, value + key);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    if (reply.ok() && reply->status == 200) acknowledged_[key] = value + key;
    return reply.ok() ? *reply : HttpReply{};
  };
  for (int i = 0; i < 100; ++i) ASSERT_EQ(put(i).status, 200);

  FillDisk();
  HttpReply refused;
  int i = 100;
  for (; i < 3000 && (refused = put(i)).status == 200; ++i) {
  }
  ASSERT_EQ(refused.status, 507) << "no write was refused on a full disk";
  const auto error = nlohmann::json::parse(refused.body);
  EXPECT_EQ(error["code"], "quota_exceeded") << refused.body;
  EXPECT_TRUE(Contains(error["error"], "No space left on device")) << refused.body;
  EXPECT_EQ(put(++i).status, 507);  // refused until space is back

  auto read = HttpCall(client, "GET", "/v1/maps/m/keys/k7");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->status, 200);
  EXPECT_EQ(read->body, value + "k7");
  ASSERT_TRUE(testing::WaitUntil(5'000, 50, [&] {
    const RunResult s = Tidemap({"status", "--http", http, "--json"});
    const auto j = nlohmann::json::parse(s.out, nullptr, /*allow_exceptions=*/false);
    return j.is_object() && j["storage"]["state"] == "full";
  })) << "status does not say the storage is full";
  auto metrics = HttpCall(client, "GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(Contains(metrics->body, "\ntidemap_storage_writable 0\n")) << metrics->body;

  FreeDisk();
  ASSERT_TRUE(testing::WaitUntil(10'000, 100, [&] { return put(++i).status == 200; }))
      << "writes did not come back after space was freed";
  EXPECT_TRUE(Contains(Tidemap({"status", "--http", http}).out, "storage     ok"));
  const std::string log = serve.Log();
  EXPECT_TRUE(Contains(log, "writes are refused")) << log;
  EXPECT_TRUE(Contains(log, "storage recovered")) << log;
  serve.Signal(SIGTERM);
  ASSERT_EQ(serve.Wait(20'000), 0) << serve.Log();

  // Stopped, disk full: the read commands still answer; a write is refused.
  FillDisk();
  const RunResult get = Tidemap({"get", "--data", dir_, "m", "k7"});
  EXPECT_EQ(get.exit_code, 0) << get;
  EXPECT_EQ(get.out, value + "k7");
  const RunResult status = Tidemap({"status", "--data", dir_, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status;
  // At least every acknowledged key (a refused write may have reached the log).
  EXPECT_GE(nlohmann::json::parse(status.out)["keys"].get<uint64_t>(), acknowledged_.size());
  EXPECT_NE(Tidemap({"put", "--data", dir_, "m", "late", "x"}).exit_code, 0);
  FreeDisk();
  for (const auto& [key, v] : acknowledged_) {
    const RunResult r = Tidemap({"get", "--data", dir_, "m", key});
    ASSERT_EQ(r.exit_code, 0) << key << ": " << r;
    ASSERT_EQ(r.out, v) << key;
  }
}

}  // namespace
}  // namespace tidemap
