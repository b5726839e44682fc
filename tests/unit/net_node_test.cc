// net::Node's transport, with in-process nodes on loopback.
//
// StalledFsyncDelaysNoOtherPeerNorHttp: the event loop is free of disk work.
// B and C dial A, whose replica writes through a FaultEnv that stalls the
// next fsync of its write-ahead log for kStall while A applies B's streamed
// write. During that stall A must keep serving everyone else: C keeps
// receiving A's frames (keepalives every 100 ms) and A's HTTP API answers a
// GET, each within kBound. With the sync session run on the loop, A's loop
// sleeps in the fsync and C hears nothing for the whole stall. The bound is
// generous for a noisy shared machine: a tenth of the loop's keepalive rate
// would already pass, a blocked loop cannot.
//
// The pre-handshake slots (net/handshake_slots.h): their rules alone, then a
// flood of idle sockets that cannot keep a restarting trusted peer out. The
// counters: bad frames after a real handshake count as decode errors, a bad
// handshake signature as "bad_signature" and only a key outside the trust
// list as "untrusted". The stream's batching: commits made while a record
// batch waits for its answer leave together when it comes.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "tests/support/fault_env.h"
#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_slots.h>
#include <tidemap/net/node.h>
#include <tidemap/net/trust.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/server/http.h>
#include <tidemap/server/http_client.h>
#include <tidemap/storage/identity.h>

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

  // Start begins from these (it sets the address, peers and fast timers).
  net::NodeOptions options;
  uint64_t tick_interval_ms = 20;

  void Start(std::vector<std::string> peers) {
    net::NodeOptions o = options;
    o.listen = "127.0.0.1:0";
    o.peers = std::move(peers);
    o.tick_interval_ms = tick_interval_ms;
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

// Every one of `peers` trusts every one, itself included.
void TrustEachOther(std::initializer_list<Peer*> peers) {
  for (Peer* p : peers) {
    for (Peer* q : peers) p->trust.Add(q->identity->public_key());
  }
}

TEST(NetNodeTest, StalledFsyncDelaysNoOtherPeerNorHttp) {
  const std::string root = testing::MakeTempDir("tidemap-net-node-test");
  {
    Peer a, b, c;
    a.Open(root + "/a", Durability::kSync);
    b.Open(root + "/b", Durability::kRelaxed);
    c.Open(root + "/c", Durability::kRelaxed);
    TrustEachOther({&a, &b, &c});
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

// --- Pre-handshake slots ---

// Renders the slots' decisions: "+3" admitted as slot 3, "+3-1" admitted
// evicting slot 1, "busy" / "busy_address" refused.
std::string Render(const net::HandshakeSlots::Decision& d) {
  if (!d.admitted) return d.refused;
  std::string out = "+" + std::to_string(d.slot);
  if (d.evicted) out += "-" + std::to_string(*d.evicted);
  return out;
}

TEST(HandshakeSlotsTest, NewcomersReplaceTheOldestSilentConnection) {
  net::HandshakeSlots slots(/*total_max=*/4, /*per_host_max=*/2);
  std::set<uint64_t> talking;  // slots that sent their first message
  const auto silent = [&](uint64_t slot) { return talking.count(slot) == 0; };
  std::string log;
  const auto admit = [&](const std::string& host) {
    log += (log.empty() ? "" : " ") + Render(slots.Admit(host, silent));
  };
  admit("a");  // +1
  admit("a");  // +2
  admit("a");  // a holds its share: replaces a's oldest silent, 1
  talking = {2, 3};
  admit("a");  // a's share all talking: refused
  admit("b");  // +4
  admit("c");  // +5: four taken now (2 3 4 5)
  admit("d");  // all taken: replaces the oldest silent anywhere, 4 (b)
  talking = {2, 3, 5, 6};
  admit("e");  // all taken, none silent: refused
  slots.Release(2);
  slots.Release(2);  // a second release is ignored
  admit("a");        // a has one slot again (3): +7
  EXPECT_EQ(log, "+1 +2 +3-1 busy_address +4 +5 +6-4 busy +7");
  EXPECT_EQ(slots.taken(), 4u);
  EXPECT_EQ(slots.taken_by("a"), 2u);
  EXPECT_EQ(slots.taken_by("b"), 0u);
}

TEST(HandshakeSlotsTest, ZeroPerAddressMaxMeansNoPerAddressCap) {
  net::HandshakeSlots slots(3, 0);
  const auto silent = [](uint64_t) { return false; };
  std::string log;
  for (int i = 0; i < 4; ++i) log += Render(slots.Admit("a", silent)) + " ";
  EXPECT_EQ(log, "+1 +2 +3 busy ");
}

// Keeps `count` idle TCP connections to 127.0.0.1:`port` (they send nothing)
// and reopens each one the node closes, at most `connects_per_s` connects a
// second: the flood of the issue, at a bounded rate so that it loads a shared
// machine no more than needed.
class IdleFlood {
 public:
  IdleFlood(uint16_t port, size_t count, int connects_per_s)
      : port_(port), fds_(count, -1), connects_per_s_(connects_per_s) {
    thread_ = std::thread([this] { Run(); });
  }
  ~IdleFlood() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int& fd : fds_) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  uint64_t connects() const { return connects_; }
  uint64_t closed_by_node() const { return closed_; }

 private:
  void Run() {
    double tokens = static_cast<double>(fds_.size());  // the first wave at once
    auto last = Steady::now();
    while (!stop_) {
      ReapClosed();
      const auto now = Steady::now();
      tokens =
          std::min(tokens + std::chrono::duration<double>(now - last).count() * connects_per_s_,
                   static_cast<double>(fds_.size()));
      last = now;
      for (int& fd : fds_) {
        if (fd >= 0 || tokens < 1) continue;
        fd = testing::ConnectLoopback(port_);
        tokens -= 1;
        ++connects_;
      }
    }
  }

  // Closes (to reopen) the sockets the node has closed.
  void ReapClosed() {
    std::vector<pollfd> polled;
    for (int fd : fds_) polled.push_back(pollfd{fd, POLLIN, 0});  // fd -1 is skipped
    if (poll(polled.data(), polled.size(), 5) <= 0) return;
    for (size_t i = 0; i < polled.size(); ++i) {
      if (fds_[i] < 0 || polled[i].revents == 0) continue;
      char byte = 0;
      const ssize_t n = recv(fds_[i], &byte, 1, MSG_DONTWAIT);
      if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) continue;
      close(fds_[i]);
      fds_[i] = -1;
      ++closed_;
    }
  }

  const uint16_t port_;
  std::vector<int> fds_;  // -1: to reopen
  const int connects_per_s_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> closed_{0};
  std::thread thread_;
};

// The flood: more idle sockets than the node has slots, renewed as
// the node closes them, while a trusted peer restarts. The peer must be
// connected (both ways) within kRejoin of its restart, measured with the
// flood running at full strength; before the slots could be reclaimed, it
// stayed out until the flood stopped. The flood's rate is bounded (a few
// hundred connects a second), so a loaded 2-core machine keeps up. With the
// default per-address cap (8) the flood, all from 127.0.0.1 like the peer,
// replaces its own members within that share; without one (0) it fills all
// 64 slots and the peer gets in by the total cap's eviction.
class IdleFloodTest : public ::testing::TestWithParam<size_t> {};

INSTANTIATE_TEST_SUITE_P(PerAddressMax, IdleFloodTest, ::testing::Values(8, 0));

TEST_P(IdleFloodTest, CannotKeepATrustedPeerOut) {
  constexpr auto kRejoin = std::chrono::seconds(2);
  constexpr size_t kFloodSockets = 90;  // more than handshakes_pending_max (64)
  const std::string root = testing::MakeTempDir("tidemap-net-flood-test");
  {
    Peer a, b;
    a.Open(root + "/a", Durability::kRelaxed);
    b.Open(root + "/b", Durability::kRelaxed);
    TrustEachOther({&a, &b});
    a.options.handshakes_pending_per_address_max = GetParam();
    a.Start({});
    b.Start({a.address()});
    ASSERT_TRUE(WaitFor(kSetupTimeout, [&] { return a.Sees(b) && b.Sees(a); }));

    IdleFlood flood(a.node->listen_port(), kFloodSockets, 300);
    // Long enough for every slot to fill and the first silent ones to time out.
    std::this_thread::sleep_for(milliseconds(1500));
    const uint64_t connects_before = flood.connects();
    b.node->Stop();
    b.node.reset();
    ASSERT_TRUE(WaitFor(kSetupTimeout, [&] { return !a.Sees(b); }));

    const auto restarted = Steady::now();
    b.Start({a.address()});
    const bool back = WaitFor(kRejoin, [&] { return a.Sees(b) && b.Sees(a); });
    const auto waited = Steady::now() - restarted;
    // The flood ran all along: it kept connecting after the restart too.
    const bool flood_ran =
        WaitFor(kSetupTimeout, [&] { return flood.connects() > connects_before + 10; });
    flood.Stop();

    EXPECT_TRUE(back) << "B not connected "
                      << std::chrono::duration_cast<milliseconds>(waited).count()
                      << " ms after its restart, under a flood of " << kFloodSockets
                      << " idle sockets";
    // The flood was real: it kept connecting across the restart, and the
    // node cut its sockets.
    EXPECT_TRUE(flood_ran);
    EXPECT_GT(flood.closed_by_node(), kFloodSockets);
    const net::NetCounters c = a.node->Snapshot().counters;
    const auto count = [&c](const std::string& reason) {
      auto it = c.refused_connections.find(reason);
      return it == c.refused_connections.end() ? uint64_t{0} : it->second;
    };
    EXPECT_GT(count("evicted") + count("first_message_timeout"), 0u);
    EXPECT_EQ(count("untrusted"), 0u);
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// --- Counters ---

// A raw initiator on a blocking socket: a real handshake with `id` against a
// node, then frames sealed by hand.
class RawPeer {
 public:
  explicit RawPeer(uint16_t port) : fd_(testing::ConnectLoopback(port)) {
    timeval tv{5, 0};  // a read never hangs the test
    if (fd_ >= 0) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawPeer() {
    if (fd_ >= 0) close(fd_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Runs the handshake as `id`, trusting `trust`; with `flip_signature`, one
  // bit of our proof's signature is flipped on its way out.
  Status Handshake(const Identity& id, const net::TrustList& trust, bool flip_signature) {
    if (fd_ < 0) return Status::Unavailable("connect failed");
    net::Handshake h(net::Handshake::Role::kInitiator,
                     net::HandshakeConfig{std::string(id.secret_key()), id.public_key(), &trust});
    std::string out;
    Status s = h.Start(&out);
    std::string pending;
    int sent = 0;
    while (s.ok() && !h.done()) {
      if (!out.empty()) {
        // The second message is our proof: header (9 bytes), then the signature.
        if (flip_signature && sent == 1) out[9] = static_cast<char>(out[9] ^ 1);
        if (!Send(out)) return Status::Unavailable("send failed");
        out.clear();
        ++sent;
      }
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return Status::Unavailable("connection closed during the handshake");
      pending.append(buf, static_cast<size_t>(n));
      size_t consumed = 0;
      s = h.Feed(pending, &out, &consumed);
      pending.erase(0, consumed);
    }
    if (!out.empty()) Send(out);
    if (!s.ok()) return s;
    auto channel = h.TakeChannel(64 * 1024);
    if (!channel.ok()) return channel.status();
    channel_ = std::move(*channel);
    return channel_->Feed(pending);  // the node's first frames may have come with its proof
  }

  // The next frame's payload from the node, keepalives skipped; nullopt when
  // none comes before `deadline` or the connection ends. REQUIRES: Handshake
  // succeeded.
  std::optional<std::string> Next(Steady::time_point deadline) {
    while (true) {
      auto next = channel_->Next();
      if (!next.ok()) return std::nullopt;
      if (next->has_value()) {
        if ((*next)->empty()) continue;
        return std::move(**next);
      }
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Steady::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return std::nullopt;
      }
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      if (!channel_->Feed(std::string_view(buf, static_cast<size_t>(n))).ok()) return std::nullopt;
    }
  }

  // One frame carrying `payload`, sealed for the node. REQUIRES: Handshake succeeded.
  std::string Frame(std::string_view payload) {
    std::string frame;
    EXPECT_TRUE(channel_->Seal(payload, &frame).ok());
    return frame;
  }

 private:
  int fd_;
  std::unique_ptr<net::SecureChannel> channel_;
};

uint64_t Refused(const Peer& p, const std::string& reason) {
  const net::NetCounters c = p.node->Snapshot().counters;
  auto it = c.refused_connections.find(reason);
  return it == c.refused_connections.end() ? 0 : it->second;
}

// Every kind of bad frame after a real handshake goes up in decode_errors:
// one that fails authentication, one whose length prefix is over the limit
// (both refused by the channel as the bytes come in), and an authentic frame
// that is not a Cap'n Proto message.
TEST(NetNodeTest, BadFramesAfterTheHandshakeAreDecodeErrors) {
  const std::string root = testing::MakeTempDir("tidemap-net-decode-test");
  {
    Peer a, x;
    a.Open(root + "/a", Durability::kRelaxed);
    x.Open(root + "/x", Durability::kRelaxed);  // its identity only
    a.trust.Add(a.identity->public_key());
    a.trust.Add(x.identity->public_key());
    x.trust = a.trust;
    a.Start({});
    const auto tampered = [](std::string f) {
      f.back() = static_cast<char>(f.back() ^ 1);
      return f;
    };
    const auto oversized = [](std::string f) {
      f[0] = '\x7f';  // a length prefix of about 2 GB
      return f;
    };
    const std::vector<std::pair<std::string, std::function<std::string(RawPeer&)>>> cases = {
        {"tampered", [&](RawPeer& r) { return tampered(r.Frame("x")); }},
        {"oversized", [&](RawPeer& r) { return oversized(r.Frame("x")); }},
        {"not a message", [&](RawPeer& r) { return r.Frame("not capnp at all"); }},
    };
    uint64_t expected = 0;
    for (const auto& [name, make] : cases) {
      SCOPED_TRACE(name);
      RawPeer raw(a.node->listen_port());
      ASSERT_TRUE(raw.Handshake(*x.identity, x.trust, false).ok());
      ASSERT_TRUE(raw.Send(make(raw)));
      ++expected;
      EXPECT_TRUE(WaitFor(kSetupTimeout,
                          [&] { return a.node->Snapshot().counters.decode_errors == expected; }))
          << "decode_errors " << a.node->Snapshot().counters.decode_errors << ", expected "
          << expected;
    }
    EXPECT_EQ(Refused(a, "untrusted"), 0u);
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// A trusted key with a bad handshake signature is refused as "bad_signature";
// "untrusted" stays for keys outside the trust list.
TEST(NetNodeTest, BadSignatureIsNotCountedAsUntrusted) {
  const std::string root = testing::MakeTempDir("tidemap-net-signature-test");
  {
    Peer a, x, stranger;
    a.Open(root + "/a", Durability::kRelaxed);
    x.Open(root + "/x", Durability::kRelaxed);
    stranger.Open(root + "/s", Durability::kRelaxed);
    a.trust.Add(a.identity->public_key());
    a.trust.Add(x.identity->public_key());
    x.trust = a.trust;
    stranger.trust = a.trust;
    a.Start({});
    {
      RawPeer raw(a.node->listen_port());
      const Status s = raw.Handshake(*x.identity, x.trust, /*flip_signature=*/true);
      EXPECT_FALSE(s.ok());
    }
    EXPECT_TRUE(WaitFor(kSetupTimeout, [&] { return Refused(a, "bad_signature") == 1; }));
    EXPECT_EQ(Refused(a, "untrusted"), 0u);
    {
      RawPeer raw(a.node->listen_port());
      const Status s = raw.Handshake(*stranger.identity, stranger.trust, false);
      EXPECT_FALSE(s.ok());
    }
    EXPECT_TRUE(WaitFor(kSetupTimeout, [&] { return Refused(a, "untrusted") == 1; }));
    EXPECT_EQ(Refused(a, "bad_signature"), 1u);
    EXPECT_EQ(a.node->Snapshot().counters.decode_errors, 0u);
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// A peer taken out of the trust list while the node was stopped holds no
// cursor once the node starts again; a trusted one keeps its cursor.
TEST(NetNodeTest, StartReleasesTheCursorsOfUntrustedPeers) {
  const std::string root = testing::MakeTempDir("tidemap-net-release-test");
  {
    Peer a, b, gone;
    a.Open(root + "/a", Durability::kRelaxed);
    b.Open(root + "/b", Durability::kRelaxed);
    gone.Open(root + "/gone", Durability::kRelaxed);
    const uint64_t b_id = b.identity->node_id();
    const uint64_t gone_id = gone.identity->node_id();
    ASSERT_TRUE(a.replica->AddPeer(b_id).ok());
    ASSERT_TRUE(a.replica->AddPeer(gone_id).ok());
    a.trust.Add(a.identity->public_key());
    a.trust.Add(b.identity->public_key());
    a.Start({});
    auto acks = a.replica->PeerAcks();
    ASSERT_TRUE(acks.ok()) << acks.status().ToString();
    EXPECT_EQ(acks->count(b_id), 1u);
    EXPECT_EQ(acks->count(gone_id), 0u);
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// A RawPeer driven by a real SyncSession over its own replica: it answers
// the node's messages, but its replies leave only when the test flushes them.
class SessionPeer {
 public:
  SessionPeer(uint16_t port, Peer& self, uint64_t node_id)
      : raw_(port), self_(self), session_(self.replica.get(), node_id, SyncOptions{}) {}

  Status Start() {
    TIDEMAP_RETURN_IF_ERROR(raw_.Handshake(*self_.identity, self_.trust, false));
    return session_.Start(self_.clock.NowMillis(), &held_);
  }
  // Receives one message (nullopt: none before `deadline`) and holds the replies.
  std::optional<msg::Message> Receive(Steady::time_point deadline) {
    auto payload = raw_.Next(deadline);
    if (!payload.has_value()) return std::nullopt;
    auto m = DecodeMessage(*payload);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return std::nullopt;
    const Status s = session_.Receive(*m, self_.clock.NowMillis(), &held_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::move(*m);
  }
  // Sends the held replies.
  void Flush() {
    for (const msg::Message& m : held_) {
      auto payload = EncodeMessage(m);
      ASSERT_TRUE(payload.ok()) << payload.status().ToString();
      ASSERT_TRUE(raw_.Send(raw_.Frame(*payload)));
    }
    held_.clear();
  }
  // Answers everything until the node has been quiet for `quiet`.
  void Settle(Steady::duration quiet) {
    Flush();
    while (Receive(Steady::now() + quiet).has_value()) Flush();
  }

 private:
  RawPeer raw_;
  Peer& self_;
  SyncSession session_;
  std::vector<msg::Message> held_;
};

// The stream's batching rule (net/connection_session.cc): while the peer has
// not answered our record batch, further commits send nothing; its answer
// brings them all in one batch, contiguous with the first and in commit
// order. A node that streams each commit as it comes sends more batches
// (up to the session's in-flight window) before the answer. The node's tick
// is too slow to stand in for a wake-up: an isolated write, first and again
// once every batch is answered, must go at once.
TEST(NetNodeTest, CommitsDuringAnUnansweredBatchLeaveInOneBatch) {
  const std::string root = testing::MakeTempDir("tidemap-net-batching-test");
  {
    Peer a, x;
    a.Open(root + "/a", Durability::kRelaxed);
    x.Open(root + "/x", Durability::kRelaxed);
    a.trust.Add(a.identity->public_key());
    a.trust.Add(x.identity->public_key());
    x.trust = a.trust;
    a.tick_interval_ms = 60'000;
    a.Start({});
    SessionPeer peer(a.node->listen_port(), x, a.identity->node_id());
    ASSERT_TRUE(peer.Start().ok());
    peer.Settle(milliseconds(300));  // hellos, and a first-contact diff if any
    auto next_batch = [&](Steady::duration timeout) -> std::optional<msg::RecordBatch> {
      const auto deadline = Steady::now() + timeout;
      while (auto m = peer.Receive(deadline)) {
        if (auto* b = std::get_if<msg::RecordBatch>(&m->body)) return *b;
      }
      return std::nullopt;
    };
    auto key = [](int i) { return "k" + std::to_string(100 + i); };
    ASSERT_TRUE(a.replica->Put("m", key(0), "v").ok());
    auto first = next_batch(kSetupTimeout);  // an isolated write goes at once
    ASSERT_TRUE(first.has_value());
    ASSERT_EQ(first->records.size(), 1u);
    constexpr int kCommits = 20;
    for (int i = 1; i <= kCommits; ++i) ASSERT_TRUE(a.replica->Put("m", key(i), "v").ok());
    // Several ticks pass; the first batch's ack is held back.
    EXPECT_FALSE(next_batch(milliseconds(300)).has_value())
        << "a batch was sent while the previous one was unanswered";
    peer.Flush();  // the ack
    std::vector<std::string> keys;
    uint64_t expect_first = first->last_seq + 1;
    int batches = 0;
    while (keys.size() < kCommits) {
      auto b = next_batch(kSetupTimeout);
      ASSERT_TRUE(b.has_value()) << "got " << keys.size() << " of " << kCommits << " records";
      ++batches;
      EXPECT_EQ(b->first_seq, expect_first);
      expect_first = b->last_seq + 1;
      for (const KeyedRecord& r : b->records) keys.push_back(r.key);
      peer.Flush();
    }
    EXPECT_EQ(batches, 1);
    for (int i = 1; i <= kCommits; ++i) {
      ASSERT_EQ(keys.at(static_cast<size_t>(i - 1)), key(i));
      EXPECT_TRUE(x.replica->Get("m", key(i)).ok()) << key(i);
    }
    peer.Settle(milliseconds(200));
    ASSERT_TRUE(a.replica->Put("m", key(kCommits + 1), "v").ok());
    auto last = next_batch(std::chrono::seconds(5));
    ASSERT_TRUE(last.has_value()) << "an isolated write after the answers was not sent";
    EXPECT_EQ(last->first_seq, expect_first);
    ASSERT_EQ(last->records.size(), 1u);
    EXPECT_EQ(last->records[0].key, key(kCommits + 1));
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// Commits from several threads, in rounds, reach two peers without the tick
// (too slow here to stand in for a lost wake-up): each round arrives in full
// at both within kRound, whichever commits skipped their wake-up while every
// connection waited for a batch's answer.
TEST(NetNodeTest, ConcurrentCommitsReachEveryPeerWithoutTheTick) {
  constexpr auto kRound = std::chrono::seconds(5);
  constexpr int kRounds = 10, kThreads = 4, kCommitsPerThread = 25;
  const std::string root = testing::MakeTempDir("tidemap-net-wakeup-test");
  {
    Peer a, b, c;
    a.Open(root + "/a", Durability::kRelaxed);
    b.Open(root + "/b", Durability::kRelaxed);
    c.Open(root + "/c", Durability::kRelaxed);
    TrustEachOther({&a, &b, &c});
    for (Peer* p : {&a, &b, &c}) p->tick_interval_ms = 60'000;
    a.Start({});
    b.Start({a.address()});
    c.Start({a.address()});
    ASSERT_TRUE(WaitFor(kSetupTimeout, [&] { return a.Sees(b) && a.Sees(c); }));
    auto key = [](int round, int t, int i) {
      return std::to_string(round) + "/" + std::to_string(t) + "/" + std::to_string(i);
    };
    for (int round = 0; round < kRounds; ++round) {
      std::vector<std::thread> writers;
      for (int t = 0; t < kThreads; ++t) {
        writers.emplace_back([&, t] {
          for (int i = 0; i < kCommitsPerThread; ++i) {
            EXPECT_TRUE(a.replica->Put("m", key(round, t, i), "v").ok());
          }
        });
      }
      for (std::thread& w : writers) w.join();
      auto has_round = [&](const Peer& p) {
        for (int t = 0; t < kThreads; ++t) {
          for (int i = 0; i < kCommitsPerThread; ++i) {
            if (!p.replica->Get("m", key(round, t, i)).ok()) return false;
          }
        }
        return true;
      };
      ASSERT_TRUE(WaitFor(kRound, [&] { return has_round(b) && has_round(c); }))
          << "round " << round << " did not reach both peers";
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

}  // namespace
}  // namespace tidemap
