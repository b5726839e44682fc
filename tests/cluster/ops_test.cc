// Operating real `tidemap serve` processes on 127.0.0.1: a watch stream
// resumed by a real EventSource client (Debian's node-eventsource) after an
// absence longer than the maintenance interval, while every peer has
// acknowledged the changes, and refused with 410 and the oldest seq kept once
// the absence outlasts watch_retention_ms. Every daemon runs with free ports
// in its own temp dir; every wait is bounded.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"

namespace tidemap {
namespace {

using testing::ChildProcess;
using testing::RunProgram;
using testing::RunResult;
using testing::WaitUntil;

// A client that opens an EventSource on argv[2] (sending argv[3] as
// Last-Event-ID, which wins over the URL's from=, when not empty), collects argv[4] change events
// and prints
// {"ids": [...]} or, on an error, {"ids": [...], "status": HTTP status}.
constexpr const char* kEventSourceClient = R"js(
const EventSource = require('eventsource');
const [url, lastId, want] = process.argv.slice(2);
const es = new EventSource(url, lastId ? {headers: {'Last-Event-ID': lastId}} : {});
const ids = [];
function done(extra, code) {
  es.close();
  console.log(JSON.stringify(Object.assign({ids}, extra)));
  process.exit(code);
}
es.addEventListener('change', (e) => {
  ids.push(Number(e.lastEventId));
  if (ids.length >= Number(want)) done({}, 0);
});
es.onerror = (e) => done({status: e.status || 0}, 2);
setTimeout(() => done({status: -1}, 3), 20000);
)js";

struct OpsNode {
  std::string name;
  std::string dir;
  std::string public_key;
  uint16_t port = 0;
  uint16_t http_port = 0;
  std::unique_ptr<ChildProcess> process;
  int starts = 0;

  std::string listen() const { return "127.0.0.1:" + std::to_string(port); }
  std::string http() const { return "127.0.0.1:" + std::to_string(http_port); }
  std::string url() const { return "http://" + http(); }
};

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::MakeTempDir("ops"); }

  void TearDown() override {
    for (auto& [name, node] : nodes_) {
      if (node->process && node->process->running()) {
        node->process->Signal(SIGKILL);
        node->process->Wait(10'000);
      }
      if (HasFailure() && node->process) {
        std::cerr << "----- log of " << name << " -----\n" << node->process->Log() << "\n";
      }
    }
    std::filesystem::remove_all(root_);
  }

  RunResult Tidemap(const std::vector<std::string>& args) { return RunProgram(TIDEMAP_BIN, args); }

  OpsNode& AddNode(const std::string& name) {
    auto node = std::make_unique<OpsNode>();
    node->name = name;
    node->dir = root_ + "/" + name;
    RunResult r = Tidemap({"init", "--data", node->dir});
    EXPECT_EQ(r.exit_code, 0) << r;
    std::string out = r.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    node->public_key = out.substr(out.rfind('\n') + 1);
    node->port = testing::FreeTcpPort();
    node->http_port = testing::FreeTcpPort();
    OpsNode& ref = *node;
    nodes_[name] = std::move(node);
    return ref;
  }

  // Starts `node` with `args` after --data, --http and --listen; waits until
  // its HTTP API answers.
  void Start(OpsNode& node, const std::vector<std::string>& args) {
    std::vector<std::string> all = {"serve",    "--data",      node.dir,      "--http", node.http(),
                                    "--listen", node.listen(), "--log-level", "debug"};
    all.insert(all.end(), args.begin(), args.end());
    ++node.starts;
    node.process = std::make_unique<ChildProcess>(
        TIDEMAP_BIN, all, root_ + "/" + node.name + "." + std::to_string(node.starts) + ".log");
    ASSERT_TRUE(node.process->started());
    const bool up = WaitUntil(20'000, 50, [&] {
      if (!node.process->running()) return true;
      return Tidemap({"status", "--http", node.http(), "--json"}).exit_code == 0;
    });
    ASSERT_TRUE(up && node.process->running()) << node.name << " did not come up:\n"
                                               << node.process->Log();
  }

  nlohmann::json Status(const OpsNode& node) {
    RunResult r = Tidemap({"status", "--http", node.http(), "--json"});
    if (r.exit_code != 0) return nlohmann::json();
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // peers[] entry of `peer` in `node`'s status (null when absent).
  nlohmann::json PeerEntry(const OpsNode& node, const OpsNode& peer) {
    nlohmann::json s = Status(node);
    if (!s.is_object()) return nullptr;
    for (const auto& p : s["peers"]) {
      if (p["public_key"].is_string() && p["public_key"] == peer.public_key) return p;
    }
    return nullptr;
  }

  void Put(const OpsNode& node, const std::string& key) {
    RunResult r = Tidemap({"put", "--http", node.http(), "m", key, "v"});
    ASSERT_EQ(r.exit_code, 0) << r;
  }

  // Waits until `peer` acknowledged every seq of `node`'s oplog.
  void WaitAcked(const OpsNode& node, const OpsNode& peer) {
    uint64_t last = 0;
    nlohmann::json entry;
    const bool acked = WaitUntil(30'000, 50, [&] {
      nlohmann::json s = Status(node);
      if (!s.is_object()) return false;
      last = s["oplog"]["last_seq"].get<uint64_t>();
      entry = PeerEntry(node, peer);
      return entry.is_object() && entry["acked_seq"].get<uint64_t>() == last;
    });
    ASSERT_TRUE(acked) << "last seq " << last << ", peer entry " << entry.dump();
  }

  // Runs the EventSource client against `node`'s /v1/watch of map m.
  nlohmann::json Watch(const OpsNode& node, const std::string& last_id, int want) {
    const std::string script = root_ + "/eventsource_client.js";
    if (!std::filesystem::exists(script)) std::ofstream(script) << kEventSourceClient;
    RunResult r = RunProgram(
        "/usr/bin/env",
        {"node", script, node.url() + "/v1/watch?map=m&from=0", last_id, std::to_string(want)}, {},
        {"NODE_PATH=/usr/share/nodejs"}, 30'000);
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r;
    return j.is_object() ? j : nlohmann::json::object();
  }

  std::string root_;
  std::map<std::string, std::unique_ptr<OpsNode>> nodes_;
};

std::vector<uint64_t> Ids(const nlohmann::json& j) {
  std::vector<uint64_t> out;
  if (j.contains("ids")) {
    for (const auto& id : j["ids"]) out.push_back(id.get<uint64_t>());
  }
  return out;
}

TEST_F(OpsTest, WatchResumesAfterAnAbsenceWithinRetentionAndIs410Beyond) {
  OpsNode& a = AddNode("a");
  OpsNode& b = AddNode("b");
  // Maintenance (the oplog prune) runs many times during each absence below.
  constexpr uint64_t kRetentionMs = 6'000;
  Start(a, {"--trust", b.public_key, "--maintenance-interval-ms", "100", "--watch-retention-ms",
            std::to_string(kRetentionMs)});
  Start(b, {"--trust", a.public_key, "--peer", a.listen()});
  for (int i = 0; i < 3; ++i) Put(a, "first" + std::to_string(i));
  const nlohmann::json first = Watch(a, "", 3);
  ASSERT_EQ(Ids(first).size(), 3u) << first.dump();
  const uint64_t last_seen = Ids(first).back();

  // Away: more changes, every one acknowledged by the peer, pruning rounds.
  const auto away_since = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) Put(a, "second" + std::to_string(i));
  WaitAcked(a, b);
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));
  ASSERT_LT(std::chrono::steady_clock::now() - away_since,
            std::chrono::milliseconds(kRetentionMs / 2))
      << "the machine is too slow for this test's timing";
  const nlohmann::json resumed = Watch(a, std::to_string(last_seen), 3);
  EXPECT_EQ(Ids(resumed), (std::vector<uint64_t>{last_seen + 1, last_seen + 2, last_seen + 3}))
      << resumed.dump();

  // Away longer than the retention: the acknowledged rows go, and a resume
  // is told where the oplog now starts.
  WaitAcked(a, b);
  nlohmann::json gone;
  const bool pruned = WaitUntil(kRetentionMs * 4, 200, [&] {
    RunResult r =
        RunProgram("/usr/bin/env", {"curl", "-s", "--max-time", "2",
                                    a.url() + "/v1/watch?map=m&from=" + std::to_string(last_seen)});
    gone = nlohmann::json::parse(r.out, nullptr, false);
    return gone.is_object() && gone.value("code", "") == "gone";
  });
  ASSERT_TRUE(pruned) << gone.dump();
  const uint64_t pruned_through = gone["pruned_through"].get<uint64_t>();
  EXPECT_GT(pruned_through, last_seen);
  EXPECT_EQ(gone["oldest_seq"].get<uint64_t>(), pruned_through + 1);
  const nlohmann::json refused = Watch(a, std::to_string(last_seen), 1);
  EXPECT_EQ(refused["status"], 410) << refused.dump();
}

}  // namespace
}  // namespace tidemap
