// Proves the storage quota with real `tidemap serve` processes on loopback:
// node A, whose data dir is on a small tmpfs of its own (when the test runs
// as root), serves with --storage-quota; it is filled by a peer's records and
// by its own writes. It passes `pruning` (the ladder prunes its oplog and
// logs each step), then at `full` refuses puts with 507 quota_exceeded (the
// CLI exits 4), keeps serving reads and deletes, says so in status, metrics
// and its log, and refuses the peer's records (the peer sees why and keeps
// them). A raised quota (config file + SIGHUP) lets writes in again, and the
// two converge with nothing acknowledged lost.
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tests/cluster/serve_fixture.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

using testing::ServeNode;
using testing::WaitUntil;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class QuotaClusterTest : public testing::ServeClusterTest {
 protected:
  QuotaClusterTest() : ServeClusterTest("tidemap-quota") {}

  void TearDown() override {
    ServeClusterTest::TearDown();
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
    if (!disk_.empty()) std::filesystem::remove_all(disk_);
  }

  // A tmpfs of its own for node `name`'s data dir when running as root (the
  // directory is then made on it), else a plain directory.
  void MountDisk() {
    disk_ = testing::MakeTempDir("tidemap-quota-disk");
    if (geteuid() != 0) return;
    ASSERT_EQ(::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=48m"), 0) << std::strerror(errno);
    mounted_ = true;
  }

  // PUT of an incompressible value; the HTTP status (0 when unreachable).
  int Put(const ServeNode& n, const std::string& key) {
    std::string value(4096, '\0');
    for (char& c : value) c = static_cast<char>('a' + rng_() % 26);
    const HttpClientOptions client = Client(n);
    auto reply = HttpCall(client, "PUT", "/v1/maps/m/keys/" + key, value);
    if (!reply.ok()) return 0;
    if (reply->status == 200) acknowledged_[n.name + "/" + key] = value;
    last_body_ = reply->body;
    return reply->status;
  }

  // Every live key of map m on `n` with its value, read by pages of the
  // scan route (one request per 1,000 keys, not one process per key).
  std::map<std::string, std::string> ScanAll(const ServeNode& n) {
    std::map<std::string, std::string> out;
    const HttpClientOptions client = Client(n);
    std::string after;
    for (;;) {
      const std::string target = "/v1/maps/m?limit=1000" + (after.empty() ? "" : "&after=" + after);
      auto reply = HttpCall(client, "GET", target);
      if (!reply.ok() || reply->status != 200) {
        ADD_FAILURE() << n.name
                      << " scan: " << (reply.ok() ? reply->body : reply.status().message());
        return out;
      }
      const nlohmann::json page = nlohmann::json::parse(reply->body);
      for (const auto& item : page["items"]) {
        out[item["key"].get<std::string>()] = item["value"].get<std::string>();
      }
      if (page["next"].is_null()) return out;
      after = page["next"].get<std::string>();
    }
  }

  std::string Metrics(const ServeNode& n) {
    const HttpClientOptions client = Client(n);
    auto reply = HttpCall(client, "GET", "/metrics");
    return reply.ok() ? reply->body : std::string();
  }

  std::string disk_;
  bool mounted_ = false;
  std::mt19937 rng_{7};
  std::map<std::string, std::string> acknowledged_;  // "node/key" -> value
  std::string last_body_;
};

TEST_F(QuotaClusterTest, FullRefusesWritesAndPeerRecordsKeepsReadsAndConvergesOnceRaised) {
  MountDisk();
  ServeNode& a = AddNode("a");  // its dir is made again on the disk
  ServeNode& b = AddNode("b");
  a.dir = disk_ + "/a";
  testing::RunResult init = Tidemap({"init", "--data", a.dir});
  ASSERT_EQ(init.exit_code, 0) << init;
  std::string out = init.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  a.public_key = out.substr(out.rfind('\n') + 1);

  const std::string config = root_ + "/a.toml";
  WriteFile(config, "storage_quota_bytes = \"3MB\"\n");
  Launch(a, {"serve", "--data", a.dir, "--listen", a.listen(), "--http", a.http(), "--peer",
             b.listen(), "--trust", b.public_key, "--config", config, "--log-format", "json"});
  Launch(b, {"serve", "--data", b.dir, "--listen", b.listen(), "--http", b.http(), "--trust",
             a.public_key});
  nlohmann::json s = Status(a);
  ASSERT_TRUE(s.is_object());
  EXPECT_EQ(s["storage"]["quota_bytes"], 3'000'000u) << s.dump();
  EXPECT_EQ(s["storage"]["state"], "ok") << s.dump();

  // Filled by the peer (what B writes reaches A), then by A's own writes.
  for (int i = 0; i < 150; ++i) ASSERT_EQ(Put(b, "b" + std::to_string(i)), 200);
  ASSERT_TRUE(WaitUntil(30'000, 100, [&] {
    return Tidemap({"get", "--http", a.http(), "m", "b149"}).exit_code == 0;
  })) << "B's records did not reach A";
  // A's own writes until one is refused. The ladder's compaction may free a
  // little and let writes in again: each check that needs A full fills it first.
  int next = 0;
  const auto fill = [&] {
    int status = 200;
    for (int n = 0; n < 5000 && (status = Put(a, "a" + std::to_string(next))) == 200; ++n) ++next;
    return status;
  };
  ASSERT_EQ(fill(), 507) << "no write was refused over the quota: " << last_body_;
  const auto error = nlohmann::json::parse(last_body_);
  EXPECT_EQ(error["code"], "quota_exceeded") << last_body_;
  EXPECT_TRUE(Contains(error["error"], "storage quota exceeded")) << last_body_;
  ASSERT_EQ(fill(), 507);
  const testing::RunResult cli = Tidemap({"put", "--http", a.http(), "m", "cli", "x"});
  EXPECT_EQ(cli.exit_code, 4) << cli;
  if (cli.exit_code == 0) acknowledged_["a/cli"] = "x";

  // Reads and deletes go on.
  const testing::RunResult get = Tidemap({"get", "--http", a.http(), "m", "a3"});
  EXPECT_EQ(get.exit_code, 0) << get;
  EXPECT_EQ(get.out, acknowledged_["a/a3"]);
  EXPECT_EQ(Tidemap({"del", "--http", a.http(), "m", "a0"}).exit_code, 0);
  acknowledged_.erase("a/a0");
  EXPECT_TRUE(WaitUntil(10'000, 100, [&] {
    fill();
    return Status(a)["storage"]["state"] == "full";
  })) << Status(a).dump();
  EXPECT_TRUE(WaitUntil(10'000, 100, [&] {
    fill();
    return Contains(Tidemap({"status", "--http", a.http()}).out, "storage     FULL");
  }));
  EXPECT_TRUE(WaitUntil(10'000, 100, [&] {
    fill();
    return Contains(Metrics(a), "tidemap_storage_state{state=\"full\"} 1\n");
  }));

  // B's records are refused while A stays full; B says why and keeps them.
  // The quota is lowered below what A holds first, so that nothing the ladder
  // frees lets B's records in between two fills.
  WriteFile(config, "storage_quota_bytes = \"2MB\"\n");
  a.process->Signal(SIGHUP);
  ASSERT_TRUE(WaitUntil(10'000, 100, [&] {
    const nlohmann::json sa = Status(a);
    return sa.is_object() && sa["storage"]["quota_bytes"] == 2'000'000u &&
           sa["storage"]["state"] == "full";
  })) << Status(a).dump();
  ASSERT_EQ(fill(), 507);
  for (int k = 0; k < 5; ++k) ASSERT_EQ(Put(b, "late" + std::to_string(k)), 200);
  ASSERT_TRUE(WaitUntil(20'000, 100, [&] {
    fill();
    const nlohmann::json p = PeerEntry(b, a);
    return p.is_object() && p["last_error"].is_string() &&
           Contains(p["last_error"], "quota_exceeded");
  })) << PeerEntry(b, a).dump();
  EXPECT_NE(Tidemap({"get", "--http", a.http(), "m", "late4"}).exit_code, 0);

  // The ladder ran (on its next tick) and logged each step.
  EXPECT_TRUE(WaitUntil(
      15'000, 100, [&] { return Contains(a.process->Log(), "\"event\":\"quota_compacted\""); }));
  const std::string log = a.process->Log();
  EXPECT_TRUE(Contains(log, "\"event\":\"storage_quota_state\"")) << log;
  EXPECT_TRUE(Contains(log, "storage state pruning")) << log;
  EXPECT_TRUE(Contains(log, "storage state full")) << log;
  EXPECT_TRUE(Contains(log, "\"event\":\"quota_oplog_pruned\"")) << log;
  EXPECT_TRUE(Contains(log, "\"event\":\"quota_compacted\"")) << log;

  // The quota raised by a reload: writes come back, B's records arrive.
  WriteFile(config, "storage_quota_bytes = \"40MB\"\n");
  a.process->Signal(SIGHUP);
  ASSERT_TRUE(WaitUntil(10'000, 100, [&] { return Put(a, "after") == 200; })) << last_body_;
  ASSERT_TRUE(WaitUntil(60'000, 200,
                        [&] {
                          const nlohmann::json sa = Status(a), sb = Status(b);
                          return sa.is_object() && sb.is_object() &&
                                 sa["merkle_root"] == sb["merkle_root"];
                        }))
      << Status(a).dump() << Status(b).dump();
  EXPECT_EQ(Status(a)["storage"]["state"], "ok");
  // Every acknowledged write is on both nodes, with its value.
  for (const ServeNode* n : {&a, &b}) {
    const std::map<std::string, std::string> stored = ScanAll(*n);
    for (const auto& [name, value] : acknowledged_) {
      const std::string key = name.substr(name.find('/') + 1);
      const auto it = stored.find(key);
      ASSERT_NE(it, stored.end()) << n->name << " lost " << key;
      ASSERT_EQ(it->second, value) << key;
    }
  }
}

}  // namespace
}  // namespace tidemap
