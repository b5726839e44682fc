// Proves that real `tidemap serve` processes on 127.0.0.1 replicate: full
// mesh and chain topologies converge (equal Merkle roots and equal scans), a
// node killed with SIGKILL loses no acknowledged write, a node the others
// pruned past is repaired by tree diff, strangers are refused and learn
// nothing, malformed and replayed connections close only themselves, and a
// peer whose clock is too far ahead is refused (in the log and in status)
// until it is fixed. Every daemon runs with free ports in its own temp dir;
// every wait is bounded; the fixture stops every process it started.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/serve_fixture.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/base/crypto.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/trust.h>
#include <tidemap/server/http_client.h>
#include <tidemap/storage/identity.h>

namespace tidemap {
namespace {

using testing::ChildProcess;
using testing::RunProgram;
using testing::RunResult;
using testing::WaitUntil;

constexpr int kConvergeTimeoutMs = 60'000;

using Node = testing::ServeNode;

class ClusterTest : public testing::ServeClusterTest {
 protected:
  ClusterTest() : ServeClusterTest("cluster") {}

  // Starts `node` serving, dialing `peers`, trusting `trusted`; waits until
  // its HTTP API answers.
  void Start(Node& node, const std::vector<Node*>& peers, const std::vector<Node*>& trusted,
             std::vector<std::string> extra = {}, bool listen = true) {
    std::vector<std::string> args = {"serve",     "--data",      node.dir, "--http",
                                     node.http(), "--log-level", "debug",  "--diff-interval-ms",
                                     "2000"};
    if (listen) {
      args.push_back("--listen");
      args.push_back(node.listen());
    }
    for (Node* p : peers) {
      args.push_back("--peer");
      args.push_back(p->listen());
    }
    for (Node* t : trusted) {
      args.push_back("--trust");
      args.push_back(t->public_key);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    Launch(node, args);
  }

  // SIGTERM and a clean exit.
  void Stop(Node& node) {
    node.process->Signal(SIGTERM);
    EXPECT_EQ(node.process->Wait(20'000), 0) << node.name << ":\n" << node.process->Log();
  }

  std::string Root(const Node& node) {
    nlohmann::json s = Status(node);
    return s.is_object() && s.contains("merkle_root") ? s["merkle_root"].get<std::string>() : "";
  }

  // The whole scan of `map` as JSON items (without the page's `next`).
  std::string Scan(const Node& node, const std::string& map) {
    RunResult r = Tidemap({"scan", "--http", node.http(), map, "--json"});
    if (r.exit_code != 0) return "error: " + r.err;
    nlohmann::json page = nlohmann::json::parse(r.out, nullptr, false);
    return page.is_object() ? page["items"].dump() : "bad json";
  }

  int Put(const Node& node, const std::string& map, const std::string& key,
          const std::string& value) {
    return Tidemap({"put", "--http", node.http(), map, key, value}).exit_code;
  }

  // Waits until every node has the same Merkle root and the same scan of
  // each map in `maps`.
  void ExpectConverged(const std::vector<Node*>& nodes, const std::vector<std::string>& maps,
                       int timeout_ms = kConvergeTimeoutMs) {
    std::string last;
    const bool converged = WaitUntil(timeout_ms, 100, [&] {
      std::string first_root = Root(*nodes[0]);
      last = nodes[0]->name + "=" + first_root;
      bool same = !first_root.empty();
      for (size_t i = 1; i < nodes.size(); ++i) {
        const std::string r = Root(*nodes[i]);
        last += " " + nodes[i]->name + "=" + r;
        same = same && r == first_root;
      }
      return same;
    });
    ASSERT_TRUE(converged) << "roots never converged: " << last;
    for (const std::string& map : maps) {
      const std::string first = Scan(*nodes[0], map);
      for (size_t i = 1; i < nodes.size(); ++i) {
        EXPECT_EQ(Scan(*nodes[i], map), first) << nodes[i]->name << " map " << map;
      }
    }
  }
};

TEST_F(ClusterTest, FullMeshOfThreeConverges) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Node& c = AddNode("c");
  Start(a, {}, {&b, &c});
  Start(b, {&a}, {&a, &c});
  Start(c, {&a, &b}, {&a, &b});
  for (Node* n : {&a, &b, &c}) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_EQ(Put(*n, "m", n->name + std::to_string(i), "v" + std::to_string(i)), 0);
    }
  }
  // The same key written on every node: one LWW winner everywhere.
  for (Node* n : {&a, &b, &c}) ASSERT_EQ(Put(*n, "m", "shared", "from " + n->name), 0);
  ASSERT_EQ(Tidemap({"del", "--http", b.http(), "m", "a3"}).exit_code, 0);
  ExpectConverged({&a, &b, &c}, {"m"});
  EXPECT_EQ(Tidemap({"get", "--http", c.http(), "m", "a3"}).exit_code, 1);
  const nlohmann::json st = Status(a);
  EXPECT_EQ(st["keys"], 60) << st.dump();
  EXPECT_TRUE(PeerEntry(a, b)["connected"].get<bool>());
  EXPECT_TRUE(PeerEntry(a, c)["connected"].get<bool>());
  // The human status fits a terminal: every line under 100 columns, a peer's
  // address on its own line.
  const RunResult human = Tidemap({"status", "--http", c.http()});
  ASSERT_EQ(human.exit_code, 0) << human;
  std::istringstream text(human.out);
  int peer_lines = 0, address_lines = 0;
  for (std::string line; std::getline(text, line);) {
    EXPECT_LT(line.size(), 100u) << line;
    peer_lines +=
        line.rfind("peer        ", 0) == 0 && line.find(" connected  acked ") != line.npos;
    address_lines += line.rfind("            at 127.0.0.1:", 0) == 0;
  }
  EXPECT_EQ(peer_lines, 2) << human.out;
  EXPECT_EQ(address_lines, 2) << human.out;

  // A live node's metrics, with real peers behind them, pass promtool.
  const HttpClientOptions client = Client(a);
  Result<HttpReply> metrics = HttpCall(client, "GET", "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
  ASSERT_EQ(metrics->status, 200);
  const std::string& m = metrics->body;
  const std::string peer_b = "{peer=\"" + Status(b)["node_id"].get<std::string>() + "\"}";
  const std::vector<std::string> lines = {"tidemap_peer_connected" + peer_b + " 1\n",
                                          "tidemap_peer_lag_records" + peer_b + " 0\n",
                                          "tidemap_writes_total 21\n", "tidemap_keys 60\n"};
  for (const std::string& line : lines) {
    EXPECT_NE(m.find(line), std::string::npos) << "missing: " << line << "\n" << m;
  }
  EXPECT_NE(m.find("tidemap_peer_received_bytes_total" + peer_b), std::string::npos) << m;
  if (!testing::ExpectPromtoolPasses(m)) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  }
}

TEST_F(ClusterTest, ChainConvergesAndADialOutOnlyNodeSyncsBothWays) {
  // a <- b -> c: b dials both; c does not listen at all (as behind NAT) and
  // dials b. a and c do not know each other: changes flow through b.
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Node& c = AddNode("c");
  Start(a, {}, {&b});
  Start(b, {&a}, {&a, &c});
  Start(c, {&b}, {&b}, {}, /*listen=*/false);
  ASSERT_EQ(Put(a, "m", "from-a", "1"), 0);
  ASSERT_EQ(Put(c, "m", "from-c", "2"), 0);
  ASSERT_EQ(Put(b, "m", "from-b", "3"), 0);
  ExpectConverged({&a, &b, &c}, {"m"});
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "from-c"}).out, "2");
  EXPECT_EQ(Tidemap({"get", "--http", c.http(), "m", "from-a"}).out, "1");
}

TEST_F(ClusterTest, NodeKilledDuringWritesLosesNoAcknowledgedWrite) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Start(a, {}, {&b});
  Start(b, {&a}, {&a});
  // Write to b until it is killed; remember what it acknowledged. Over HTTP
  // from this process, so that many writes are in flight (a CLI process per
  // write is slow to start under the sanitizers).
  std::vector<std::string> acked;  // the writer's until it is joined
  std::atomic<size_t> acked_count{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    HttpClientOptions client = Client(b);
    client.timeout_ms = 5'000;
    for (int i = 0; i < 2000 && !stop.load(); ++i) {
      const std::string key = "k" + std::to_string(i);
      auto reply = HttpCall(client, "PUT", "/v1/maps/m/keys/" + key, "value " + key);
      if (reply.ok() && reply->status == 200) {
        acked.push_back(key);
        acked_count.store(acked.size());
      }
    }
  });
  ASSERT_TRUE(WaitUntil(30'000, 10, [&] { return acked_count.load() >= 40 || stop.load(); }));
  b.process->Signal(SIGKILL);
  b.process->Wait(10'000);
  stop = true;
  writer.join();
  ASSERT_GE(acked.size(), 40u);
  // Writes while b is down, then b comes back over the same data dir.
  ASSERT_EQ(Put(a, "m", "while-down", "x"), 0);
  Start(b, {&a}, {&a});
  ExpectConverged({&a, &b}, {"m"});
  for (const std::string& key : acked) {
    auto reply = HttpCall(Client(a), "GET", "/v1/maps/m/keys/" + key);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_EQ(reply->status, 200) << "acknowledged write " << key << " lost: " << reply->body;
    EXPECT_EQ(reply->body, "value " + key);
  }
  EXPECT_EQ(Tidemap({"get", "--http", b.http(), "m", "while-down"}).out, "x");
}

// A node whose LevelDB log lost its tail after it synced (the disk, a bad
// copy): its peer holds the lost writes and says so in its hello; the node
// logs that it lost writes, counts it, and gets every one of them back.
TEST_F(ClusterTest, NodeWhoseLogLostItsTailIsToldByItsPeerAndGetsItsWritesBack) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Start(a, {}, {&b});
  Start(b, {&a}, {&a});
  const HttpClientOptions client = Client(a);
  constexpr int kKeys = 400;
  for (int i = 0; i < kKeys; ++i) {
    auto reply = HttpCall(client, "PUT", "/v1/maps/m/keys/k" + std::to_string(i), "v");
    ASSERT_TRUE(reply.ok() && reply->status == 200) << i;
  }
  ExpectConverged({&a, &b}, {"m"});
  Stop(a);
  // Cut the tail of the newest write-ahead log, shorter and shorter until
  // writes are gone (its last part may be only the checkpoint of the close).
  std::filesystem::path newest;
  for (const auto& e : std::filesystem::directory_iterator(a.dir + "/db")) {
    if (e.path().extension() == ".log" && (newest.empty() || e.path() > newest)) newest = e.path();
  }
  ASSERT_FALSE(newest.empty());
  const uintmax_t size = std::filesystem::file_size(newest);
  uint64_t keys_after_cut = kKeys;
  for (uintmax_t part = 2; part <= 16 && keys_after_cut == kKeys; part *= 2) {
    std::filesystem::resize_file(newest, size / part);
    // status --data opens the dir read-only: the cut stays as it is.
    keys_after_cut =
        nlohmann::json::parse(Tidemap({"status", "--data", a.dir, "--json"}).out)["keys"];
  }
  ASSERT_LT(keys_after_cut, static_cast<uint64_t>(kKeys)) << "the cut lost nothing";

  Start(a, {}, {&b});
  ASSERT_TRUE(WaitUntil(30'000, 100, [&] {
    return a.process->Log().find("this node lost writes that peer") != std::string::npos;
  })) << a.process->Log();
  ExpectConverged({&a, &b}, {"m"});
  EXPECT_EQ(Status(a)["keys"], kKeys);
  auto metrics = HttpCall(client, "GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("\ntidemap_lost_writes_detected_total 1\n"), std::string::npos)
      << metrics->body;
}

TEST_F(ClusterTest, PeerPrunedPastIsRepairedByTreeDiff) {
  const std::vector<std::string> small_log = {"--oplog-retention-rows", "20",
                                              "--maintenance-interval-ms", "200"};
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Start(a, {}, {&b}, small_log);
  Start(b, {&a}, {&a}, small_log);
  ASSERT_EQ(Put(a, "m", "before", "1"), 0);
  ExpectConverged({&a, &b}, {"m"});
  Stop(b);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(Put(a, "m", "k" + std::to_string(i), "v"), 0);
  // a pruned its log past b's cursor: b cannot be caught up from the stream.
  uint64_t b_cursor = 0;
  const bool pruned = WaitUntil(20'000, 100, [&] {
    nlohmann::json s = Status(a);
    nlohmann::json p = PeerEntry(a, b);
    if (!s.is_object() || p.is_null()) return false;
    b_cursor = p["acked_seq"].get<uint64_t>();
    return s["oplog"]["first_seq"].get<uint64_t>() > b_cursor + 1;
  });
  ASSERT_TRUE(pruned) << Status(a).dump();
  Start(b, {&a}, {&a}, small_log);
  ExpectConverged({&a, &b}, {"m"});
  EXPECT_EQ(Status(b)["keys"], 101);
}

TEST_F(ClusterTest, UntrustedNodeIsRefusedAndLearnsNothing) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  Node& x = AddNode("x");
  Start(a, {}, {&b});
  Start(b, {&a}, {&a});
  ASSERT_EQ(Put(a, "m", "secret", "s"), 0);
  // x trusts a and dials it; a does not trust x.
  Start(x, {&a}, {&a});
  ASSERT_TRUE(WaitUntil(20'000, 100, [&] {
    return a.process->Log().find("untrusted peer " + x.public_key) != std::string::npos;
  })) << a.process->Log();
  ExpectConverged({&a, &b}, {"m"});
  const nlohmann::json sx = Status(x);
  EXPECT_EQ(sx["keys"], 0) << sx.dump();
  EXPECT_EQ(Tidemap({"get", "--http", x.http(), "m", "secret"}).exit_code, 1);
  EXPECT_FALSE(PeerEntry(x, a)["connected"].get<bool>());
  // The refusal reached x too, and x says so in its status (on the address it
  // dials: a refused x before proving who it is).
  EXPECT_NE(Status(x)["peers"].dump().find("refused by peer: untrusted"), std::string::npos)
      << Status(x).dump();
}

// A raw TCP client for the malformed-input cases.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = testing::ConnectLoopback(port);
    connected_ = fd_ >= 0;
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { close(fd_); }
  bool connected() const { return connected_; }
  void Send(std::string_view bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // Reads what arrives until the peer closes (true) or 10 s pass (false).
  bool ReadUntilClosed(std::string* got = nullptr) {
    char buf[4096];
    while (true) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      if (got != nullptr) got->append(buf, static_cast<size_t>(n));
    }
  }
  // Reads what is available within `ms`.
  std::string ReadFor(int ms) {
    std::string got;
    // tv_usec must stay below 1,000,000 (setsockopt refuses it otherwise).
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) got.assign(buf, static_cast<size_t>(n));
    timeval back{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &back, sizeof(back));
    return got;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// Runs our side of a handshake as initiator over `client` with identity `me`;
// records the bytes we sent. Returns the channel, or null when refused.
std::unique_ptr<net::SecureChannel> HandshakeAs(RawClient* client, const Identity& me,
                                                const net::TrustList* trust, std::string* sent) {
  net::HandshakeConfig config{std::string(me.secret_key()), me.public_key(), trust};
  net::Handshake hs(net::Handshake::Role::kInitiator, std::move(config));
  std::string out;
  if (!hs.Start(&out).ok()) return nullptr;
  client->Send(out);
  sent->append(out);
  std::string pending;
  for (int round = 0; round < 16 && !hs.done(); ++round) {
    std::string got = client->ReadFor(5000);
    if (got.empty()) return nullptr;
    pending += got;
    out.clear();
    size_t consumed = 0;
    Status s = hs.Feed(pending, &out, &consumed);
    pending.erase(0, consumed);
    client->Send(out);
    sent->append(out);
    if (!s.ok()) return nullptr;
  }
  if (!hs.done()) return nullptr;
  auto channel = hs.TakeChannel(size_t{1} << 20);
  if (!channel.ok()) return nullptr;
  if (!pending.empty() && !(*channel)->Feed(pending).ok()) return nullptr;
  return std::move(*channel);
}

TEST_F(ClusterTest, MalformedAndReplayedConnectionsCloseOnlyThemselves) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  // t is the test itself, holding a key a trusts.
  const std::string t_dir = root_ + "/t";
  auto t = Identity::Create(t_dir);
  ASSERT_TRUE(t.ok()) << t.status().message();
  net::TrustList t_trust;
  Start(a, {}, {&b}, {"--trust", t->public_key_text()});
  Start(b, {&a}, {&a});
  auto a_key = crypto::PublicKeyFromText(a.public_key);
  ASSERT_TRUE(a_key.ok());
  t_trust.Add(*a_key);

  {  // random bytes
    RawClient c(a.port);
    ASSERT_TRUE(c.connected());
    std::string junk(3000, '\0');
    crypto::RandomBytes(junk.data(), junk.size());
    c.Send(junk);
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {  // a full hello header (net/handshake.h: "tmhs" type:u8 length:u32be) whose
     // length is oversized: refused from the header alone, at once, not after
     // the handshake timeout (5 s)
    RawClient c(a.port);
    ASSERT_TRUE(c.connected());
    const auto sent_at = std::chrono::steady_clock::now();
    c.Send(std::string("tmhs\x01\xff\xff\xff\xff", 9));
    std::string got;
    EXPECT_TRUE(c.ReadUntilClosed(&got));
    const auto closed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - sent_at)
                               .count();
    // Well under the 5 s a wait for the timeout would take, with room for a
    // loaded machine.
    EXPECT_LT(closed_ms, 4000) << "closed after " << closed_ms << " ms";
    // The refuse message (type 5) tells the peer why before the close.
    EXPECT_EQ(got.substr(0, 5), std::string("tmhs\x05", 5));
    EXPECT_NE(a.process->Log().find("exceeds handshake_bytes_max"), std::string::npos)
        << a.process->Log();
  }
  std::string recorded;
  {  // a real handshake, then a tampered frame
    RawClient c(a.port);
    auto channel = HandshakeAs(&c, *t, &t_trust, &recorded);
    ASSERT_NE(channel, nullptr) << a.process->Log();
    std::string frame;
    ASSERT_TRUE(channel->Seal("not a sync message but sealed", &frame).ok());
    frame[frame.size() / 2] = static_cast<char>(frame[frame.size() / 2] ^ 0x10);
    c.Send(frame);
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {  // the recorded handshake, replayed
    RawClient c(a.port);
    c.Send(recorded);
    std::string got;
    EXPECT_TRUE(c.ReadUntilClosed(&got));
  }
  {  // a truncated frame after a real handshake, then the stream ends
    RawClient c(a.port);
    std::string sent;
    auto channel = HandshakeAs(&c, *t, &t_trust, &sent);
    ASSERT_NE(channel, nullptr);
    std::string frame;
    ASSERT_TRUE(channel->Seal("half of me", &frame).ok());
    c.Send(frame.substr(0, frame.size() / 2));
    c.ShutdownWrite();
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  // a kept serving b all along.
  ASSERT_EQ(Put(b, "m", "after", "ok"), 0);
  ExpectConverged({&a, &b}, {"m"});
  EXPECT_TRUE(a.process->running());
  EXPECT_TRUE(PeerEntry(a, b)["connected"].get<bool>());
  const std::string log = a.process->Log();
  EXPECT_NE(log.find("refused"), std::string::npos) << log;
}

TEST_F(ClusterTest, PeerClockTooFarAheadIsRefusedThenConvergesOnceFixed) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  const std::vector<std::string> offset_limit = {"--max-clock-offset-ms", "1000"};
  Start(a, {}, {&b}, offset_limit);
  // b's clock runs 2 s ahead: twice the limit.
  std::vector<std::string> ahead = offset_limit;
  ahead.insert(ahead.end(), {"--clock-offset-ms", "2000"});
  Start(b, {&a}, {&a}, ahead);
  ASSERT_EQ(Put(b, "m", "from-the-future", "1"), 0);
  ASSERT_TRUE(WaitUntil(20'000, 100, [&] {
    nlohmann::json p = PeerEntry(a, b);
    return p.is_object() && p["last_error"].is_string() &&
           p["last_error"].get<std::string>().find("ahead") != std::string::npos;
  })) << Status(a).dump();
  EXPECT_NE(a.process->Log().find("ahead"), std::string::npos);
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "from-the-future"}).exit_code, 1);
  nlohmann::json pb = PeerEntry(b, a);
  EXPECT_NE(pb.dump().find("refused"), std::string::npos) << Status(b).dump();
  // Fix b's clock: its records are accepted once they are within the limit.
  Stop(b);
  Start(b, {&a}, {&a}, offset_limit);
  ExpectConverged({&a, &b}, {"m"});
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "from-the-future"}).out, "1");
}

// `serve` with only --http serves one node: no peer transport to listen or
// dial, yet health, writes, reads and status work, and SIGTERM stops it
// cleanly. Without --http, --listen or --peer there is nothing to serve.
TEST_F(ClusterTest, OneNodeServesOnlyHttp) {
  Node& a = AddNode("a");
  RunResult r = Tidemap({"serve", "--data", a.dir});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("nothing to do: give --listen, --peer, --http or several"),
            std::string::npos)
      << r;

  Start(a, {}, {}, {}, /*listen=*/false);
  const HttpClientOptions client = Client(a);
  auto health = HttpCall(client, "GET", "/v1/health");
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, R"({"status":"ok"})");
  EXPECT_EQ(Put(a, "fruit", "apple", "red"), 0);
  r = Tidemap({"get", "--http", a.http(), "fruit", "apple"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "red");
  nlohmann::json status = Status(a);
  ASSERT_TRUE(status.is_object()) << a.process->Log();
  EXPECT_EQ(status["keys"], 1);
  EXPECT_TRUE(status["peers"].empty()) << status.dump();
  EXPECT_NE(a.process->Log().find("HTTP only (no peers)"), std::string::npos) << a.process->Log();
  EXPECT_EQ(a.process->Log().find("trust list is empty"), std::string::npos)
      << "no peers: an empty trust list is no warning\n"
      << a.process->Log();
  Stop(a);
}

TEST_F(ClusterTest, ServeRefusesBadSettingsWithTheFileAndTheReason) {
  Node& a = AddNode("a");
  const std::string listen = "127.0.0.1:" + std::to_string(a.port);
  // A trust file with a bad key on line 3: exit 3, the file and the line.
  const std::string trust_file = root_ + "/trusted";
  std::ofstream(trust_file) << "# peers\n" << a.public_key << "\nnot-a-key\n";
  RunResult r = Tidemap({"serve", "--data", a.dir, "--listen", listen, "--trust-file", trust_file});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_NE(r.err.find(trust_file), std::string::npos) << r;
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r;
  // A missing trust file: exit 3 naming it.
  r = Tidemap({"serve", "--data", a.dir, "--listen", listen, "--trust-file", root_ + "/none"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_NE(r.err.find(root_ + "/none"), std::string::npos) << r;
  // A data dir without an identity: exit 3 naming the identity file.
  std::filesystem::create_directories(root_ + "/empty");
  r = Tidemap({"serve", "--data", root_ + "/empty", "--listen", listen});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_NE(r.err.find("identity.key"), std::string::npos) << r;
  // A world-readable identity file: exit 3.
  std::filesystem::permissions(a.dir + "/identity.key", std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  r = Tidemap({"serve", "--data", a.dir, "--listen", listen});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_NE(r.err.find("identity.key"), std::string::npos) << r;
  std::filesystem::permissions(a.dir + "/identity.key", std::filesystem::perms::others_read,
                               std::filesystem::perm_options::remove);
  // A token file group or others may read: refused (exit 4) naming it and its mode.
  const std::string token_file = root_ + "/token";
  std::ofstream(token_file) << "s3cret\n";
  std::filesystem::permissions(token_file, std::filesystem::perms::owner_read |
                                               std::filesystem::perms::owner_write |
                                               std::filesystem::perms::others_read);
  r = Tidemap({"serve", "--data", a.dir, "--listen", listen, "--http", a.http(),
               "--http-token-file", token_file});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_NE(r.err.find("token file " + token_file + " has mode 0604, must be 0600"),
            std::string::npos)
      << r;
  // A bad --trust key, an unknown config key, HTTP off loopback without a token: usage, exit 2.
  r = Tidemap({"serve", "--data", a.dir, "--listen", listen, "--trust", "abc"});
  EXPECT_EQ(r.exit_code, 2) << r;
  const std::string config = root_ + "/tidemap.toml";
  std::ofstream(config) << "data = \"" << a.dir << "\"\nlisen = \"" << listen << "\"\n";
  r = Tidemap({"serve", "--config", config});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("line 2: unknown setting \"lisen\""), std::string::npos) << r;
  std::ofstream(config) << "data = \"" << a.dir << "\"\nlisten = \"" << listen
                        << "\"\nwrite_buffer_mb = 0\n";
  r = Tidemap({"serve", "--config", config});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("write_buffer_mb 0: expected 1 to 1024"), std::string::npos) << r;
  r = Tidemap({"serve", "--data", a.dir, "--listen", listen, "--http", "0.0.0.0:0"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("token"), std::string::npos) << r;
}

TEST_F(ClusterTest, ConfigFileSettingsAndFlagsThatOverrideThem) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  // a's settings come from a TOML file; its --http flag overrides the file's.
  const std::string config = root_ + "/a.toml";
  std::ofstream(config) << "data = \"" << a.dir << "\"\n"
                        << "listen = \"" << a.listen() << "\"\n"
                        << "http = \"127.0.0.1:1\"\n"
                        << "trust = [\"" << b.public_key << "\"]\n"
                        << "durability = \"relaxed\"\n"
                        << "write_buffer_mb = 16\n";
  ++a.starts;
  a.process = std::make_unique<ChildProcess>(
      TIDEMAP_BIN, std::vector<std::string>{"serve", "--config", config, "--http", a.http()},
      root_ + "/a.log");
  ASSERT_TRUE(WaitUntil(20'000, 50, [&] { return Status(a).is_object(); })) << a.process->Log();
  Start(b, {&a}, {&a});
  ASSERT_EQ(Put(a, "m", "k", "v"), 0);
  ExpectConverged({&a, &b}, {"m"});
  Stop(a);
}

}  // namespace
}  // namespace tidemap
