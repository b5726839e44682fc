// Operating real `tidemap serve` processes on 127.0.0.1: a watch stream
// resumed by a real EventSource client (Debian's node-eventsource) after an
// absence longer than the maintenance interval, while every peer has
// acknowledged the changes, and refused with 410 and the oldest seq kept once
// the absence outlasts watch_retention_ms; a live reload (SIGHUP and POST
// /v1/admin/reload) that adds a peer, refuses broken files with their line
// while the old settings keep running, and removes the peer (disconnected,
// its cursor gone); JSON log lines with their event, peer and fields; the
// lag a bootstrapping node shows toward its source. Every daemon runs with free ports in its own
// temp dir; every wait is bounded.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "tests/cluster/serve_fixture.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/replica/replica.h>
#include <tidemap/server/data_dir.h>

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

using OpsNode = testing::ServeNode;

class OpsTest : public testing::ServeClusterTest {
 protected:
  OpsTest() : ServeClusterTest("ops") {}

  // Starts `node` with `args` after --data, --http and --listen; waits until
  // its HTTP API answers.
  void Start(OpsNode& node, const std::vector<std::string>& args) {
    std::vector<std::string> all = {"serve",    "--data",      node.dir,      "--http", node.http(),
                                    "--listen", node.listen(), "--log-level", "debug"};
    all.insert(all.end(), args.begin(), args.end());
    Launch(node, all);
  }

  void Put(const OpsNode& node, const std::string& key) {
    auto reply = HttpCall(Client(node), "PUT", "/v1/maps/m/keys/" + key, "v");
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_EQ(reply->status, 200) << reply->body;
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

  // POST /v1/admin/reload: the status code and the JSON body.
  std::pair<int, nlohmann::json> PostReload(const OpsNode& node) {
    RunResult r = RunProgram("/usr/bin/env", {"curl", "-s", "-X", "POST", "-w", "\n%{http_code}",
                                              node.url() + "/v1/admin/reload"});
    const size_t nl = r.out.rfind('\n');
    if (r.exit_code != 0 || nl == std::string::npos) return {0, nullptr};
    return {std::stoi(r.out.substr(nl + 1)),
            nlohmann::json::parse(r.out.substr(0, nl), nullptr, false)};
  }

  // Replaces the file at once (as an operator's editor or `mv` does), so a
  // reload never reads it half written.
  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path + ".new", std::ios::trunc) << text;
    std::filesystem::rename(path + ".new", path);
  }

  static size_t Occurrences(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }
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
  constexpr uint64_t kRetentionMs = 8'000;
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

TEST_F(OpsTest, ReloadAddsAPeerRefusesBrokenFilesAndRemovesThePeer) {
  OpsNode& a = AddNode("a");
  OpsNode& b = AddNode("b");
  const std::string config = root_ + "/a.toml";
  const std::string trust = root_ + "/a.trust";
  const std::string good_prefix = "trust_file = \"" + trust + "\"\n";
  WriteFile(trust, "# nobody yet\n");
  WriteFile(config, good_prefix + "peers = []\n");
  Start(a, {"--config", config, "--maintenance-interval-ms", "100"});
  Start(b, {"--trust", a.public_key});
  EXPECT_TRUE(PeerEntry(a, b).is_null());

  // Added to the trust file and the peers, then SIGHUP: dialed and synced.
  WriteFile(trust, "# b\n" + b.public_key + "\n");
  WriteFile(config, good_prefix + "peers = [\"" + b.listen() + "\"]\n");
  a.process->Signal(SIGHUP);
  ASSERT_TRUE(WaitUntil(20'000, 100, [&] {
    nlohmann::json p = PeerEntry(a, b);
    return p.is_object() && p["connected"] == true;
  })) << PeerEntry(a, b).dump();
  Put(a, "k");
  WaitAcked(a, b);

  // A broken config file or trust file is refused with its line; the node
  // keeps running with what it had.
  WriteFile(config, good_prefix + "peers = 5\n");
  auto [status, body] = PostReload(a);
  EXPECT_EQ(status, 400) << body.dump();
  EXPECT_NE(body.value("error", "").find(config + " line 2"), std::string::npos) << body.dump();
  a.process->Signal(SIGHUP);
  EXPECT_TRUE(WaitUntil(10'000, 50, [&] {
    return Occurrences(a.process->Log(), "reload refused") == 2;  // the POST's, then SIGHUP's
  })) << a.process->Log();
  WriteFile(config, good_prefix + "peers = [\"" + b.listen() + "\"]\n");
  WriteFile(trust, b.public_key + "\nnot-a-key\n");
  std::tie(status, body) = PostReload(a);
  EXPECT_EQ(status, 400) << body.dump();
  EXPECT_NE(body.value("error", "").find(trust + " line 2"), std::string::npos) << body.dump();
  ASSERT_TRUE(a.process->running());
  nlohmann::json kept;
  EXPECT_TRUE(WaitUntil(5'000, 50, [&] {
    kept = PeerEntry(a, b);
    return kept.is_object() && kept["connected"] == true;
  })) << kept.dump();

  // A setting only a restart applies is named, the rest applied.
  WriteFile(trust, b.public_key + "\n");
  WriteFile(config, good_prefix + "peers = [\"" + b.listen() + "\"]\nwatch_retention_ms = 5\n");
  std::tie(status, body) = PostReload(a);
  EXPECT_EQ(status, 200) << body.dump();
  EXPECT_EQ(body["needs_restart"], nlohmann::json::array({"watch_retention_ms"})) << body.dump();

  // Removed from both: disconnected on both sides, and its cursor is gone.
  WriteFile(trust, "# nobody\n");
  WriteFile(config, good_prefix + "peers = []\n");
  std::tie(status, body) = PostReload(a);
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_EQ(body["trust_removed"], nlohmann::json::array({b.public_key})) << body.dump();
  EXPECT_EQ(body["peers_removed"], nlohmann::json::array({b.listen()})) << body.dump();
  EXPECT_TRUE(WaitUntil(10'000, 100, [&] { return PeerEntry(a, b).is_null(); }))
      << Status(a).dump();
  EXPECT_TRUE(WaitUntil(10'000, 100, [&] {
    nlohmann::json p = PeerEntry(b, a);
    return p.is_object() && p["connected"] == false;
  })) << PeerEntry(b, a).dump();
  // Past a few maintenance rounds it stays gone.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(PeerEntry(a, b).is_null()) << Status(a).dump();
}

TEST_F(OpsTest, JsonLogLinesCarryEventPeerAndFields) {
  OpsNode& a = AddNode("a");
  OpsNode& b = AddNode("b");
  Start(a, {"--trust", b.public_key, "--log-format", "json"});
  Put(a, "k");
  Start(b, {"--trust", a.public_key, "--peer", a.listen()});
  ASSERT_TRUE(WaitUntil(20'000, 100, [&] {
    return a.process->Log().find("\"sync_done\"") != std::string::npos;
  })) << a.process->Log();
  const std::string b_id = Status(b)["node_id"].get<std::string>();
  b.process->Signal(SIGTERM);
  ASSERT_EQ(b.process->Wait(20'000), 0);
  ASSERT_TRUE(WaitUntil(10'000, 50, [&] {
    return a.process->Log().find("peer_disconnected") != std::string::npos;
  })) << a.process->Log();

  std::map<std::string, nlohmann::json> by_event;
  std::istringstream lines(a.process->Log());
  std::string line;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
    for (const char* key : {"time", "level", "event", "msg"}) {
      EXPECT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << line;
    }
    EXPECT_TRUE(j.contains("peer") && (j["peer"].is_null() || j["peer"].is_string())) << line;
    EXPECT_TRUE(j.contains("fields") && j["fields"].is_object()) << line;
    by_event[j.value("event", "")] = j;
  }
  for (const char* event : {"peer_connected", "peer_disconnected", "sync_done"}) {
    ASSERT_TRUE(by_event.count(event)) << event << " missing in\n" << a.process->Log();
    EXPECT_EQ(by_event[event]["peer"], b_id) << by_event[event].dump();
  }
  EXPECT_TRUE(by_event["peer_connected"]["fields"]["address"].is_string());
  EXPECT_EQ(by_event["peer_connected"]["fields"]["public_key"], b.public_key);
  EXPECT_TRUE(by_event["peer_disconnected"]["fields"]["reason"].is_string());
  EXPECT_TRUE(by_event["sync_done"]["fields"]["seconds"].is_number());
  EXPECT_EQ(by_event["log"]["peer"], nullptr);  // a plain line: the node's start
}

TEST_F(OpsTest, BootstrapLagCountsOnlyWhatTheSourceLacks) {
  OpsNode& a = AddNode("a");
  OpsNode& b = AddNode("b");
  constexpr int kKeys = 100'000;
  {
    auto dir = DataDir::Open(a.dir, DataDirOptions{});
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    for (int first = 0; first < kKeys; first += 1000) {
      WriteBatch batch;
      for (int i = first; i < first + 1000; ++i) batch.Put("m", "key" + std::to_string(i), "v");
      ASSERT_TRUE((*dir)->replica().Write(batch).ok());
    }
  }
  Start(a, {"--trust", b.public_key});
  Start(b, {"--trust", a.public_key, "--peer", a.listen()});

  // b receives a's whole log; every record came from a, so a lacks nothing
  // of b's: its lag toward a stays small while its own log grows.
  uint64_t samples_during_sync = 0;
  std::string worst;
  const bool done = WaitUntil(120'000, 20, [&] {
    nlohmann::json s = Status(b);
    if (!s.is_object()) return false;
    nlohmann::json p;
    for (const auto& e : s["peers"]) {
      if (e["public_key"] == a.public_key) p = e;
    }
    if (!p.is_object()) return false;
    const uint64_t last = s["oplog"]["last_seq"].get<uint64_t>();
    const uint64_t lag = p["lag"].get<uint64_t>();
    if (s["keys"].get<uint64_t>() < kKeys) {
      if (last >= kKeys / 10) ++samples_during_sync;
      if (last >= kKeys / 10 && lag > last / 2) worst = s.dump();
      return false;
    }
    return lag == 0 && !p["sync_in_progress"].get<bool>();
  });
  ASSERT_TRUE(done) << Status(b).dump();
  EXPECT_TRUE(worst.empty()) << "lag counted a's own records: " << worst;
  EXPECT_GT(samples_during_sync, 0u) << "the bootstrap ended before a status showed it";
}

}  // namespace
}  // namespace tidemap
