// Proves the local replica: the write path (put, delete, atomic batches,
// limits), reads (get, scan pages), subscriptions, LWW merge of remote records
// (against an oracle over random interleavings, duplicates and orders), clock
// and seq behaviour across restarts, refusal of foreign or unknown databases
// (a version 3 one included), detection of corrupt records, concurrent
// writers sharing group commits, the oplog rows a large commit packs its
// entries into, and a failed writer leaving no oplog entry behind.
// Everything runs on LevelDB's in-memory Env with a manual clock.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "tests/support/fault_env.h"
#include "tests/support/test_util.h"
#include <tidemap/base/coding.h>
#include <tidemap/base/random.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;  // 2027-01-15
constexpr uint64_t kNode = 0xa1;

class ReplicaTest : public ::testing::Test {
 protected:
  ReplicaTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())), clock_(kStartMs) {}

  ReplicaOptions Options(uint64_t node = kNode, const std::string& path = "/db") {
    ReplicaOptions o;
    o.path = path;
    o.env = env_.get();
    o.clock = &clock_;
    o.node_id = node;
    return o;
  }

  // The database at "/db" opened as a bare Store (no replica on it), to
  // inspect or tamper with its rows.
  std::unique_ptr<Store> OpenStore() {
    StoreOptions so;
    so.path = "/db";
    so.env = env_.get();
    auto store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::unique_ptr<Replica> OpenReplica(ReplicaOptions o) {
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // `threads` threads each put `per_thread` times into map "m", cycling over
  // `keys_per_thread` keys of their own, through the group-commit pipeline.
  // Checks that every write got a distinct version and a seq, the seqs being
  // exactly 1..N; returns the oplog rows.
  static std::vector<OplogEntry> WriteFromThreads(Replica* r, int threads, int per_thread,
                                                  int keys_per_thread) {
    std::vector<std::vector<Version>> versions(threads);
    std::vector<std::thread> running;
    for (int t = 0; t < threads; ++t) {
      running.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          const std::string key =
              "t" + std::to_string(t) + "-" + std::to_string(i % keys_per_thread);
          auto v = r->Put("m", key, "v");
          ASSERT_TRUE(v.ok()) << v.status().ToString();
          versions[t].push_back(*v);
        }
      });
    }
    for (auto& th : running) th.join();
    const auto writes = static_cast<size_t>(threads) * static_cast<size_t>(per_thread);
    std::set<Version> all;
    for (const auto& vs : versions) all.insert(vs.begin(), vs.end());
    EXPECT_EQ(all.size(), writes);
    auto rows = r->ReadOplog(0, 100'000);
    EXPECT_TRUE(rows.ok());
    if (!rows.ok()) return {};
    EXPECT_EQ(rows->size(), writes);
    for (size_t i = 0; i < rows->size(); ++i) EXPECT_EQ((*rows)[i].seq, i + 1);
    return std::move(rows).value();
  }

  // "k1=v1 k2=v2" over the live keys of `map`.
  static std::string Render(const Replica& r, const std::string& map) {
    auto page = r.Scan(map, "", std::nullopt, 10'000);
    EXPECT_TRUE(page.ok());
    std::string out;
    for (const ScanItem& item : page->items) {
      if (!out.empty()) out += ' ';
      out += item.key + "=" + item.value;
    }
    return out;
  }

  std::unique_ptr<leveldb::Env> env_;
  ManualClock clock_;
};

TEST_F(ReplicaTest, PutGetDeleteScan) {
  auto r = OpenReplica(Options());
  ASSERT_TRUE(r->Put("m", "b", "2").ok());
  ASSERT_TRUE(r->Put("m", "a", "1").ok());
  ASSERT_TRUE(r->Put("other", "a", "x").ok());
  EXPECT_EQ(Render(*r, "m"), "a=1 b=2");
  ASSERT_TRUE(r->Put("m", "a", "1b").ok());
  auto got = r->Get("m", "a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "1b");
  EXPECT_EQ(got->version.origin, kNode);

  ASSERT_TRUE(r->Delete("m", "a").ok());
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  EXPECT_EQ(Render(*r, "m"), "b=2");
  EXPECT_EQ(Render(*r, "other"), "a=x");
  EXPECT_TRUE(r->Get("nope", "a").status().IsNotFound());

  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 2u);        // m/b, other/a
  EXPECT_EQ(stats->tombstones, 1u);  // m/a
  EXPECT_EQ(stats->oplog_first_seq, 1u);
  EXPECT_EQ(stats->oplog_last_seq, 5u);
}

TEST_F(ReplicaTest, VersionsGrowEvenInAFrozenMillisecond) {
  auto r = OpenReplica(Options());
  Version prev;
  for (int i = 0; i < 100; ++i) {
    auto v = r->Put("m", "k" + std::to_string(i % 3), "v");
    ASSERT_TRUE(v.ok());
    EXPECT_GT(*v, prev);
    prev = *v;
  }
}

TEST_F(ReplicaTest, ScanPagesWithPrefixAndAfter) {
  auto r = OpenReplica(Options());
  for (const char* k : {"a1", "a2", "a3", "a4", "b1", "a0x"}) ASSERT_TRUE(r->Put("m", k, k).ok());
  ASSERT_TRUE(r->Delete("m", "a2").ok());

  auto p1 = r->Scan("m", "a", std::nullopt, 2);
  ASSERT_TRUE(p1.ok());
  ASSERT_EQ(p1->items.size(), 2u);
  EXPECT_EQ(p1->items[0].key, "a0x");
  EXPECT_EQ(p1->items[1].key, "a1");
  ASSERT_TRUE(p1->next.has_value());
  auto p2 = r->Scan("m", "a", *p1->next, 2);
  ASSERT_TRUE(p2.ok());
  ASSERT_EQ(p2->items.size(), 2u);
  EXPECT_EQ(p2->items[0].key, "a3");  // a2 is a tombstone
  EXPECT_EQ(p2->items[1].key, "a4");
  EXPECT_FALSE(p2->next.has_value());  // b1 does not match the prefix

  auto none = r->Scan("m", "zzz", std::nullopt, 10);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->items.empty());
  EXPECT_TRUE(r->Scan("m", "", std::nullopt, 0).status().IsInvalidArgument());
  EXPECT_TRUE(r->Scan("m", "", std::nullopt, 10'001).status().IsInvalidArgument());
}

TEST_F(ReplicaTest, LimitsAreRefusedBeforeAnythingIsWritten) {
  ReplicaOptions o = Options();
  o.limits.value_bytes_max = 100;
  o.limits.batch_ops_max = 3;
  auto r = OpenReplica(std::move(o));

  Status s = r->Put(std::string(256, 'm'), "k", "v").status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("256"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("255"), std::string::npos) << s.message();
  s = r->Put("m", std::string(4097, 'k'), "v").status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("4097"), std::string::npos) << s.message();
  s = r->Put("m", "k", std::string(101, 'v')).status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("101"), std::string::npos) << s.message();
  EXPECT_TRUE(r->Put("", "k", "v").status().IsInvalidArgument());
  EXPECT_TRUE(r->Put("m", "", "v").status().IsInvalidArgument());

  // One bad op sinks the whole batch.
  WriteBatch b;
  b.Put("m", "ok1", "v");
  b.Put("m", "big", std::string(101, 'v'));
  EXPECT_TRUE(r->Write(b).status().IsRefused());
  WriteBatch many;
  for (int i = 0; i < 4; ++i) many.Put("m", "k" + std::to_string(i), "v");
  s = r->Write(many).status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("4 operations, limit 3"), std::string::npos) << s.message();

  EXPECT_EQ(Render(*r, "m"), "");
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->oplog_last_seq, 0u);
}

TEST_F(ReplicaTest, BatchIsAtomicAndSequenced) {
  auto r = OpenReplica(Options());
  WriteBatch b;
  b.Put("m", "x", "1");
  b.Put("m", "y", "2");
  b.Delete("m", "x");
  auto versions = r->Write(b);
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 3u);
  EXPECT_LT((*versions)[0], (*versions)[1]);
  EXPECT_LT((*versions)[1], (*versions)[2]);
  EXPECT_EQ(Render(*r, "m"), "y=2");
  auto rows = r->ReadOplog(0, 100);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[2].key, "x");
  EXPECT_TRUE((*rows)[2].tombstone);
  EXPECT_EQ((*rows)[2].seq, 3u);
}

TEST_F(ReplicaTest, SubscriptionsSeeLocalAndRemoteChanges) {
  auto r = OpenReplica(Options());
  std::vector<std::string> seen;
  auto id = r->Subscribe("m", [&](const ChangeEvent& e) {
    seen.push_back(std::string(ChangeKindName(e.kind)) + ":" + std::string(e.key) + "=" +
                   std::string(e.value) + (e.remote ? "@remote" : "") + "#" +
                   std::to_string(e.seq));
  });
  ASSERT_TRUE(r->Put("m", "a", "1").ok());
  ASSERT_TRUE(r->Put("other", "z", "1").ok());  // another map: not seen
  ASSERT_TRUE(r->Put("m", "a", "2").ok());
  ASSERT_TRUE(r->Delete("m", "a").ok());
  KeyedRecord rec{"m", "b", "9", Version{Timestamp::FromParts(kStartMs, 0), 0xb2}, false};
  ASSERT_TRUE(r->ApplyRemote({&rec, 1}, 0xb2).ok());
  r->Unsubscribe(id);
  ASSERT_TRUE(r->Put("m", "c", "1").ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"create:a=1#1", "update:a=2#3", "delete:a=#4",
                                            "create:b=9@remote#5"}));
}

TEST_F(ReplicaTest, ApplyRemoteMergesByVersionAndKeepsOrigin) {
  auto r = OpenReplica(Options());
  const Timestamp t1 = Timestamp::FromParts(kStartMs - 1000, 0);
  const Timestamp t2 = Timestamp::FromParts(kStartMs - 500, 0);
  std::vector<KeyedRecord> recs = {
      {"m", "k", "new", Version{t2, 0xb2}, false},
      {"m", "k", "old", Version{t1, 0xc3}, false},  // older: ignored
      {"m", "gone", "", Version{t1, 0xc3}, true},
  };
  auto res = r->ApplyRemote(recs, 0xb2);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->applied, 2u);
  EXPECT_EQ(res->ignored, 1u);
  auto got = r->Get("m", "k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "new");
  EXPECT_EQ(got->version.origin, 0xb2u);

  // Re-applying is idempotent: nothing wins, nothing is sequenced.
  auto again = r->ApplyRemote(recs, 0xb2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->applied, 0u);
  auto rows = r->ReadOplog(0, 100);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].version.origin, 0xb2u);  // origin kept, for transitive flow

  // A later local write beats what we learned.
  auto local = r->Put("m", "k", "mine");
  ASSERT_TRUE(local.ok());
  EXPECT_GT(*local, (Version{t2, 0xb2}));
}

TEST_F(ReplicaTest, RemoteTimestampFromTheFutureRaisesTheClock) {
  auto r = OpenReplica(Options());
  const Timestamp ahead = Timestamp::FromParts(kStartMs + 30'000, 5);
  KeyedRecord rec{"m", "k", "v", Version{ahead, 0xb2}, false};
  ASSERT_TRUE(r->ApplyRemote({&rec, 1}, 0xb2).ok());
  auto local = r->Put("m", "other", "v");
  ASSERT_TRUE(local.ok());
  EXPECT_GT(local->hlc, ahead);
}

TEST_F(ReplicaTest, RemoteBatchRaisesTheClockPastItsNewestTimestampInAnyPosition) {
  auto r = OpenReplica(Options());
  const Timestamp newest = Timestamp::FromParts(kStartMs + 30'000, 7);
  std::vector<KeyedRecord> recs = {
      {"m", "a", "v", Version{Timestamp::FromParts(kStartMs + 10'000, 0), 0xb2}, false},
      {"m", "b", "v", Version{newest, 0xb2}, false},
      {"m", "c", "v", Version{Timestamp::FromParts(kStartMs + 20'000, 0), 0xb2}, false},
  };
  ASSERT_TRUE(r->ApplyRemote(recs, 0xb2).ok());
  EXPECT_EQ(r->LastTimestamp(), newest);
  auto local = r->Put("m", "other", "v");
  ASSERT_TRUE(local.ok());
  EXPECT_GT(local->hlc, newest);
}

TEST_F(ReplicaTest, ClockOffsetBeyondLimitInTheMiddleRefusesTheWholeBatch) {
  auto r = OpenReplica(Options());
  std::vector<KeyedRecord> recs = {
      {"m", "first", "v", Version{Timestamp::FromParts(kStartMs, 0), 0xb2}, false},
      {"m", "far", "v", Version{Timestamp::FromParts(kStartMs + 90'000, 0), 0xb2}, false},
      {"m", "last", "v", Version{Timestamp::FromParts(kStartMs + 1'000, 0), 0xb2}, false},
  };
  const Timestamp before = r->LastTimestamp();
  Status s = r->ApplyRemote(recs, 0xb2).status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("90.0 s"), std::string::npos) << s.message();
  EXPECT_EQ(r->LastTimestamp(), before);
  EXPECT_TRUE(r->Get("m", "first").status().IsNotFound());
  EXPECT_TRUE(r->Get("m", "last").status().IsNotFound());
}

TEST_F(ReplicaTest, ClockOffsetBeyondLimitRefusesTheWholeBatch) {
  auto r = OpenReplica(Options());
  std::vector<KeyedRecord> recs = {
      {"m", "fine", "v", Version{Timestamp::FromParts(kStartMs, 0), 0xb2}, false},
      {"m", "far", "v", Version{Timestamp::FromParts(kStartMs + 61'000, 0), 0xb2}, false},
  };
  const Timestamp before = r->LastTimestamp();
  Status s = r->ApplyRemote(recs, 0xb2).status();
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("00000000000000b2"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("61.0 s"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("peer peer"), std::string::npos) << s.message();
  EXPECT_EQ(r->LastTimestamp(), before);
  EXPECT_TRUE(r->Get("m", "fine").status().IsNotFound());
}

TEST_F(ReplicaTest, EqualVersionsWithDifferentBytesPickTheSameWinnerEverywhere) {
  const Version v{Timestamp::FromParts(kStartMs, 1), 0xb2};
  KeyedRecord a{"m", "k", "apple", v, false};
  KeyedRecord b{"m", "k", "banana", v, false};
  auto r1 = OpenReplica(Options(kNode, "/db1"));
  auto r2 = OpenReplica(Options(kNode, "/db2"));
  ASSERT_TRUE(r1->ApplyRemote({&a, 1}, 0xb2).ok());
  ASSERT_TRUE(r1->ApplyRemote({&b, 1}, 0xb2).ok());
  ASSERT_TRUE(r2->ApplyRemote({&b, 1}, 0xb2).ok());
  ASSERT_TRUE(r2->ApplyRemote({&a, 1}, 0xb2).ok());
  EXPECT_EQ(r1->Get("m", "k")->value, r2->Get("m", "k")->value);
}

// Random writes by three nodes reach fresh replicas in random orders, with
// duplicates and in random batch splits; every replica must end in the state
// an oracle computes: per key, the greatest version (ties by content digest
// cannot arise here: every version is unique).
TEST_F(ReplicaTest, LwwMergeMatchesOracleUnderAnyDelivery) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_LWW_SEED", 20261122);
  SeededRandom rng(seed);
  std::vector<KeyedRecord> writes;
  std::map<std::string, KeyedRecord> oracle;
  for (int i = 0; i < 400; ++i) {
    KeyedRecord w;
    w.map = "m";
    w.key = "k" + std::to_string(rng.Uniform(40));
    w.version = Version{Timestamp::FromParts(kStartMs - 5000 + rng.Uniform(4000), rng.Uniform(3)),
                        0xb0 + rng.Uniform(3)};
    w.tombstone = rng.Bernoulli(0.2);
    w.value = w.tombstone ? "" : "v" + std::to_string(i);
    // Skip exact version collisions so the oracle's answer is unambiguous.
    bool dup = false;
    for (const auto& prev : writes) dup |= prev.key == w.key && prev.version == w.version;
    if (dup) continue;
    writes.push_back(w);
    auto it = oracle.find(w.key);
    if (it == oracle.end() || it->second.version < w.version) oracle[w.key] = w;
  }
  std::string expected;
  for (const auto& [key, w] : oracle) {
    if (w.tombstone) continue;
    if (!expected.empty()) expected += ' ';
    expected += key + "=" + w.value;
  }
  for (int replica = 0; replica < 6; ++replica) {
    std::vector<KeyedRecord> delivery = writes;
    for (size_t i = 0; i < writes.size() / 4; ++i) {
      delivery.push_back(writes[rng.Uniform(writes.size())]);  // duplicates
    }
    for (size_t i = delivery.size() - 1; i > 0; --i) {
      std::swap(delivery[i], delivery[rng.Uniform(i + 1)]);
    }
    auto r = OpenReplica(Options(kNode, "/lww" + std::to_string(replica)));
    for (size_t i = 0; i < delivery.size();) {
      const size_t n = std::min<size_t>(1 + rng.Uniform(20), delivery.size() - i);
      ASSERT_TRUE(r->ApplyRemote({delivery.data() + i, n}, 0xb0).ok());
      i += n;
    }
    EXPECT_EQ(Render(*r, "m"), expected) << "seed " << seed << " replica " << replica;
    for (const auto& [key, w] : oracle) {
      auto got = r->Get("m", key);
      if (w.tombstone) {
        EXPECT_TRUE(got.status().IsNotFound());
      } else {
        ASSERT_TRUE(got.ok());
        EXPECT_EQ(got->version, w.version) << "seed " << seed;
      }
    }
  }
}

TEST_F(ReplicaTest, RestartWithClockSetBackKeepsTimestampsAndSeqsGrowing) {
  Version last;
  uint64_t last_seq = 0;
  {
    auto r = OpenReplica(Options());
    for (int i = 0; i < 10; ++i) last = *r->Put("m", "k" + std::to_string(i), "v");
    last_seq = r->Stats()->oplog_last_seq;
    // Prune everything away: the next seq must still not repeat.
    ASSERT_TRUE(r->AddPeer(0xb2).ok());
    ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(0xb2, last_seq).ok());
    auto pruned = r->PruneOplog();
    ASSERT_TRUE(pruned.ok());
    EXPECT_EQ(pruned->rows_pruned, 10u);
  }
  clock_.Rewind(3'600'000);  // an hour back
  auto r = OpenReplica(Options());
  auto v = r->Put("m", "after", "v");
  ASSERT_TRUE(v.ok());
  EXPECT_GT(*v, last);
  auto rows = r->ReadOplog(0, 10);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].seq, last_seq + 1);
  EXPECT_EQ(r->Stats()->keys, 11u);
}

// The Merkle root depends only on the set of (map, key, version, tombstone):
// the same records in any order give the same root, one different version a
// different root, and values never enter it.
TEST_F(ReplicaTest, MerkleRootIsOrderIndependentAndTracksVersions) {
  std::vector<KeyedRecord> recs;
  for (int i = 0; i < 200; ++i) {
    recs.push_back(
        {"m" + std::to_string(i % 3), "k" + std::to_string(i), "v",
         Version{Timestamp::FromParts(kStartMs - 1000 + static_cast<uint64_t>(i), 0), 0xb2},
         i % 7 == 0});
    if (recs.back().tombstone) recs.back().value.clear();
  }
  auto r1 = OpenReplica(Options(kNode, "/m1"));
  auto r2 = OpenReplica(Options(kNode, "/m2"));
  EXPECT_EQ(r1->MerkleRoot(), r2->MerkleRoot());  // both empty
  EXPECT_TRUE(r1->MerkleRoot().IsZero());
  ASSERT_TRUE(r1->ApplyRemote(recs, 0xb2).ok());
  std::vector<KeyedRecord> reversed(recs.rbegin(), recs.rend());
  for (size_t i = 0; i < reversed.size(); i += 17) {
    const size_t n = std::min<size_t>(17, reversed.size() - i);
    ASSERT_TRUE(r2->ApplyRemote({reversed.data() + i, n}, 0xb2).ok());
  }
  EXPECT_EQ(r1->MerkleRoot(), r2->MerkleRoot());
  EXPECT_FALSE(r1->MerkleRoot().IsZero());

  // Same version, different value bytes (a forged tie): the metadata root is
  // unchanged, by design; the value never enters the tree.
  KeyedRecord newer = recs[5];
  newer.version.hlc = Timestamp::FromParts(kStartMs, 9);
  newer.value = "changed";
  newer.tombstone = false;
  ASSERT_TRUE(r2->ApplyRemote({&newer, 1}, 0xb2).ok());
  EXPECT_NE(r1->MerkleRoot(), r2->MerkleRoot());
  ASSERT_TRUE(r1->ApplyRemote({&newer, 1}, 0xb2).ok());
  EXPECT_EQ(r1->MerkleRoot(), r2->MerkleRoot());

  // Roots survive a reopen (loaded from the persisted leaves).
  const Digest128 root = r1->MerkleRoot();
  r1.reset();
  r1 = OpenReplica(Options(kNode, "/m1"));
  EXPECT_EQ(r1->MerkleRoot(), root);
  auto scrub = r1->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
  EXPECT_EQ(scrub->records, 200u);
}

// Merkle leaves are checkpointed a page of 64 at a time: writes over most
// buckets leave at most one row per page, each with 64 leaves. A page row
// that does not hold its page's leaves is corruption at open, naming it.
// WriteBatch copies its ops into one growing buffer; every op must read back
// whole after the buffer moved many times, deletes with an empty value.
TEST(WriteBatchTest, OpsReadBackAfterTheBufferGrows) {
  WriteBatch batch;
  for (int i = 0; i < 500; ++i) {
    const std::string key = "key-" + std::to_string(i);
    if (i % 3 == 0) {
      batch.Delete("map" + std::to_string(i % 4), key);
    } else {
      batch.Put("map" + std::to_string(i % 4), key, std::string(static_cast<size_t>(i), 'x'));
    }
  }
  ASSERT_EQ(batch.size(), 500u);
  for (int i = 0; i < 500; ++i) {
    const WriteBatch::Op op = batch.op(static_cast<size_t>(i));
    EXPECT_EQ(op.map, "map" + std::to_string(i % 4));
    EXPECT_EQ(op.key, "key-" + std::to_string(i));
    EXPECT_EQ(op.tombstone, i % 3 == 0);
    EXPECT_EQ(op.value, i % 3 == 0 ? std::string() : std::string(static_cast<size_t>(i), 'x'));
  }
}

// ReplicaOptions::write_buffer_bytes reaches LevelDB: the same 2 MiB of
// writes leave level-0 tables behind with a 256 KiB memtable and none with a
// 64 MiB one (all of it still in the memtable and its log).
TEST_F(ReplicaTest, WriteBufferSizeDecidesWhenTablesAreWritten) {
  const auto tables_after_writes = [&](const std::string& path, size_t write_buffer) {
    ReplicaOptions o = Options(kNode, path);
    o.durability = Durability::kRelaxed;
    o.write_buffer_bytes = write_buffer;
    auto r = OpenReplica(std::move(o));
    if (r == nullptr) return -1;
    for (int b = 0; b < 20; ++b) {
      WriteBatch batch;
      for (int i = 0; i < 100; ++i) {
        batch.Put("m", "k" + std::to_string(b * 100 + i), std::string(1000, 'v'));
      }
      EXPECT_TRUE(r->Write(batch).ok());
    }
    std::vector<std::string> children;
    EXPECT_TRUE(env_->GetChildren(path, &children).ok());
    return static_cast<int>(std::count_if(children.begin(), children.end(), [](const auto& c) {
      return c.size() > 4 && c.substr(c.size() - 4) == ".ldb";
    }));
  };
  EXPECT_GT(tables_after_writes("/small", size_t{256} << 10), 0);
  EXPECT_EQ(tables_after_writes("/large", size_t{64} << 20), 0);
}

// Tree-diff reads split across threads (diff_read_threads) must return
// exactly what one thread reads: the same summaries in bucket order, the same
// records in key-hash order, and under a byte budget the same prefix, never
// skipping a hash a slice stopped before.
TEST_F(ReplicaTest, DiffReadsInParallelSlicesMatchOneThread) {
  std::vector<uint64_t> hashes;
  {
    auto r = OpenReplica(Options());
    ASSERT_NE(r, nullptr);
    for (int i = 0; i < 3000; ++i) {
      const std::string key = "k" + std::to_string(i);
      // Mixed sizes, so slices spend a byte budget at different paces.
      const std::string value(static_cast<size_t>(1 + (i * 37) % 900), 'v');
      ASSERT_TRUE(r->Put("m", key, value).ok());
      hashes.push_back(KeyHash("m", key));
      if (i % 7 == 0) {
        ASSERT_TRUE(r->Delete("m", key).ok());
      }
    }
  }
  std::sort(hashes.begin(), hashes.end());
  std::vector<uint32_t> buckets(4096);
  std::iota(buckets.begin(), buckets.end(), 0);
  struct Reads {
    std::vector<msg::SummaryEntry> entries;
    std::vector<uint32_t> counts;
    std::vector<std::pair<size_t, std::vector<KeyedRecord>>> records;  // per budget
  };
  const std::vector<size_t> budgets = {1, 5'000, 100'000, 400'000, SIZE_MAX};
  const auto read = [&](uint32_t threads) {
    ReplicaOptions o = Options();
    o.diff_read_threads = threads;
    auto r = OpenReplica(std::move(o));
    Reads out;
    if (r == nullptr) return out;
    const SyncStore& store = *r;  // the reads the sync core makes
    EXPECT_TRUE(store.BucketSummaries(buckets, &out.entries, &out.counts).ok());
    for (size_t budget : budgets) {
      std::vector<KeyedRecord> records;
      auto done = store.RecordsByKeyHash(hashes, budget, &records);
      EXPECT_TRUE(done.ok()) << done.status().ToString();
      out.records.emplace_back(done.ok() ? *done : 0, std::move(records));
    }
    return out;
  };
  const Reads one = read(1);
  ASSERT_EQ(one.counts.size(), buckets.size());
  ASSERT_FALSE(one.entries.empty());
  // Budgets below the total stop early; the last reads every hash (tombstones
  // included, as the index holds them).
  EXPECT_EQ(one.records.front().first, 1u);
  EXPECT_LT(one.records[2].first, hashes.size());
  EXPECT_EQ(one.records.back().first, hashes.size());
  EXPECT_EQ(one.records.back().second.size(), hashes.size());
  for (uint32_t threads : {2u, 3u, 8u}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const Reads many = read(threads);
    EXPECT_EQ(many.entries, one.entries);
    EXPECT_EQ(many.counts, one.counts);
    ASSERT_EQ(many.records.size(), one.records.size());
    for (size_t b = 0; b < budgets.size(); ++b) {
      SCOPED_TRACE("budget " + std::to_string(budgets[b]));
      EXPECT_EQ(many.records[b].first, one.records[b].first);
      EXPECT_TRUE(many.records[b].second == one.records[b].second);
    }
  }
}

TEST_F(ReplicaTest, LeavesAreCheckpointedInPages) {
  uint32_t leaf_count = 0;
  {
    auto r = OpenReplica(Options());
    const SyncStoreInfo info = static_cast<const SyncStore&>(*r).Info();
    leaf_count = uint32_t{1} << (info.tree_fanout_bits * info.tree_depth);
    WriteBatch batch;
    for (int i = 0; i < 5000; ++i) batch.Put("m", "k" + std::to_string(i), "v");
    ASSERT_TRUE(r->Write(batch).ok());
  }
  std::string last_key, last_value;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto it = store->NewIterator();
    uint32_t pages = 0;
    for (it->Seek(std::string(1, rows::kMerklePrefix));
         it->Valid() && it->key()[0] == rows::kMerklePrefix; it->Next()) {
      uint32_t page = 0;
      ASSERT_TRUE(rows::ParseMerklePageKey(it->key(), &page));
      auto leaves = rows::DecodeLeafPage(it->value());
      ASSERT_TRUE(leaves.ok());
      EXPECT_EQ(leaves->size(), rows::kLeavesPerPage);
      ++pages;
      last_key = std::string(it->key());
      last_value = std::string(it->value());
    }
    // 5000 keys over 65,536 buckets touch most of the 1,024 pages.
    EXPECT_LE(pages, leaf_count / rows::kLeavesPerPage);
    EXPECT_GT(pages, leaf_count / rows::kLeavesPerPage / 2);
    auto leaves = rows::DecodeLeafPage(last_value);
    ASSERT_TRUE(leaves.ok());
    leaves->pop_back();
    Batch b;
    b.Put(last_key, rows::EncodeLeafPage(*leaves));
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  auto r = Replica::Open(Options());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("Merkle page row"), std::string::npos)
      << r.status().ToString();
}

TEST_F(ReplicaTest, ScrubFindsATamperedLeafAndAMissingIndexRow) {
  {
    auto r = OpenReplica(Options());
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
    auto clean = r->Scrub();
    ASSERT_TRUE(clean.ok());
    EXPECT_TRUE(clean->ok());
  }
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto it = store->NewIterator();
    it->Seek(std::string(1, rows::kMerklePrefix));
    ASSERT_TRUE(it->Valid());
    const std::string page_key(it->key());
    auto leaves = rows::DecodeLeafPage(it->value());
    ASSERT_TRUE(leaves.ok());
    ASSERT_GE(leaves->size(), 2u);
    it->Seek(std::string(1, rows::kHashIndexPrefix));
    ASSERT_TRUE(it->Valid());
    const std::string index_key(it->key());
    it.reset();
    (*leaves)[0].digest.hi ^= 0x5a;  // one leaf's digest is wrong,
    (*leaves)[1].live += 1;          // another's count
    Batch b;
    b.Put(page_key, rows::EncodeLeafPage(*leaves));
    b.Delete(index_key);
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  auto r = OpenReplica(Options());
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_FALSE(scrub->ok());
  EXPECT_EQ(scrub->leaf_mismatches, 2u);
  EXPECT_EQ(scrub->index_mismatches, 1u);
  EXPECT_NE(scrub->stored_root, scrub->rebuilt_root);
}

// Once a process has written a little, writes to keys the presence filter
// rules out skip the read-before-write. Keys stored by an earlier process must
// never be ruled out: overwriting them keeps the counts and the tree exact.
TEST_F(ReplicaTest, PresenceFilterNeverHidesAStoredKey) {
  {
    auto r = OpenReplica(Options());
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(r->Put("m", "old" + std::to_string(i), "v").ok());
  }
  auto r = OpenReplica(Options());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(r->Put("m", "new" + std::to_string(i), "v").ok());
  // The filter is built by now; overwrite and delete keys from the first process.
  for (int i = 0; i < 500; i += 2) ASSERT_TRUE(r->Put("m", "old" + std::to_string(i), "w").ok());
  for (int i = 1; i < 500; i += 10) ASSERT_TRUE(r->Delete("m", "old" + std::to_string(i)).ok());
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 600u - 50u);
  EXPECT_EQ(stats->tombstones, 50u);
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok()) << "leaf mismatches " << scrub->leaf_mismatches;
}

// The filter of a reopened replica is built by a background scan while
// writes go on. Keys written during the scan are invisible to it, so the
// leader adds them to the new filter before it serves: overwriting them (and
// the keys of the first process) afterwards is an update each time, and the
// counts and the tree stay exact.
TEST_F(ReplicaTest, KeysWrittenWhileTheFilterIsBuiltAreNeverHidden) {
  constexpr int kOld = 50'000, kNew = 3'000, kPerBatch = 10;
  {
    auto r = OpenReplica(Options());
    for (int start = 0; start < kOld; start += 1000) {
      WriteBatch batch;
      for (int i = start; i < start + 1000; ++i) batch.Put("m", "old" + std::to_string(i), "v");
      ASSERT_TRUE(r->Write(batch).ok());
    }
  }
  auto r = OpenReplica(Options());
  // The first 79 batches pass 781 ops (one per 64 stored keys) and start the
  // scan; the rest race it.
  for (int start = 0; start < kNew; start += kPerBatch) {
    WriteBatch batch;
    for (int i = start; i < start + kPerBatch; ++i) batch.Put("m", "new" + std::to_string(i), "v");
    ASSERT_TRUE(r->Write(batch).ok());
  }
  std::map<ChangeKind, int> kinds;
  r->Subscribe("m", [&](const ChangeEvent& e) { ++kinds[e.kind]; });
  // Overwrite every new key and every tenth old one, in batches that keep
  // coming until well after the scan finished.
  for (int round = 0; round < 3; ++round) {
    for (int start = 0; start < kNew; start += kPerBatch) {
      WriteBatch batch;
      for (int i = start; i < start + kPerBatch; ++i) {
        batch.Put("m", "new" + std::to_string(i), "w" + std::to_string(round));
        batch.Put("m", "old" + std::to_string(i * 10 + round), "w");
      }
      ASSERT_TRUE(r->Write(batch).ok());
    }
  }
  EXPECT_EQ(kinds[ChangeKind::kCreate], 0);
  EXPECT_EQ(kinds[ChangeKind::kUpdate], 3 * 2 * kNew);
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, uint64_t{kOld + kNew});
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok()) << "leaf mismatches " << scrub->leaf_mismatches;
}

// A clean close checkpoints: the next open replays nothing and has the same
// tree and counts. Checkpoints also come every checkpoint_rows_max oplog rows
// and every checkpoint_interval_ms, so a later open replays only the tail.
TEST_F(ReplicaTest, CleanCloseCheckpointsAndOpenReplaysNothing) {
  Digest128 root;
  {
    auto r = OpenReplica(Options());
    for (int i = 0; i < 300; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
    for (int i = 0; i < 300; i += 3) ASSERT_TRUE(r->Delete("m", "k" + std::to_string(i)).ok());
    root = r->MerkleRoot();
    EXPECT_EQ(r->Stats()->recovered_oplog_rows, 0u);  // a fresh database
  }
  auto r = OpenReplica(Options());
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->recovered_oplog_rows, 0u);
  EXPECT_EQ(stats->recovered_buckets, 0u);
  EXPECT_EQ(stats->keys, 200u);
  EXPECT_EQ(stats->tombstones, 100u);
  EXPECT_EQ(stats->oplog_last_seq, 400u);
  EXPECT_EQ(r->MerkleRoot(), root);
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
}

// A clean close gives back the unused part of the HLC reservation, so opening
// and closing repeatedly (one CLI command after another) does not push the
// clock ahead of wall time by hlc_reserve_ms each time.
TEST_F(ReplicaTest, CleanReopenDoesNotRunTheClockAhead) {
  Version v;
  for (int i = 0; i < 50; ++i) {
    auto r = OpenReplica(Options());
    v = *r->Put("m", "k", "v");
  }
  EXPECT_LT(v.hlc.physical_ms(), kStartMs + 100) << v.hlc.ToString();
}

TEST_F(ReplicaTest, RefusesForeignAndUnknownDatabases) {
  { auto r = OpenReplica(Options()); }
  auto other = Replica::Open(Options(0xbeef));
  ASSERT_FALSE(other.ok());
  EXPECT_TRUE(other.status().IsRefused());
  EXPECT_NE(other.status().message().find("belongs to node"), std::string::npos);

  // Rewrite the schema version to one from the future.
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Batch b;
    b.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(99));
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  auto future = Replica::Open(Options());
  ASSERT_FALSE(future.ok());
  EXPECT_NE(future.status().message().find("schema version 99"), std::string::npos)
      << future.status().message();
}

// Version 3 wrote one oplog row per seq; this build reads only packed rows
// (version 4 on), so a version 3 database is refused, saying both versions.
TEST_F(ReplicaTest, RefusesAVersion3Database) {
  { auto r = OpenReplica(Options()); }
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Batch b;
    b.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(3));
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  ASSERT_EQ(rows::kSchemaVersion, 5u);
  auto old = Replica::Open(Options());
  ASSERT_FALSE(old.ok());
  EXPECT_TRUE(old.status().IsRefused());
  EXPECT_EQ(old.status().message(),
            "database /db has schema version 3; this build reads version 5");
}

// MemEnv does not lock files, so this one runs on the real file system.
TEST_F(ReplicaTest, HeldDatabaseIsInUse) {
  const std::string dir = testing::MakeTempDir("tidemap-lock");
  ReplicaOptions o = Options(kNode, dir + "/db");
  o.env = nullptr;
  auto r = OpenReplica(o);
  auto second = Replica::Open(o);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsUnavailable()) << second.status().ToString();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos);
  r.reset();
  EXPECT_TRUE(Replica::Open(o).ok());  // released on close
  std::filesystem::remove_all(dir);
}

TEST_F(ReplicaTest, CorruptRecordIsReportedNeverServed) {
  { ASSERT_TRUE(OpenReplica(Options())->Put("m", "victim", "precious").ok()); }
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    const std::string row_key = rows::RecordKey("m", "victim");
    auto bytes = store->Get(row_key);
    ASSERT_TRUE(bytes.ok());
    std::string flipped = *bytes;
    flipped.back() ^= 0x01;  // one bit of the value
    Batch b;
    b.Put(row_key, flipped);
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  auto r = OpenReplica(Options());
  auto got = r->Get("m", "victim");
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.status().IsCorruption());
  EXPECT_NE(got.status().message().find("victim"), std::string::npos);
  EXPECT_TRUE(r->Scan("m", "", std::nullopt, 10).status().IsCorruption());
}

// Eight threads write concurrently through the group-commit pipeline: every
// write gets a distinct version and a distinct seq, the seqs are exactly
// 1..N, and every oplog row matches the record it describes.
TEST_F(ReplicaTest, ConcurrentWritersGetDistinctVersionsAndContiguousSeqs) {
  auto r = OpenReplica(Options());
  const std::vector<OplogEntry> rows = WriteFromThreads(r.get(), 8, 200, 50);
  // The last row of each key carries the key's stored version.
  std::map<std::string, Version> last_by_key;
  for (const OplogEntry& e : rows) last_by_key[e.key] = e.version;
  for (const auto& [key, v] : last_by_key) EXPECT_EQ(r->Get("m", key)->version, v);
  EXPECT_EQ(r->Stats()->keys, 8u * 50u);
}

// Durable writers wait for their group's commit by yielding the CPU in a loop
// (group_commit_spin_max_us), then asleep once that budget is spent. With
// commits slowed to 2 ms: 0 always sleeps, 100 us spins and then sleeps, and
// 1 s spins through (the budget is twice a recent commit). In each, every
// write returns with a distinct version, the seqs are exactly 1..N, and
// writers share commits.
TEST_F(ReplicaTest, SyncWritersReturnWhetherTheySpinOrSleep) {
  for (uint32_t spin_us : {0u, 100u, 1'000'000u}) {
    SCOPED_TRACE("group_commit_spin_max_us " + std::to_string(spin_us));
    testing::FaultEnv env(env_.get());
    std::atomic<int> log_syncs{0};
    env.SetSyncHook([&](const std::string& fname) {
      if (fname.size() < 4 || fname.substr(fname.size() - 4) != ".log") return;
      ++log_syncs;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    });
    ReplicaOptions o = Options(kNode, "/db-spin" + std::to_string(spin_us));
    o.env = &env;
    o.durability = Durability::kSync;
    o.group_commit_spin_max_us = spin_us;
    auto r = OpenReplica(std::move(o));
    ASSERT_NE(r, nullptr);
    log_syncs = 0;
    WriteFromThreads(r.get(), 8, 25, 25);
    EXPECT_EQ(r->Stats()->keys, 8u * 25u);
    // Grouped: far fewer syncs than writes (one per write would be 200).
    EXPECT_LT(log_syncs.load(), 8 * 25 / 2);
  }
}

// In sync mode a group's leader waits for the threads of the previous group
// to queue again. Threads B and C commit together; then B writes at once and
// C 5 ms later. B leads, waits for C (up to half of a 40 ms sync), and both
// share one sync. Without the wait B would commit alone and C after it.
TEST_F(ReplicaTest, SyncLeaderWaitsForTheLastGroupsThreads) {
  testing::FaultEnv env(env_.get());
  std::atomic<int> log_syncs{0};
  std::atomic<bool> first_sync_entered{false};
  env.SetSyncHook([&](const std::string& fname) {
    if (fname.size() < 4 || fname.substr(fname.size() - 4) != ".log") return;
    ++log_syncs;
    first_sync_entered = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
  });
  ReplicaOptions o = Options();
  o.env = &env;
  o.durability = Durability::kSync;
  o.group_commit_wait_max_us = 2'000'000;
  auto r = OpenReplica(std::move(o));
  ASSERT_NE(r, nullptr);
  log_syncs = 0;
  first_sync_entered = false;

  // A's commit holds the sync while B and C queue: they form the next group.
  std::thread a([&] { EXPECT_TRUE(r->Put("m", "a", "1").ok()); });
  while (!first_sync_entered) std::this_thread::yield();
  auto writer = [&](const std::string& key, std::chrono::milliseconds pause) {
    EXPECT_TRUE(r->Put("m", key + "1", "1").ok());
    std::this_thread::sleep_for(pause);
    EXPECT_TRUE(r->Put("m", key + "2", "2").ok());
  };
  std::thread b(writer, "b", std::chrono::milliseconds(0));
  std::thread c(writer, "c", std::chrono::milliseconds(5));
  a.join();
  b.join();
  c.join();
  // A alone, {B, C}, then {B, C} again.
  EXPECT_EQ(log_syncs.load(), 3);
  EXPECT_EQ(r->Stats()->keys, 5u);
}

// The oplog entries of one commit are packed into rows of up to 256: a
// 600-op batch after a single put leaves four LevelDB rows (1, 2..257,
// 258..513, 514..601), and reads cross their boundaries seamlessly.
TEST_F(ReplicaTest, AGroupOf600OpsMakesThreeOplogRows) {
  {
    auto r = OpenReplica(Options());
    ASSERT_TRUE(r->Put("m", "first", "v").ok());
    WriteBatch b;
    for (int i = 0; i < 600; ++i) b.Put("m", "k" + std::to_string(i), "v");
    ASSERT_TRUE(r->Write(b).ok());
    auto all = r->ReadOplog(0, 1000);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 601u);
    for (size_t i = 0; i < all->size(); ++i) {
      EXPECT_EQ((*all)[i].seq, i + 1);
      EXPECT_EQ((*all)[i].key, i == 0 ? "first" : "k" + std::to_string(i - 1));
    }
    auto across = r->ReadOplog(256, 2);
    ASSERT_TRUE(across.ok());
    ASSERT_EQ(across->size(), 2u);
    EXPECT_EQ((*across)[0].key, "k255");
    EXPECT_EQ((*across)[1].key, "k256");
    auto stats = r->Stats();
    EXPECT_EQ(stats->oplog_first_seq, 1u);
    EXPECT_EQ(stats->oplog_last_seq, 601u);
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::string row_keys;
  auto it = store->NewIterator();
  for (it->Seek(std::string(1, rows::kOplogPrefix));
       it->Valid() && it->key()[0] == rows::kOplogPrefix; it->Next()) {
    ASSERT_EQ(it->key().size(), 9u);
    if (!row_keys.empty()) row_keys += ' ';
    row_keys += std::to_string(DecodeFixed64BE(it->key().data() + 1));
  }
  ASSERT_TRUE(it->status().ok());
  EXPECT_EQ(row_keys, "1 257 513 601");
}

// A writer that fails midway leaves no oplog entry for the ops it staged,
// and the seqs stay contiguous: the next write takes the next seq.
TEST_F(ReplicaTest, AFailedWriterLeavesNoOplogEntry) {
  { ASSERT_TRUE(OpenReplica(Options())->Put("m", "a", "1").ok()); }
  {
    // A corrupt key-hash index row makes any write to m/bad fail.
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Batch b;
    b.Put(rows::HashIndexKey(KeyHash("m", "bad"), "m", "bad"), "garbage");
    ASSERT_TRUE(store->Write(&b, true).ok());
  }
  auto r = OpenReplica(Options());
  WriteBatch b;
  b.Put("m", "x", "1");
  b.Put("m", "bad", "1");
  EXPECT_TRUE(r->Write(b).status().IsCorruption());
  ASSERT_TRUE(r->Put("m", "y", "1").ok());
  auto rows = r->ReadOplog(0, 100);
  ASSERT_TRUE(rows.ok());
  std::string rendered;
  for (const OplogEntry& e : *rows) rendered += std::to_string(e.seq) + ":" + e.key + " ";
  EXPECT_EQ(rendered, "1:a 2:y ");
  EXPECT_TRUE(r->Get("m", "x").status().IsNotFound());
  EXPECT_EQ(r->Stats()->oplog_last_seq, 2u);
}

// ---------------------------------------------------------------------------
// Tombstone GC.

constexpr uint64_t kHorizonMs = 10'000;

// "m/a=1 m/b=⊥" over every stored key, tombstones included.
std::string RenderAll(const Replica& r) {
  std::string out;
  EXPECT_TRUE(r.ForEachKeyMeta([&](const KeyMeta& m) {
                 if (!out.empty()) out += ' ';
                 out += std::string(m.map) + "/" + std::string(m.key) + "=";
                 if (m.tombstone) {
                   out += "⊥";
                 } else {
                   out += r.Get(m.map, m.key)->value;
                 }
                 return true;
               }).ok());
  return out;
}

void ExpectScrubOk(Replica& r) {
  auto scrub = r.Scrub();
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  EXPECT_TRUE(scrub->ok()) << "leaf " << scrub->leaf_mismatches << " index "
                           << scrub->index_mismatches;
}

// A tombstone goes only when it is older than the horizon AND every known
// peer acknowledged its oplog row: each condition alone keeps it.
TEST_F(ReplicaTest, PurgeNeedsTheHorizonAndEveryPeersAck) {
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto r = OpenReplica(std::move(o));
  ASSERT_TRUE(r->AddPeer(0xb1).ok());
  ASSERT_TRUE(r->AddPeer(0xb2).ok());
  ASSERT_TRUE(r->Put("m", "a", "1").ok());     // seq 1
  const Version del_a = *r->Delete("m", "a");  // seq 2
  ASSERT_TRUE(r->Put("m", "b", "2").ok());     // seq 3
  const Version del_c = *r->Delete("m", "c");  // seq 4: a key never written
  ASSERT_TRUE(r->Delete("m", "d").ok());       // seq 5...
  ASSERT_TRUE(r->Put("m", "d", "back").ok());  // ...and a live version again
  EXPECT_EQ(RenderAll(*r), "m/a=⊥ m/b=2 m/c=⊥ m/d=back");

  // Every peer acknowledged everything, but nothing is old enough yet.
  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(0xb1, 6).ok());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(0xb2, 6).ok());
  auto young = r->PurgeTombstones();
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(young->purged, 0u);
  clock_.Advance(kHorizonMs - 1);
  EXPECT_EQ(r->PurgeTombstones()->purged, 0u);

  // Old enough, but 0xb3 (known, acknowledged nothing) holds them back.
  ASSERT_TRUE(r->AddPeer(0xb3).ok());
  clock_.Advance(2);
  auto held = r->PurgeTombstones();
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->purged, 0u);
  EXPECT_EQ(held->unacknowledged, 2u);  // a and c; d's tombstone is no longer stored
  EXPECT_EQ(held->watermark, Version{});

  // 0xb3 acknowledged a's row, not c's: only a's tombstone goes.
  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(0xb3, 3).ok());
  std::vector<std::string> purged;
  auto some = r->PurgeTombstones(
      [&](const KeyMeta& m) { purged.push_back(std::string(m.key) + "@" + m.version.ToString()); });
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->purged, 1u);
  EXPECT_EQ(some->unacknowledged, 1u);
  EXPECT_EQ(some->watermark, del_a);
  EXPECT_EQ(purged, std::vector<std::string>{"a@" + del_a.ToString()});
  EXPECT_EQ(RenderAll(*r), "m/b=2 m/c=⊥ m/d=back");
  ExpectScrubOk(*r);

  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(0xb3, 6).ok());
  EXPECT_EQ(r->PurgeTombstones()->purged, 1u);
  EXPECT_EQ(RenderAll(*r), "m/b=2 m/d=back");
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->tombstones, 0u);
  EXPECT_EQ(stats->keys, 2u);
  EXPECT_EQ(stats->tombstones_purged, 2u);
  EXPECT_EQ(stats->gc_watermark, del_c);
  ExpectScrubOk(*r);
  // Nothing left to purge; a second call changes nothing.
  EXPECT_EQ(r->PurgeTombstones()->purged, 0u);
}

// A removed peer no longer holds tombstones back; its cursor is gone.
TEST_F(ReplicaTest, RemovedPeerNoLongerHoldsBackThePurge) {
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto r = OpenReplica(std::move(o));
  ASSERT_TRUE(r->AddPeer(0xb1).ok());
  ASSERT_TRUE(r->Delete("m", "a").ok());
  clock_.Advance(kHorizonMs + 1);
  EXPECT_EQ(r->PurgeTombstones()->purged, 0u) << "0xb1 acknowledged nothing";
  ASSERT_TRUE(r->RemovePeer(0xb1).ok());
  EXPECT_EQ(r->PeerAcks()->count(0xb1), 0u);
  EXPECT_EQ(r->PurgeTombstones()->purged, 1u);
  EXPECT_TRUE(r->RemovePeer(0xb1).ok()) << "an unknown peer: nothing to do";
}

// With no known peer the horizon alone decides; a horizon of 0 never purges.
TEST_F(ReplicaTest, PurgeWithoutPeersUsesTheHorizonAloneAndZeroDisablesIt) {
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto lone = OpenReplica(std::move(o));
  ASSERT_TRUE(lone->Delete("m", "k").ok());
  ReplicaOptions never_opts = Options(kNode, "/never");
  never_opts.tombstone_horizon_ms = 0;
  auto never = OpenReplica(std::move(never_opts));
  ASSERT_TRUE(never->Delete("m", "k").ok());
  clock_.Advance(100 * kHorizonMs);
  EXPECT_EQ(lone->PurgeTombstones()->purged, 1u);
  EXPECT_EQ(never->PurgeTombstones()->purged, 0u);
  EXPECT_EQ(never->Stats()->tombstones, 1u);
}

// The watermark and the purge count are persisted with the purge; the tree
// reopens exact (the purge checkpointed it: nothing to replay).
TEST_F(ReplicaTest, GcWatermarkPersistsAcrossReopen) {
  Version del, watermark;
  Digest128 root;
  {
    ReplicaOptions o = Options();
    o.tombstone_horizon_ms = kHorizonMs;
    auto r = OpenReplica(std::move(o));
    ASSERT_TRUE(r->Put("m", "x", "1").ok());
    del = *r->Delete("m", "x");
    clock_.Advance(kHorizonMs + 1);
    auto p = r->PurgeTombstones();
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p->purged, 1u);
    watermark = r->gc_watermark();
    root = r->MerkleRoot();
  }
  EXPECT_EQ(watermark, del);
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto r = OpenReplica(std::move(o));
  EXPECT_EQ(r->gc_watermark(), del);
  EXPECT_EQ(r->Stats()->tombstones_purged, 1u);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 0u);
  EXPECT_EQ(r->MerkleRoot(), root);
  ExpectScrubOk(*r);
}

// Once a key's tombstone is purged, an older version of it from a peer must
// not come back. A tombstone changes nothing; a live version is answered by
// the delete, restored at the watermark (or, with StaleRecords::kDrop, not
// stored at all). The watermark is per Merkle bucket: an old version of
// another key of the same bucket is treated alike (taken for a late write),
// one of a key in another bucket is stored. A newer version is a write after
// the delete and is stored; a key still held merges by LWW as always.
TEST_F(ReplicaTest, OlderVersionOfAPurgedKeyIsNeverResurrected) {
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto r = OpenReplica(std::move(o));
  const Version held = *r->Put("m", "held", "v1");
  const Version old_live = *r->Put("m", "gone", "old");
  const Version del = *r->Delete("m", "gone");
  clock_.Advance(kHorizonMs + 1);
  ASSERT_EQ(r->PurgeTombstones()->purged, 1u);
  const Digest128 root = r->MerkleRoot();

  // A key that shares the bucket of "gone", and one that does not.
  const TreeShape shape;
  const uint32_t gone_bucket = BucketOf(KeyHash("m", "gone"), shape);
  std::string same_bucket;
  for (int i = 0; same_bucket.empty(); ++i) {
    const std::string k = "s" + std::to_string(i);
    if (BucketOf(KeyHash("m", k), shape) == gone_bucket) same_bucket = k;
  }
  ASSERT_NE(BucketOf(KeyHash("m", "elsewhere"), shape), gone_bucket);
  EXPECT_EQ(r->gc_watermark(KeyHash("m", same_bucket)), del);
  EXPECT_EQ(r->gc_watermark(KeyHash("m", "elsewhere")), Version{});

  const uint64_t peer = 0xfe;
  const Version late{old_live.hlc, peer};  // below the watermark
  const std::vector<KeyedRecord> incoming{{"m", "gone", "old", old_live, false},
                                          {"m", "gone", "", del, true},
                                          {"m", same_bucket, "late", late, false},
                                          {"m", "elsewhere", "late", late, false}};
  // Dropped: nothing but "elsewhere" changes.
  auto dropped = r->ApplyRemote(incoming, peer, StaleRecords::kDrop);
  ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
  EXPECT_EQ(dropped->applied, 1u);  // "elsewhere"
  EXPECT_EQ(dropped->stale, 2u);
  EXPECT_EQ(dropped->below_watermark_tombstones, 1u);
  EXPECT_EQ(dropped->first_stale, "map 'm', key 'gone' at " + old_live.ToString());
  EXPECT_EQ(dropped->first_stale_watermark, del);
  EXPECT_TRUE(r->Get("m", "gone").status().IsNotFound());
  EXPECT_EQ(RenderAll(*r), "m/elsewhere=late m/held=v1");
  EXPECT_EQ(r->Stats()->stale_records_dropped, 2u);
  ASSERT_TRUE(r->Delete("m", "elsewhere").ok());
  clock_.Advance(kHorizonMs + 1);
  ASSERT_EQ(r->PurgeTombstones()->purged, 1u);
  EXPECT_EQ(r->MerkleRoot(), root);

  // Redeleted (the default): the stale versions meet the delete again, at the
  // bucket's watermark, a version above them.
  std::vector<std::string> events;
  r->Subscribe("m", [&](const ChangeEvent& e) {
    events.push_back(std::string(ChangeKindName(e.kind)) + " " + std::string(e.key) + "@" +
                     e.version.ToString());
  });
  auto redeleted = r->ApplyRemote({incoming.data(), 3}, peer);
  ASSERT_TRUE(redeleted.ok());
  EXPECT_EQ(redeleted->applied, 0u);
  EXPECT_EQ(redeleted->stale, 2u);
  EXPECT_EQ(RenderAll(*r), "m/gone=⊥ m/held=v1 m/" + same_bucket + "=⊥");
  EXPECT_EQ(events, (std::vector<std::string>{"delete gone@" + del.ToString(),
                                              "delete " + same_bucket + "@" + del.ToString()}));
  // The restored deletes are this replica's doing: their oplog rows name no
  // peer they came from, so they stream back to the sender too.
  auto rows = r->ReadOplog(r->LastSeq() - 2, 2);
  ASSERT_TRUE(rows.ok());
  for (const OplogEntry& row : *rows) EXPECT_EQ(row.via, 0u);
  EXPECT_EQ(r->Stats()->stale_records_dropped, 4u);
  ExpectScrubOk(*r);

  // A held key at or below the watermark still merges by LWW.
  const Version newer_held{Timestamp::FromParts(held.hlc.physical_ms(), held.hlc.logical() + 1),
                           peer};
  ASSERT_LT(newer_held, del);
  auto merged =
      r->ApplyRemote(std::vector<KeyedRecord>{{"m", "held", "v2", newer_held, false}}, peer);
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(merged->applied, 1u);
  // A version above the watermark is a write after the delete: stored.
  const Version after{Timestamp::FromParts(clock_.NowMillis(), 0), peer};
  auto recreated =
      r->ApplyRemote(std::vector<KeyedRecord>{{"m", "gone", "new", after, false}}, peer);
  ASSERT_TRUE(recreated.ok());
  EXPECT_EQ(recreated->applied, 1u);
  EXPECT_EQ(RenderAll(*r), "m/gone=new m/held=v2 m/" + same_bucket + "=⊥");
  ExpectScrubOk(*r);
}

// A replica that purged its tombstones has the same tree as one that never
// held the deleted keys: after every replica purged, roots are equal.
TEST_F(ReplicaTest, PurgedTreeEqualsATreeThatNeverHeldTheKeys) {
  ReplicaOptions o = Options();
  o.tombstone_horizon_ms = kHorizonMs;
  auto r = OpenReplica(std::move(o));
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  for (int i = 0; i < 200; i += 3) ASSERT_TRUE(r->Delete("m", "k" + std::to_string(i)).ok());
  std::vector<KeyedRecord> live;
  ASSERT_TRUE(r->ForEachKeyMeta([&](const KeyMeta& m) {
                 if (!m.tombstone) live.push_back(**r->ReadRecord(m.map, m.key));
                 return true;
               }).ok());
  auto fresh = OpenReplica(Options(0xa2, "/fresh"));
  ASSERT_TRUE(fresh->ApplyRemote(live, kNode).ok());
  EXPECT_NE(r->MerkleRoot(), fresh->MerkleRoot());
  clock_.Advance(kHorizonMs + 1);
  EXPECT_EQ(r->PurgeTombstones()->purged, 67u);
  EXPECT_EQ(r->MerkleRoot(), fresh->MerkleRoot());
  ExpectScrubOk(*r);
}

}  // namespace
}  // namespace tidemap
