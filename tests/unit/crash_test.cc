// Proves crash safety of the replica on a fault-injecting Env that models a
// machine crash by dropping every byte not yet synced: in sync mode no
// acknowledged write is lost; in relaxed mode what is lost is a suffix; in
// both, no record exists without its oplog row, the counters match the rows,
// and the clock never reissues a timestamp even when it restarts set back. A
// failed write poisons the handle so later writes cannot be acknowledged and
// then lost. The Merkle leaves and counts are persisted only by checkpoints;
// the crashes here fall between checkpoints (the clock barely moves and far
// fewer than checkpoint_rows_max rows are written), so every reopen must
// replay the oplog tail to get them exact. Seeded; replay with TIDEMAP_CRASH_SEED.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <map>
#include <thread>

#include "tests/support/fault_env.h"
#include "tests/support/test_util.h"
#include <tidemap/base/random.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;
constexpr uint64_t kNode = 0xa1;

class CrashTest : public ::testing::Test {
 protected:
  CrashTest()
      : mem_(leveldb::NewMemEnv(leveldb::Env::Default())), fault_(mem_.get()), clock_(kStartMs) {}

  std::unique_ptr<Replica> Open(Durability d, uint64_t checkpoint_interval_ms = 1000,
                                uint64_t checkpoint_rows_max = 10'000) {
    ReplicaOptions o;
    o.path = "/db";
    o.env = &fault_;
    o.clock = &clock_;
    o.node_id = kNode;
    o.durability = d;
    o.checkpoint_interval_ms = checkpoint_interval_ms;
    o.checkpoint_rows_max = checkpoint_rows_max;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // A machine crash: from this instant nothing more reaches the disk (not even
  // what a clean close would write), then every unsynced byte is gone.
  void Crash(std::unique_ptr<Replica>* r) {
    fault_.SetWriteError(true);
    r->reset();
    fault_.SetWriteError(false);
    ASSERT_TRUE(fault_.DropUnsyncedData().ok());
  }

  // What the disk holds while no replica is open: the root of the persisted
  // leaf rows and the seq of the checkpoint that wrote them.
  struct Persisted {
    Digest128 leaf_root;
    uint64_t checkpoint_seq = 0;
  };
  Persisted ReadPersisted() {
    Persisted p;
    StoreOptions so;
    so.path = "/db";
    so.env = &fault_;
    auto store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return p;
    auto tree = MerkleTree::Create(TreeShape{});
    EXPECT_TRUE(tree.ok());
    auto it = (*store)->NewIterator();
    for (it->Seek(std::string(1, rows::kMerklePrefix));
         it->Valid() && it->key()[0] == rows::kMerklePrefix; it->Next()) {
      uint32_t page = 0;
      EXPECT_TRUE(rows::ParseMerklePageKey(it->key(), &page));
      auto leaves = rows::DecodeLeafPage(it->value());
      EXPECT_TRUE(leaves.ok());
      if (!leaves.ok()) continue;
      for (uint32_t i = 0; i < leaves->size(); ++i) {
        EXPECT_TRUE(tree->LoadLeaf(page * rows::kLeavesPerPage + i, (*leaves)[i].digest).ok());
      }
    }
    EXPECT_TRUE(it->status().ok());
    it.reset();
    tree->RecomputeInner();
    p.leaf_root = tree->Root();
    auto state = (*store)->Get(rows::MetaKey(rows::kMetaState));
    EXPECT_TRUE(state.ok());
    if (state.ok()) p.checkpoint_seq = *rows::DecodeU64(*state, "state");
    return p;
  }

  // Every stored record has an oplog row with its exact version, the counters
  // match the rows, and seqs are contiguous up to last_seq.
  static void CheckConsistent(Replica& r) {
    std::map<std::pair<std::string, std::string>, Version> by_key;
    uint64_t live = 0, tombs = 0;
    ASSERT_TRUE(r.ForEachKeyMeta([&](const KeyMeta& m) {
                   by_key[{std::string(m.map), std::string(m.key)}] = m.version;
                   (m.tombstone ? tombs : live) += 1;
                   return true;
                 }).ok());
    auto stats = r.Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->keys, live);
    EXPECT_EQ(stats->tombstones, tombs);
    auto rows = r.ReadOplog(0, 1'000'000);
    ASSERT_TRUE(rows.ok());
    std::map<std::pair<std::string, std::string>, Version> newest_row;
    uint64_t expect_seq = rows->empty() ? 0 : rows->front().seq;
    for (const OplogEntry& e : *rows) {
      EXPECT_EQ(e.seq, expect_seq++);
      newest_row[{e.map, e.key}] = e.version;
    }
    EXPECT_EQ(stats->oplog_last_seq, rows->empty() ? 0 : rows->back().seq);
    EXPECT_EQ(newest_row, by_key) << "a record without its oplog row, or the reverse";
    // The stored Merkle tree and key-hash index equal a full rebuild.
    auto scrub = r.Scrub();
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_TRUE(scrub->ok()) << "leaf mismatches " << scrub->leaf_mismatches << ", index "
                             << scrub->index_mismatches;
    EXPECT_EQ(scrub->records, live + tombs);
  }

  std::unique_ptr<leveldb::Env> mem_;
  testing::FaultEnv fault_;
  ManualClock clock_;
};

TEST_F(CrashTest, SyncModeLosesNoAcknowledgedWrite) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_CRASH_SEED", 7);
  SeededRandom rng(seed);
  std::map<std::string, std::string> acked;  // key -> value, "" = deleted
  auto r = Open(Durability::kSync);
  for (int round = 0; round < 20; ++round) {
    const int writes = 1 + static_cast<int>(rng.Uniform(30));
    for (int i = 0; i < writes; ++i) {
      const std::string key = "k" + std::to_string(rng.Uniform(50));
      clock_.Advance(rng.Uniform(3));
      if (rng.Bernoulli(0.2)) {
        ASSERT_TRUE(r->Delete("m", key).ok());
        acked[key] = "";
      } else {
        const std::string value = "v" + std::to_string(round) + "." + std::to_string(i);
        ASSERT_TRUE(r->Put("m", key, value).ok());
        acked[key] = value;
      }
    }
    Crash(&r);
    r = Open(Durability::kSync);
    ASSERT_NE(r, nullptr);
    // The last checkpoint is the previous round's scrub (or none): this
    // round's rows are the tail that the open replayed.
    EXPECT_EQ(r->Stats()->recovered_oplog_rows, static_cast<uint64_t>(writes));
    for (const auto& [key, value] : acked) {
      auto got = r->Get("m", key);
      if (value.empty()) {
        EXPECT_TRUE(got.status().IsNotFound()) << key << " seed " << seed;
      } else {
        ASSERT_TRUE(got.ok()) << key << " lost after crash, seed " << seed;
        EXPECT_EQ(got->value, value) << "seed " << seed;
      }
    }
    CheckConsistent(*r);
  }
}

// The expiry index entries of TTL'd puts after a checkpoint are held in
// memory until the next one; after a crash the open finds them again in the
// oplog tail (only for the versions still stored), so every expiry is
// announced once and scrub finds the index complete.
TEST_F(CrashTest, CrashBetweenCheckpointsKeepsTheExpiryIndex) {
  auto r = Open(Durability::kSync);
  ASSERT_TRUE(r->Put("m", "old", "v", PutOptions{500}).ok());
  r.reset();  // a clean close checkpoints: "old" is in a row
  r = Open(Durability::kSync);
  const uint64_t a_ms = r->Put("m", "a", "1", PutOptions{1000})->hlc.physical_ms() + 1000;
  ASSERT_TRUE(r->Put("m", "b", "2", PutOptions{1000}).ok());
  // The first b's entry is stale.
  const uint64_t b_ms = r->Put("m", "b", "2b", PutOptions{2000})->hlc.physical_ms() + 2000;
  Crash(&r);

  r = Open(Durability::kSync);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 3u);
  std::vector<std::string> events;
  r->Subscribe("", [&](const ChangeEvent& e) {
    if (e.kind == ChangeKind::kExpire) events.push_back(std::string(e.key));
  });
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok()) << "index " << scrub->index_mismatches;
  clock_.Advance(a_ms - clock_.NowMillis());
  auto first = r->ExpireRecords();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->expired, 2u);
  EXPECT_EQ(first->next_expiry_ms, b_ms);
  clock_.Advance(b_ms - clock_.NowMillis());
  EXPECT_EQ(r->ExpireRecords()->expired, 1u);
  EXPECT_EQ(events, (std::vector<std::string>{"old", "a", "b"}));
}

// Overwrites, deletes and new keys after a checkpoint, then a crash before the
// next one: the persisted leaves are stale, and the open must bring them (and
// the counts) exactly up to date from the oplog tail.
TEST_F(CrashTest, CrashBetweenCheckpointsReplaysTheOplogTail) {
  auto r = Open(Durability::kSync);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  r.reset();  // a clean close checkpoints
  r = Open(Durability::kSync);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 0u);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(r->Put("m", "k" + std::to_string(2 * i), "w").ok());
    ASSERT_TRUE(r->Delete("m", "k" + std::to_string(2 * i + 1)).ok());
    ASSERT_TRUE(r->Put("m", "n" + std::to_string(i), "v").ok());
  }
  const Digest128 root_before_crash = r->MerkleRoot();
  Crash(&r);

  const Persisted persisted = ReadPersisted();
  EXPECT_EQ(persisted.checkpoint_seq, 200u);
  r = Open(Durability::kSync);
  ASSERT_NE(r, nullptr);
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->recovered_oplog_rows, 150u);
  EXPECT_GT(stats->recovered_buckets, 0u);
  EXPECT_EQ(stats->oplog_last_seq, 350u);
  EXPECT_EQ(stats->keys, 200u);
  EXPECT_EQ(stats->tombstones, 50u);
  EXPECT_EQ(r->MerkleRoot(), root_before_crash);
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_EQ(r->MerkleRoot(), scrub->rebuilt_root);
  EXPECT_NE(persisted.leaf_root, scrub->rebuilt_root)
      << "the persisted leaves were already current: the replay proved nothing";
  CheckConsistent(*r);
}

// Groups whose oplog entries span several packed rows (a 600-op batch makes
// three) are replayed entry by entry after a crash.
TEST_F(CrashTest, CrashAfterPackedGroupsReplaysEveryEntry) {
  auto r = Open(Durability::kSync);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  r.reset();  // a clean close checkpoints
  r = Open(Durability::kSync);
  WriteBatch puts;
  for (int i = 0; i < 600; ++i) puts.Put("m", "n" + std::to_string(i), "v");
  ASSERT_TRUE(r->Write(puts).ok());
  WriteBatch deletes;
  for (int i = 0; i < 7; ++i) deletes.Delete("m", "k" + std::to_string(i));
  ASSERT_TRUE(r->Write(deletes).ok());
  const Digest128 root_before_crash = r->MerkleRoot();
  Crash(&r);
  EXPECT_EQ(ReadPersisted().checkpoint_seq, 10u);
  r = Open(Durability::kSync);
  ASSERT_NE(r, nullptr);
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->recovered_oplog_rows, 607u);
  EXPECT_EQ(stats->oplog_last_seq, 617u);
  EXPECT_EQ(stats->keys, 603u);
  EXPECT_EQ(stats->tombstones, 7u);
  EXPECT_EQ(r->MerkleRoot(), root_before_crash);
  CheckConsistent(*r);
  // The next seq follows on: no entry of the replayed rows is reissued.
  ASSERT_TRUE(r->Put("m", "after", "v").ok());
  EXPECT_EQ(r->Stats()->oplog_last_seq, 618u);
}

// A checkpoint rides on the first group commit checkpoint_rows_max rows, or
// checkpoint_interval_ms, after the last one; a crash replays only the rows since.
TEST_F(CrashTest, CheckpointsComeEveryRowsMaxRowsAndEveryInterval) {
  auto r = Open(Durability::kSync, /*checkpoint_interval_ms=*/1000, /*checkpoint_rows_max=*/10);
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  Crash(&r);
  EXPECT_EQ(ReadPersisted().checkpoint_seq, 20u);
  r = Open(Durability::kSync);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 5u);

  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r->Put("m", "t" + std::to_string(i), "v").ok());
  clock_.Advance(1000);
  ASSERT_TRUE(r->Put("m", "t3", "v").ok());  // seq 29 carries a checkpoint
  for (int i = 4; i < 6; ++i) ASSERT_TRUE(r->Put("m", "t" + std::to_string(i), "v").ok());
  Crash(&r);
  EXPECT_EQ(ReadPersisted().checkpoint_seq, 29u);
  r = Open(Durability::kSync);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 2u);
  EXPECT_EQ(r->Stats()->keys, 31u);
  CheckConsistent(*r);
}

// Relaxed mode: a crash keeps some groups since the checkpoint (those a synced
// HLC-bound write covered) and loses the rest; what survived is replayed.
TEST_F(CrashTest, RelaxedModeCrashBetweenCheckpointsReplaysWhatSurvived) {
  const uint64_t kHour = 3'600'000;  // no checkpoint by time in this test
  auto r = Open(Durability::kRelaxed, kHour);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  r.reset();
  r = Open(Durability::kRelaxed, kHour);
  SeededRandom rng(testing::SeedFromEnv("TIDEMAP_CRASH_SEED", 11));
  for (int i = 0; i < 300; ++i) {
    clock_.Advance(10);  // crosses the HLC reservation (a synced write) about every 100 writes
    const std::string key = "k" + std::to_string(rng.Uniform(150));
    if (rng.Bernoulli(0.3)) {
      ASSERT_TRUE(r->Delete("m", key).ok());
    } else {
      ASSERT_TRUE(r->Put("m", key, "w" + std::to_string(i)).ok());
    }
  }
  Crash(&r);
  const Persisted persisted = ReadPersisted();
  EXPECT_EQ(persisted.checkpoint_seq, 100u);
  r = Open(Durability::kRelaxed, kHour);
  ASSERT_NE(r, nullptr);
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->recovered_oplog_rows, 0u) << "nothing after the checkpoint survived";
  EXPECT_LT(stats->recovered_oplog_rows, 300u) << "the crash lost nothing";
  EXPECT_EQ(stats->oplog_last_seq, 100u + stats->recovered_oplog_rows);
  EXPECT_NE(persisted.leaf_root, r->MerkleRoot());
  CheckConsistent(*r);
}

// PruneOplog checkpoints first, so no row the next open must replay is gone.
TEST_F(CrashTest, PruneNeverDropsTheTailAfterTheCheckpoint) {
  constexpr uint64_t kPeer = 0xb2;
  auto r = Open(Durability::kSync);
  ASSERT_TRUE(r->AddPeer(kPeer).ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "v").ok());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(kPeer, 100).ok());
  auto pruned = r->PruneOplog();
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(pruned->rows_pruned, 100u);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "w").ok());
  Crash(&r);
  r = Open(Durability::kSync);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Stats()->recovered_oplog_rows, 10u);
  EXPECT_EQ(r->Stats()->keys, 100u);
  EXPECT_EQ(r->Stats()->oplog_last_seq, 110u);
  // (CheckConsistent expects an oplog row for every record: not after a prune.)
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  EXPECT_TRUE(scrub->ok()) << "leaf mismatches " << scrub->leaf_mismatches;
  EXPECT_EQ(scrub->records, 100u);
}

TEST_F(CrashTest, SyncModeConcurrentWritersLoseNothing) {
  auto r = Open(Durability::kSync);
  constexpr int kThreads = 8, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ASSERT_TRUE(r->Put("m", "t" + std::to_string(t) + "-" + std::to_string(i), "v").ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  Crash(&r);
  r = Open(Durability::kSync);
  EXPECT_EQ(r->Stats()->keys, uint64_t{kThreads * kPerThread});
  CheckConsistent(*r);
}

TEST_F(CrashTest, RelaxedModeLosesOnlyASuffixAndNeverReissuesTimestamps) {
  auto r = Open(Durability::kRelaxed);
  std::vector<std::pair<std::string, Version>> issued;
  for (int i = 0; i < 300; ++i) {
    auto v = r->Put("m", "k" + std::to_string(i), "v");
    ASSERT_TRUE(v.ok());
    issued.emplace_back("k" + std::to_string(i), *v);
  }
  Crash(&r);
  clock_.Rewind(3'600'000);  // and the machine comes back with its clock an hour behind
  r = Open(Durability::kRelaxed);
  CheckConsistent(*r);
  // What survived is a prefix of what was written.
  size_t survived = 0;
  while (survived < issued.size() && r->Get("m", issued[survived].first).ok()) ++survived;
  EXPECT_LT(survived, issued.size()) << "the crash lost nothing: this test proves nothing";
  for (size_t i = survived; i < issued.size(); ++i) {
    EXPECT_TRUE(r->Get("m", issued[i].first).status().IsNotFound()) << "hole at " << i;
  }
  // Even the lost writes' timestamps may have left the node: never reuse them.
  auto v = r->Put("m", "after", "v");
  ASSERT_TRUE(v.ok());
  EXPECT_GT(*v, issued.back().second);
}

TEST_F(CrashTest, FailedWritePoisonsTheHandleUntilReopen) {
  auto r = Open(Durability::kSync);
  ASSERT_TRUE(r->Put("m", "before", "1").ok());
  fault_.SetWriteError(true);
  Status s = r->Put("m", "during", "2").status();
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  fault_.SetWriteError(false);
  // The disk is back, but this handle's log may be misaligned: refuse until
  // a reopen (the retry interval has not passed on the manual clock).
  s = r->Put("m", "after-error", "3").status();
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.message().find("writes are refused until a retry succeeds"), std::string::npos)
      << s.ToString();
  Crash(&r);
  r = Open(Durability::kSync);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Get("m", "before")->value, "1");
  EXPECT_TRUE(r->Put("m", "after-reopen", "4").ok());
  CheckConsistent(*r);
}

}  // namespace
}  // namespace tidemap
