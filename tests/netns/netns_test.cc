// Proves the per-address cap of a node's pre-handshake slots with real,
// distinct source addresses, which loopback cannot give: three network
// namespaces joined by veth pairs, a server S (10.231.1.1 towards F,
// 10.231.2.1 towards P), a flooder F (10.231.1.2) and a peer P (10.231.2.2).
// S runs the real `tidemap serve` (through `ip netns exec`); F's idle
// sockets come from a thread of this test that joined F's namespace. S keeps
// silent connections for 20 s here, so only the slot rules decide: of F's 40
// idle sockets S keeps exactly handshakes_pending_per_address_max (8), the
// newest, and evicts the others; P, from another address, connects at once.
//
// Needs root (`ip netns`); skipped with a message otherwise. Every namespace
// and process it makes is named with the test's pid and removed at the end,
// failures included. Label `netns`.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

using testing::ChildProcess;
using testing::RunProgram;
using testing::RunResult;
using testing::WaitUntil;

constexpr size_t kPerAddressMax = 8;  // NodeOptions::handshakes_pending_per_address_max
constexpr size_t kFloodSockets = 40;
constexpr const char* kServerToFlooder = "10.231.1.1";
constexpr const char* kFlooder = "10.231.1.2";
constexpr const char* kServerToPeer = "10.231.2.1";
constexpr const char* kPeer = "10.231.2.2";
constexpr uint16_t kPeerPort = 7400;
constexpr const char* kHttp = "127.0.0.1:8400";  // inside S

std::string IpTool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "ip";
}

// Runs `f` on a thread that joined network namespace `ns` (sockets it opens
// live there and stay there); false when the namespace cannot be entered.
bool InNetns(const std::string& ns, const std::function<void()>& f) {
  bool entered = false;
  std::thread t([&] {
    const int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    entered = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    if (entered) f();
  });
  t.join();
  return entered;
}

// A blocking TCP connect to `host`:`port` from the calling thread's namespace.
int ConnectTo(const char* host, uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, host, &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True while the other side has not closed `fd`.
bool StillOpen(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return true;
  char byte = 0;
  const ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "needs root to create network namespaces (ip netns); CI runs it as root";
    }
    const std::string pid = std::to_string(getpid());
    server_ns_ = "tmS" + pid;
    flooder_ns_ = "tmF" + pid;
    peer_ns_ = "tmP" + pid;
    root_ = testing::MakeTempDir("tidemap-netns");
    for (const std::string& ns : {server_ns_, flooder_ns_, peer_ns_}) {
      const bool added = Ip({"netns", "add", ns});
      if (added) made_.push_back(ns);
      ASSERT_TRUE(added);
      ASSERT_TRUE(Ip({"-n", ns, "link", "set", "lo", "up"}));
    }
    ASSERT_TRUE(Link("sf", kServerToFlooder, flooder_ns_, kFlooder));
    ASSERT_TRUE(Link("sp", kServerToPeer, peer_ns_, kPeer));
  }

  void TearDown() override {
    for (auto* p : {&server_, &peer_}) {
      if (*p && HasFailure()) std::cerr << "----- log -----\n" << (*p)->Log() << "\n";
      p->reset();  // SIGKILL if still running, before its namespace goes
    }
    for (int fd : flood_) close(fd);
    for (const std::string& ns : made_) Ip({"netns", "del", ns});
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }

  // Runs `ip ARGS`; a test failure with its output when it fails.
  bool Ip(const std::vector<std::string>& args) {
    const RunResult r = RunProgram(IpTool(), args, {}, {}, 10'000);
    EXPECT_EQ(r.exit_code, 0) << "ip failed: " << r;
    return r.exit_code == 0;
  }

  // A veth pair: `name` in S with `server_ip`/24, "e0" in `ns` with `ip`/24.
  bool Link(const std::string& name, const char* server_ip, const std::string& ns, const char* ip) {
    return Ip({"-n", server_ns_, "link", "add", name, "type", "veth", "peer", "name", "e0", "netns",
               ns}) &&
           Ip({"-n", server_ns_, "addr", "add", std::string(server_ip) + "/24", "dev", name}) &&
           Ip({"-n", server_ns_, "link", "set", name, "up"}) &&
           Ip({"-n", ns, "addr", "add", std::string(ip) + "/24", "dev", "e0"}) &&
           Ip({"-n", ns, "link", "set", "e0", "up"});
  }

  // `tidemap init --data DIR`; returns the public key ("" on failure).
  std::string Init(const std::string& dir) {
    const RunResult r = RunProgram(TIDEMAP_BIN, {"init", "--data", dir});
    EXPECT_EQ(r.exit_code, 0) << r;
    std::string out = r.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out.substr(out.rfind('\n') + 1);
  }

  std::unique_ptr<ChildProcess> Serve(const std::string& ns, std::vector<std::string> args,
                                      const std::string& log) {
    std::vector<std::string> all = {"netns", "exec", ns, TIDEMAP_BIN, "serve"};
    all.insert(all.end(), args.begin(), args.end());
    return std::make_unique<ChildProcess>(IpTool(), all, log);
  }

  // GET `target` from S's HTTP API; "" when it does not answer 200.
  std::string ServerGet(const std::string& target) {
    std::string body;
    InNetns(server_ns_, [&] {
      HttpClientOptions o;
      o.address = kHttp;
      o.timeout_ms = 2'000;
      auto reply = HttpCall(o, "GET", target);
      if (reply.ok() && reply->status == 200) body = reply->body;
    });
    return body;
  }

  bool ServerSeesPeer(const std::string& key) {
    const std::string body = ServerGet("/v1/status");
    if (body.empty()) return false;
    const nlohmann::json status = nlohmann::json::parse(body);
    for (const auto& p : status["peers"]) {
      if (p.value("public_key", "") == key && p.value("connected", false)) return true;
    }
    return false;
  }

  std::string server_ns_, flooder_ns_, peer_ns_, root_;
  std::vector<std::string> made_;  // namespaces to delete
  std::vector<int> flood_;         // sockets opened in F
  std::unique_ptr<ChildProcess> server_, peer_;
};

TEST_F(NetnsTest, OneAddressHoldsAtMostItsShareAndAnotherGetsIn) {
  const std::string server_key = Init(root_ + "/s");
  const std::string peer_key = Init(root_ + "/p");
  ASSERT_FALSE(server_key.empty() || peer_key.empty());
  // Silent connections live 20 s: only the slot rules decide who stays.
  const std::string config = root_ + "/s.toml";
  std::ofstream(config) << "first_message_timeout_ms = 20000\nhandshake_timeout_ms = 30000\n";
  server_ = Serve(server_ns_,
                  {"--data", root_ + "/s", "--listen", "0.0.0.0:" + std::to_string(kPeerPort),
                   "--http", kHttp, "--trust", peer_key, "--config", config},
                  root_ + "/s.log");
  ASSERT_TRUE(WaitUntil(20'000, 50, [&] { return !ServerGet("/v1/status").empty(); }))
      << "S never served";

  ASSERT_TRUE(InNetns(flooder_ns_, [&] {
    for (size_t i = 0; i < kFloodSockets; ++i) {
      const int fd = ConnectTo(kServerToFlooder, kPeerPort);
      if (fd >= 0) flood_.push_back(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }));
  ASSERT_EQ(flood_.size(), kFloodSockets);
  // S closes every flood socket beyond F's share; the newest stay.
  size_t open = 0;
  const auto count_open = [&] {
    open = 0;
    for (int fd : flood_) open += StillOpen(fd) ? 1 : 0;
    return open <= kPerAddressMax;
  };
  EXPECT_TRUE(WaitUntil(10'000, 20, count_open)) << open << " flood sockets still open";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // and no fewer, later
  count_open();
  EXPECT_EQ(open, kPerAddressMax);
  for (size_t i = kFloodSockets - kPerAddressMax; i < kFloodSockets; ++i) {
    EXPECT_TRUE(StillOpen(flood_[i])) << "flood socket " << i << " (one of the newest)";
  }

  // P, from another address, gets a slot of its own while F holds its share.
  peer_ =
      Serve(peer_ns_,
            {"--data", root_ + "/p", "--peer",
             std::string(kServerToPeer) + ":" + std::to_string(kPeerPort), "--trust", server_key},
            root_ + "/p.log");
  EXPECT_TRUE(WaitUntil(10'000, 50, [&] { return ServerSeesPeer(peer_key); }))
      << "P (" << peer_key << ") never connected to S; S's status: " << ServerGet("/v1/status");
  count_open();
  EXPECT_EQ(open, kPerAddressMax) << "P's connection took a flood socket's slot";
  const std::string metrics = ServerGet("/metrics");
  const std::string evicted = "tidemap_refused_connections_total{reason=\"evicted\"} " +
                              std::to_string(kFloodSockets - kPerAddressMax) + "\n";
  EXPECT_NE(metrics.find(evicted), std::string::npos) << metrics;
}

}  // namespace
}  // namespace tidemap
