// net::Node keeps its event loop free of disk work. Three in-process nodes on
// loopback: B and C dial A, whose replica writes through a FaultEnv that
// stalls the next fsync of its write-ahead log for kStall while A applies
// B's streamed write. During that stall A must keep serving everyone else:
// C keeps receiving A's frames (keepalives every 100 ms) and A's HTTP API
// answers a GET, each within kBound. With the sync session run on the loop,
// A's loop sleeps in the fsync and C hears nothing for the whole stall. The
// bound is generous for a noisy shared machine: a tenth of the loop's
// keepalive rate would already pass, a blocked loop cannot.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "net/node.h"
#include "net/trust.h"
#include "replica/replica.h"
#include "server/http.h"
#include "server/http_client.h"
#include "storage/identity.h"
#include "tests/support/fault_env.h"
#include "tests/support/test_util.h"

namespace tidemap {
namespace {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kStall = std::chrono::seconds(5);  // the stalled fsync
constexpr auto kBound = std::chrono::seconds(1);  // what others may wait meanwhile
constexpr auto kSetupTimeout = std::chrono::seconds(20);

template <typename Pred>
bool WaitFor(Steady::duration timeout, Pred done) {
  const auto deadline = Steady::now() + timeout;
  while (!done()) {
    if (Steady::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

// One node: identity, a memory-backed replica behind a FaultEnv, the node.
// Members go in reverse order: the node stops before what it borrows.
struct Peer {
  std::string dir;
  std::optional<Identity> identity;
  SystemClock clock;
  std::unique_ptr<leveldb::Env> mem{leveldb::NewMemEnv(leveldb::Env::Default())};
  testing::FaultEnv env{mem.get()};
  std::unique_ptr<Replica> replica;
  net::TrustList trust;
  std::unique_ptr<net::Node> node;

  void Open(const std::string& path, Durability durability) {
    dir = path;
    auto id = Identity::Create(dir);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    identity.emplace(std::move(*id));
    ReplicaOptions o;
    o.path = dir + "/db";
    o.env = &env;
    o.clock = &clock;
    o.node_id = identity->node_id();
    o.durability = durability;
    auto r = Replica::Open(std::move(o));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replica = std::move(*r);
  }

  void Start(std::vector<std::string> peers) {
    net::NodeOptions o;
    o.listen = "127.0.0.1:0";
    o.peers = std::move(peers);
    o.tick_interval_ms = 20;
    o.keepalive_interval_ms = 100;
    auto quiet = std::make_shared<spdlog::logger>("net_node_test",
                                                  std::make_shared<spdlog::sinks::null_sink_mt>());
    auto n = net::Node::Start(std::move(o), replica.get(), &*identity, &trust, &clock, quiet);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    node = std::move(*n);
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(node->listen_port()); }

  // This node's view of `other`, or nullopt when it does not know it.
  std::optional<net::PeerStatus> View(const Peer& other) const {
    for (const net::PeerStatus& p : node->Snapshot().peers) {
      if (p.node_id == other.identity->node_id()) return p;
    }
    return std::nullopt;
  }
  bool Sees(const Peer& other) const {
    auto p = View(other);
    return p.has_value() && p->connected;
  }
};

TEST(NetNodeTest, StalledFsyncDelaysNoOtherPeerNorHttp) {
  const std::string root = testing::MakeTempDir("tidemap-net-node-test");
  {
    Peer a, b, c;
    a.Open(root + "/a", Durability::kSync);
    b.Open(root + "/b", Durability::kRelaxed);
    c.Open(root + "/c", Durability::kRelaxed);
    for (Peer* p : {&a, &b, &c}) {
      for (Peer* q : {&a, &b, &c}) p->trust.Add(q->identity->public_key());
    }
    // Armed once: the first WAL fsync after arming sleeps kStall.
    std::atomic<bool> armed{false}, stalling{false};
    a.env.SetSyncHook([&](const std::string& fname) {
      if (fname.find(".log") == std::string::npos || !armed.exchange(false)) return;
      stalling = true;
      std::this_thread::sleep_for(kStall);
      stalling = false;
    });
    a.Start({});
    b.Start({a.address()});
    c.Start({a.address()});
    ASSERT_TRUE(WaitFor(kSetupTimeout, [&] { return a.Sees(b) && a.Sees(c) && c.Sees(a); }));
    HttpOptions http;
    http.listen = "127.0.0.1:0";
    auto server = HttpServer::Start(
        http, HttpContext{a.replica.get(), "a", [&a] { return a.node->Snapshot(); }});
    ASSERT_TRUE(server.ok()) << server.status().ToString();

    armed = true;
    ASSERT_TRUE(b.replica->Put("m", "k", "from b").ok());
    ASSERT_TRUE(WaitFor(kSetupTimeout, [&] { return stalling.load(); }))
        << "A never applied B's write";

    // During the stall: C hears from A, and A's HTTP API answers.
    const auto stall_seen = Steady::now();
    const uint64_t frames_before = c.View(a)->frames_in;
    const bool c_heard = WaitFor(kBound, [&] { return c.View(a)->frames_in > frames_before; });
    const auto c_waited = Steady::now() - stall_seen;
    HttpClientOptions client;
    client.address = "127.0.0.1:" + std::to_string((*server)->port());
    client.timeout_ms = 10'000;
    const auto get_sent = Steady::now();
    auto reply = HttpCall(client, "GET", "/v1/maps/m/keys/absent");
    const auto get_waited = Steady::now() - get_sent;
    const bool still_stalling = stalling.load();

    EXPECT_TRUE(c_heard) << "C received no frame from A within "
                         << std::chrono::duration_cast<milliseconds>(c_waited).count()
                         << " ms of A's stalled fsync";
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_EQ(reply->status, 404);
    EXPECT_LT(get_waited, kBound) << "GET took "
                                  << std::chrono::duration_cast<milliseconds>(get_waited).count()
                                  << " ms during A's stalled fsync";
    EXPECT_TRUE(still_stalling) << "the checks ran after the stall: they prove nothing";

    // Once the stall ends, B's write lands on A and reaches C through it.
    EXPECT_TRUE(WaitFor(kSetupTimeout, [&] {
      auto got = c.replica->Get("m", "k");
      return got.ok() && got->value == "from b";
    }));
    (*server)->Stop();
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

}  // namespace
}  // namespace tidemap
