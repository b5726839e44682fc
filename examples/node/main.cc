// node: two networked tidemap nodes in one process, syncing over TCP on 127.0.0.1.
//
// Each node is what `tidemap serve` runs without its HTTP API: a data dir (an identity
// key and a LevelDB database), a replica on it, and a net::Node that listens, dials its
// peers, authenticates them against a trust list and keeps their replicas in sync. Node
// "a" listens on a free port; node "b" dials it. A write on a reaches b, and a write on b
// reaches a, over the one connection b opened. Exits 0 when both writes arrived within
// 10 s, 1 otherwise. Usage: node [DIR] (default: a fresh temporary dir, removed at exit).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <thread>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/net/node.h>
#include <tidemap/net/trust.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/identity.h>

namespace {

struct Side {
  tidemap::Identity identity;
  std::unique_ptr<tidemap::Replica> replica;
  std::unique_ptr<tidemap::net::Node> node;  // declared last: stopped first
};

int Fail(const char* what, const tidemap::Status& status) {
  std::fprintf(stderr, "node: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

// Creates the data dir's identity and opens its replica.
tidemap::Result<Side> Open(const std::string& dir, tidemap::Clock* clock) {
  TIDEMAP_ASSIGN_OR_RETURN(tidemap::Identity identity, tidemap::Identity::Create(dir));
  tidemap::ReplicaOptions options;
  options.path = dir + "/db";
  options.clock = clock;
  options.node_id = identity.node_id();
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<tidemap::Replica> replica,
                           tidemap::Replica::Open(std::move(options)));
  return Side{std::move(identity), std::move(replica), nullptr};
}

// Polls `replica` until `key` of map "users" holds `value`, for up to 10 s.
bool Arrives(tidemap::Replica& replica, const std::string& key, const std::string& value) {
  for (int i = 0; i < 1000; ++i) {
    auto got = replica.Get("users", key);
    if (got.ok() && got->value == value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int Run(const std::string& dir) {
  tidemap::SystemClock clock;  // outlives both nodes and replicas
  auto a = Open(dir + "/a", &clock);
  if (!a.ok()) return Fail("open a", a.status());
  auto b = Open(dir + "/b", &clock);
  if (!b.ok()) return Fail("open b", b.status());

  tidemap::net::TrustList trust;  // both keys: each node accepts the other
  trust.Add(a->identity.public_key());
  trust.Add(b->identity.public_key());

  tidemap::net::NodeOptions listen;
  listen.listen = "127.0.0.1:0";  // port 0: any free port
  auto node_a = tidemap::net::Node::Start(listen, a->replica.get(), &a->identity, &trust, &clock,
                                          /*log=*/nullptr);
  if (!node_a.ok()) return Fail("start a", node_a.status());
  a->node = std::move(*node_a);
  tidemap::net::NodeOptions dial;
  dial.peers = {"127.0.0.1:" + std::to_string(a->node->listen_port())};
  auto node_b = tidemap::net::Node::Start(dial, b->replica.get(), &b->identity, &trust, &clock,
                                          /*log=*/nullptr);
  if (!node_b.ok()) return Fail("start b", node_b.status());
  b->node = std::move(*node_b);

  auto put = a->replica->Put("users", "alice", R"({"name":"Alice"})");
  if (!put.ok()) return Fail("put on a", put.status());
  put = b->replica->Put("users", "bob", R"({"name":"Bob"})");
  if (!put.ok()) return Fail("put on b", put.status());
  if (!Arrives(*b->replica, "alice", R"({"name":"Alice"})") ||
      !Arrives(*a->replica, "bob", R"({"name":"Bob"})")) {
    std::fprintf(stderr, "node: the writes did not arrive within 10 s\n");
    return 1;
  }
  std::printf("a %s\nb %s\nconverged\n", a->replica->MerkleRoot().ToHex().c_str(),
              b->replica->MerkleRoot().ToHex().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
  } else {
    dir = (std::filesystem::temp_directory_path() / "tidemap-node-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
  }
  const int rc = Run(dir);
  if (argc <= 1) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  return rc;
}
