// ServeNode and ServeClusterTest: the fixture the cluster tests share. A test
// adds nodes (a data dir made by `tidemap init`, its public key, two free
// ports), launches `tidemap serve` on them with the arguments it chooses and
// reads their status over HTTP. TearDown kills every process still running,
// prints the logs of a failed test and removes the temp dir. Needs
// TIDEMAP_BIN (the tidemap executable), which tidemap_exe_test defines.
#ifndef TIDEMAP_TESTS_CLUSTER_SERVE_FIXTURE_H_
#define TIDEMAP_TESTS_CLUSTER_SERVE_FIXTURE_H_

#include <signal.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/http_client.h>

namespace tidemap::testing {

// One tidemap node of a test cluster: its data dir, key, ports and process.
struct ServeNode {
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

class ServeClusterTest : public ::testing::Test {
 protected:
  // `tag` names the test's temp dir.
  explicit ServeClusterTest(std::string tag) : tag_(std::move(tag)) {}

  void SetUp() override { root_ = MakeTempDir(tag_); }

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

  RunResult Tidemap(const std::vector<std::string>& args, std::string_view input = {}) {
    return RunProgram(TIDEMAP_BIN, args, input);
  }

  // Creates a node's data dir and identity.
  ServeNode& AddNode(const std::string& name) {
    auto node = std::make_unique<ServeNode>();
    node->name = name;
    node->dir = root_ + "/" + name;
    RunResult r = Tidemap({"init", "--data", node->dir});
    EXPECT_EQ(r.exit_code, 0) << r;
    std::string out = r.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    node->public_key = out.substr(out.rfind('\n') + 1);
    node->port = FreeTcpPort();
    node->http_port = FreeTcpPort();
    ServeNode& ref = *node;
    nodes_[name] = std::move(node);
    return ref;
  }

  // Runs `tidemap ARGS` (a `serve` command line) as `node`'s process, its
  // output in a log file of its own per start; waits until its HTTP API answers.
  void Launch(ServeNode& node, const std::vector<std::string>& args) {
    ++node.starts;
    node.process = std::make_unique<ChildProcess>(
        TIDEMAP_BIN, args, root_ + "/" + node.name + "." + std::to_string(node.starts) + ".log");
    ASSERT_TRUE(node.process->started());
    const bool up = WaitUntil(20'000, 50, [&] {
      if (!node.process->running()) return true;
      return Tidemap({"status", "--http", node.http(), "--json"}).exit_code == 0;
    });
    ASSERT_TRUE(up && node.process->running()) << node.name << " did not come up:\n"
                                               << node.process->Log();
  }

  // HttpCall options for `node`'s HTTP API, from this process (the client's
  // default timeout).
  static HttpClientOptions Client(const ServeNode& node) {
    HttpClientOptions o;
    o.address = node.http();
    return o;
  }

  // The status document of `node` (what `status --json` prints), read with
  // GET /v1/status from this process rather than a process per poll; null
  // when it does not answer.
  nlohmann::json Status(const ServeNode& node) {
    HttpClientOptions client = Client(node);
    client.timeout_ms = 10'000;
    auto reply = HttpCall(client, "GET", "/v1/status");
    if (!reply.ok() || reply->status != 200) return nlohmann::json();
    return nlohmann::json::parse(reply->body, nullptr, false);
  }

  // peers[] entry of `peer` in `node`'s status (null when absent).
  nlohmann::json PeerEntry(const ServeNode& node, const ServeNode& peer) {
    nlohmann::json s = Status(node);
    if (!s.is_object()) return nullptr;
    for (const auto& p : s["peers"]) {
      if (p["public_key"].is_string() && p["public_key"] == peer.public_key) return p;
    }
    return nullptr;
  }

  std::string root_;
  std::map<std::string, std::unique_ptr<ServeNode>> nodes_;

 private:
  const std::string tag_;
};

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_CLUSTER_SERVE_FIXTURE_H_
