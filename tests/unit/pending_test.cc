// Proves pending writes (server/pending.h): a peer's pending writes are our
// oplog entries after its cursor that did not come from it (written here or
// relayed from a third node), their count is the lag status shows, they page
// in seq order with a bounded `next`, and a peer is named by node id or key.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <map>
#include <memory>
#include <string>

#include "tests/support/sync_pump.h"
#include "tests/support/test_util.h"
#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/replica/sync.h>
#include <tidemap/server/pending.h>
#include <tidemap/server/status.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;

class PendingTest : public ::testing::Test {
 protected:
  PendingTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())) {}

  Replica& Add(uint64_t id) {
    clocks_[id] = std::make_unique<ManualClock>(kStartMs);
    ReplicaOptions o;
    o.path = "/n" + std::to_string(id);
    o.env = env_.get();
    o.clock = clocks_[id].get();
    o.node_id = id;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    replicas_[id] = std::move(r).value();
    return *replicas_[id];
  }

  // Syncs a and b until both are idle: each acknowledges the other's oplog.
  void Sync(uint64_t a, uint64_t b) {
    SyncSession sa(replicas_[a].get(), b, {});
    SyncSession sb(replicas_[b].get(), a, {});
    testing::SyncPumpOptions options;
    options.now_ms = kStartMs;
    const testing::SyncPumpResult r = testing::PumpSync(sa, sb, options);
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  }

  net::PeerStatus PeerAt(uint64_t at, uint64_t peer) {
    Replica& r = *replicas_[at];
    auto peers = PeersFromOplog(&r, r.LastSeq(), kStartMs);
    EXPECT_TRUE(peers.ok()) << peers.status().ToString();
    auto p = FindPeer(*peers, NodeIdToString(peer));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? *p : net::PeerStatus{};
  }

  std::unique_ptr<leveldb::Env> env_;
  std::map<uint64_t, std::unique_ptr<ManualClock>> clocks_;
  std::map<uint64_t, std::unique_ptr<Replica>> replicas_;
};

std::vector<std::string> Keys(const PendingPage& page) {
  std::vector<std::string> keys;
  for (const OplogEntry& e : page.items) keys.push_back(e.key);
  return keys;
}

TEST_F(PendingTest, LocalAndRelayedWritesArePendingButNotThePeersOwn) {
  Replica& a = Add(1);
  Replica& b = Add(2);
  Replica& c = Add(3);
  ASSERT_TRUE(a.Put("m", "a1", "v").ok());
  ASSERT_TRUE(b.Put("m", "b1", "v").ok());
  Sync(1, 2);
  EXPECT_EQ(PeerAt(1, 2).lag, 0u);
  auto none = ReadPending(a, PeerAt(1, 2), 0, 100, kStartMs);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->items.empty());
  EXPECT_FALSE(none->next.has_value());

  ASSERT_TRUE(a.Put("m", "a2", "v").ok());
  ASSERT_TRUE(a.Delete("m", "a1").ok());
  ASSERT_TRUE(c.Put("m", "c1", "v").ok());
  ASSERT_TRUE(b.Put("m", "b2", "v").ok());
  Sync(2, 3);  // c gets b2, written by b
  Sync(1, 3);  // a gets c1 and b2 from c; c acknowledges a2 and the delete
  auto b2 = a.Get("m", "b2");
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  clocks_[1]->Advance(1500);

  const net::PeerStatus to_b = PeerAt(1, 2);
  auto page = ReadPending(a, to_b, 0, 100, kStartMs + 2000);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(Keys(*page), (std::vector<std::string>{"a2", "a1", "c1"}));
  EXPECT_EQ(to_b.lag, page->items.size());  // status's lag counts the same writes
  EXPECT_FALSE(page->items[0].tombstone);
  EXPECT_TRUE(page->items[1].tombstone);
  EXPECT_EQ(page->items[2].version.origin, 3u);
  EXPECT_GE(page->oldest_age_seconds, 1.9);
  EXPECT_FALSE(page->next.has_value());
  for (const OplogEntry& e : page->items) EXPECT_GT(e.seq, to_b.acked_seq);

  // b2, written by b, is not b's to get back though it came by c. c
  // acknowledged everything a holds; what a received from c is not c's either.
  auto to_c = ReadPending(a, PeerAt(1, 3), 0, 100, kStartMs);
  ASSERT_TRUE(to_c.ok());
  EXPECT_TRUE(to_c->items.empty());
  EXPECT_EQ(PeerAt(1, 3).lag, 0u);

  Sync(1, 2);
  EXPECT_EQ(PeerAt(1, 2).lag, 0u);
  auto after = ReadPending(a, PeerAt(1, 2), 0, 100, kStartMs);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->items.empty());
  EXPECT_EQ(after->oldest_age_seconds, 0);
}

TEST_F(PendingTest, PagesFollowEachOtherInSeqOrder) {
  Replica& a = Add(1);
  ASSERT_TRUE(a.AddPeer(2).ok());
  for (int i = 0; i < 250; ++i) ASSERT_TRUE(a.Put("m", "k" + std::to_string(i), "v").ok());
  const net::PeerStatus peer = PeerAt(1, 2);
  EXPECT_EQ(peer.lag, 250u);
  std::vector<std::string> seen;
  uint64_t after = 0;
  int pages = 0;
  for (; pages < 10; ++pages) {
    auto page = ReadPending(a, peer, after, 100, kStartMs);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    EXPECT_LE(page->items.size(), 100u);
    for (const OplogEntry& e : page->items) {
      EXPECT_GT(e.seq, after);
      seen.push_back(e.key);
    }
    if (!page->next.has_value()) break;
    after = *page->next;
  }
  EXPECT_EQ(pages, 2);
  ASSERT_EQ(seen.size(), 250u);
  for (int i = 0; i < 250; ++i) EXPECT_EQ(seen[i], "k" + std::to_string(i));

  EXPECT_EQ(ReadPending(a, peer, 0, 0, kStartMs).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(ReadPending(a, peer, 0, kPendingItemsMax + 1, kStartMs).status().code(),
            Status::Code::kInvalidArgument);
}

TEST_F(PendingTest, PeersAreNamedByNodeIdOrPublicKey) {
  crypto::PublicKey public_key{};
  std::string secret_key;
  ASSERT_TRUE(crypto::GenerateSigningKeyPair(&public_key, &secret_key).ok());
  const uint64_t id = crypto::NodeIdOf(public_key);
  std::vector<net::PeerStatus> peers(2);
  peers[0].node_id = 7;
  peers[1].node_id = id;
  auto by_key = FindPeer(peers, crypto::PublicKeyToText(public_key));
  ASSERT_TRUE(by_key.ok()) << by_key.status().ToString();
  EXPECT_EQ(by_key->node_id, id);
  auto by_id = FindPeer(peers, NodeIdToString(7));
  ASSERT_TRUE(by_id.ok());
  EXPECT_EQ(by_id->node_id, 7u);
  EXPECT_EQ(FindPeer(peers, NodeIdToString(8)).status().code(), Status::Code::kNotFound);
  EXPECT_EQ(FindPeer(peers, "not-a-key").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(FindPeer(peers, "zzzzzzzzzzzzzzzz").status().code(), Status::Code::kInvalidArgument);
}

TEST_F(PendingTest, JsonCarriesOpsClearsAndBinaryNamesAsBase64) {
  Replica& a = Add(1);
  ASSERT_TRUE(a.AddPeer(2).ok());
  ASSERT_TRUE(a.Put("m", std::string("\xff\x01", 2), "v").ok());
  ASSERT_TRUE(a.Delete("m", "gone").ok());
  ASSERT_TRUE(a.ClearMap("old").ok());
  auto page = ReadPending(a, PeerAt(1, 2), 0, 100, kStartMs);
  ASSERT_TRUE(page.ok());
  const nlohmann::json j = PendingJson({*page});
  ASSERT_EQ(j["peers"].size(), 1u);
  const nlohmann::json& p = j["peers"][0];
  EXPECT_EQ(p["node_id"], NodeIdToString(2));
  EXPECT_TRUE(p["public_key"].is_null());
  EXPECT_EQ(p["count"], 3);
  EXPECT_TRUE(p["next"].is_null());
  ASSERT_EQ(p["items"].size(), 3u);
  EXPECT_EQ(p["items"][0]["op"], "put");
  EXPECT_EQ(p["items"][0]["key_base64"], crypto::Base64Encode(std::string("\xff\x01", 2)));
  EXPECT_EQ(p["items"][0]["map"], "m");
  EXPECT_EQ(p["items"][1]["op"], "delete");
  EXPECT_EQ(p["items"][1]["key"], "gone");
  EXPECT_EQ(p["items"][1]["origin"], NodeIdToString(1));
  EXPECT_EQ(p["items"][2]["op"], "clear");
  EXPECT_EQ(p["items"][2]["map"], "old");
  EXPECT_EQ(p["items"][2]["key"], "");
}

}  // namespace
}  // namespace tidemap
