// Proves clearing a map (Replica::ClearMap): reads leave every record older
// than the clear out at once, before the background removal ran; a record
// older than the clear that arrives later is dropped and a newer one
// survives, whatever the order; the removal deletes the older records in
// bounded batches and resumes after a reopen; subscribers get one `clear`
// event; and two or three replicas syncing by the oplog stream and by a tree
// diff end with equal Merkle roots once each ran its removal. Runs on
// LevelDB's in-memory Env with manual clocks, sessions pumped in one thread.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>

#include "tests/support/sync_pump.h"

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;  // 2027-01-15
constexpr uint64_t kNode = 0xc1;
constexpr uint64_t kOther = 0xc2;

class ClearTest : public ::testing::Test {
 protected:
  ClearTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())) {}

  ManualClock& ClockOf(uint64_t node) {
    auto& c = clocks_[node];
    if (!c) c = std::make_unique<ManualClock>(kStartMs);
    return *c;
  }

  std::unique_ptr<Replica> Open(uint64_t node = kNode) {
    ReplicaOptions o;
    o.path = "/db" + std::to_string(node);
    o.env = env_.get();
    o.clock = &ClockOf(node);
    o.node_id = node;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // "a=1 b=2" over the live keys of `map`.
  static std::string Render(const Replica& r, const std::string& map = "m") {
    auto page = r.Scan(map, "", std::nullopt, 1000);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    std::string out;
    for (const ScanItem& item : page->items) {
      if (!out.empty()) out += ' ';
      out += item.key + "=" + item.value;
    }
    return out;
  }

  static void Drain(Replica& r, size_t rows_max = 10'000) {
    for (int i = 0; i < 1000; ++i) {
      auto removal = r.RemoveClearedRecords(rows_max);
      ASSERT_TRUE(removal.ok()) << removal.status().ToString();
      if (removal->maps_pending == 0) return;
    }
    FAIL() << "removal never finished";
  }

  static void ExpectScrubOk(Replica& r) {
    auto scrub = r.Scrub();
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_TRUE(scrub->ok()) << "leaf " << scrub->leaf_mismatches << " index "
                             << scrub->index_mismatches;
  }

  static void Pump(Replica& a, uint64_t a_id, Replica& b, uint64_t b_id) {
    SyncSession sa(&a, b_id, {});
    SyncSession sb(&b, a_id, {});
    testing::SyncPumpOptions options;
    options.now_ms = kStartMs;
    const testing::SyncPumpResult r = testing::PumpSync(sa, sb, options);
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  }

  std::unique_ptr<leveldb::Env> env_;
  std::map<uint64_t, std::unique_ptr<ManualClock>> clocks_;
};

TEST_F(ClearTest, ReadsHideOlderRecordsAtOnceAndTheRemovalDeletesThem) {
  auto r = Open();
  ASSERT_TRUE(r->Put("m", "a", "1").ok());
  ASSERT_TRUE(r->Put("m", "b", "2").ok());
  ASSERT_TRUE(r->Delete("m", "c").ok());
  ASSERT_TRUE(r->Put("other", "a", "kept").ok());
  std::vector<std::string> events;
  r->Subscribe("", [&](const ChangeEvent& e) {
    events.push_back(std::string(ChangeKindName(e.kind)) + " " + std::string(e.map) + "/" +
                     std::string(e.key) + "@" + e.version.ToString());
  });
  auto cleared = r->ClearMap("m");
  ASSERT_TRUE(cleared.ok()) << cleared.status().ToString();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "clear m/@" + cleared->ToString());
  // Before any removal: the old records are still stored but never served.
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  EXPECT_EQ(Render(*r), "");
  EXPECT_EQ(Render(*r, "other"), "a=kept");
  ASSERT_TRUE(r->Put("m", "d", "after").ok());
  EXPECT_EQ(Render(*r), "d=after");
  EXPECT_EQ(r->Stats()->clear_pending_maps, 1u);

  auto removal = r->RemoveClearedRecords();
  ASSERT_TRUE(removal.ok()) << removal.status().ToString();
  EXPECT_EQ(removal->removed, 3u);  // a, b and the tombstone of c; d is newer
  EXPECT_EQ(removal->maps_pending, 0u);
  auto stats = r->Stats();
  EXPECT_EQ(stats->keys, 2u);        // m/d and other/a
  EXPECT_EQ(stats->tombstones, 1u);  // the clear itself
  EXPECT_EQ(stats->cleared_maps, 1u);
  EXPECT_EQ(stats->clear_pending_maps, 0u);
  EXPECT_EQ(Render(*r), "d=after");
  ExpectScrubOk(*r);
  // A second call finds nothing to do.
  EXPECT_EQ(r->RemoveClearedRecords()->removed, 0u);
  EXPECT_TRUE(r->ClearMap("").status().IsInvalidArgument());
  // A conditional write sees the cleared key as absent, removed or not.
  ASSERT_TRUE(r->Put("m", "e", "old").ok());
  ASSERT_TRUE(r->ClearMap("m").ok());
  WriteCondition any;
  any.any_version = true;
  auto cas = r->PutIf("m", "e", "new", any);
  ASSERT_TRUE(cas.ok()) << cas.status().ToString();
  EXPECT_FALSE(cas->written);
  EXPECT_FALSE(cas->version.has_value());
  EXPECT_TRUE(r->Put("m", "", "x").status().IsInvalidArgument());  // the reserved key
}

TEST_F(ClearTest, AnOlderWriteArrivingAfterTheClearIsDroppedAndANewerOneSurvives) {
  auto r = Open();
  ClockOf(kNode).Advance(1000);
  const Version clear = *r->ClearMap("m");
  const KeyedRecord older{"m", "late", "old",
                          Version{Timestamp::FromParts(kStartMs + 10, 0), kOther}};
  const KeyedRecord newer{"m", "new", "v",
                          Version{Timestamp::FromParts(kStartMs + 2000, 0), kOther}};
  ASSERT_LT(older.version, clear);
  auto applied = r->ApplyRemote({&older, 1}, kOther);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(applied->applied, 0u);
  EXPECT_EQ(applied->ignored, 1u);
  EXPECT_TRUE(r->Get("m", "late").status().IsNotFound());
  ASSERT_TRUE(r->ReadRecord("m", "late")->has_value() == false);  // never stored
  applied = r->ApplyRemote({&newer, 1}, kOther);
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->applied, 1u);
  EXPECT_EQ(Render(*r), "new=v");
  // In one batch, a clear then an older record: the record is dropped too.
  const KeyedRecord batch[] = {
      {"n", "", "", Version{Timestamp::FromParts(kStartMs + 3000, 0), kOther}, true},
      {"n", "x", "old", Version{Timestamp::FromParts(kStartMs + 2500, 0), kOther}},
      {"n", "y", "new", Version{Timestamp::FromParts(kStartMs + 3500, 0), kOther}},
  };
  applied = r->ApplyRemote(batch, kOther);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(applied->applied, 2u);
  EXPECT_EQ(Render(*r, "n"), "y=new");
  ExpectScrubOk(*r);
}

TEST_F(ClearTest, AClearArrivingAfterTheWritesDeletesTheOlderOnes) {
  auto r = Open();
  ASSERT_TRUE(r->Put("m", "a", "1").ok());
  const KeyedRecord remote{"m", "b", "2", Version{Timestamp::FromParts(kStartMs + 50, 0), kOther}};
  ASSERT_TRUE(r->ApplyRemote({&remote, 1}, kOther).ok());
  ClockOf(kNode).Advance(500);
  ASSERT_TRUE(r->Put("m", "c", "newer than the clear").ok());
  const KeyedRecord clear{"m", "", "", Version{Timestamp::FromParts(kStartMs + 100, 0), kOther},
                          true};
  std::vector<std::string> events;
  r->Subscribe("m", [&](const ChangeEvent& e) {
    events.push_back(std::string(ChangeKindName(e.kind)) + (e.remote ? " remote" : ""));
  });
  auto applied = r->ApplyRemote({&clear, 1}, kOther);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(applied->applied, 1u);
  EXPECT_EQ(events, std::vector<std::string>{"clear remote"});
  EXPECT_EQ(Render(*r), "c=newer than the clear");
  Drain(*r);
  EXPECT_EQ(Render(*r), "c=newer than the clear");
  EXPECT_EQ(r->Stats()->keys, 1u);
  // An older clear changes nothing; the clear stays the newest one.
  const KeyedRecord older_clear{"m", "", "", Version{Timestamp::FromParts(kStartMs + 1, 0), kOther},
                                true};
  EXPECT_EQ(r->ApplyRemote({&older_clear, 1}, kOther)->applied, 0u);
  ExpectScrubOk(*r);
}

TEST_F(ClearTest, ARestartMidRemovalResumesWhereItStopped) {
  const Digest128 empty_root = [&] {
    auto fresh = Open(0x99);
    return fresh->MerkleRoot();
  }();
  Version clear;
  {
    auto r = Open();
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(r->Put("m", "k" + std::to_string(100 + i), "v").ok());
    clear = *r->ClearMap("m");
    auto removal = r->RemoveClearedRecords(20);
    ASSERT_TRUE(removal.ok()) << removal.status().ToString();
    EXPECT_EQ(removal->removed, 19u);  // the 20 rows visited include the clear's own
    EXPECT_EQ(removal->maps_pending, 1u);
  }
  auto r = Open();
  EXPECT_EQ(r->Stats()->clear_pending_maps, 1u);
  EXPECT_TRUE(r->Get("m", "k149").status().IsNotFound());  // still hidden after the reopen
  EXPECT_EQ(Render(*r), "");
  auto removal = r->RemoveClearedRecords(20);
  ASSERT_TRUE(removal.ok());
  EXPECT_EQ(removal->removed, 20u);  // k119..k138: resumed after k118
  Drain(*r);
  auto stats = r->Stats();
  EXPECT_EQ(stats->keys, 0u);
  EXPECT_EQ(stats->tombstones, 1u);
  EXPECT_EQ(stats->clear_removed, 31u);  // since the reopen: 20, then the last 11
  ExpectScrubOk(*r);
  // What is left is the clear alone: the root of a replica that holds only it.
  auto other = Open(kOther);
  const KeyedRecord only{"m", "", "", clear, true};
  ASSERT_TRUE(other->ApplyRemote({&only, 1}, kNode).ok());
  EXPECT_EQ(other->MerkleRoot(), r->MerkleRoot());
  EXPECT_NE(r->MerkleRoot(), empty_root);
}

// The derived-row rebuild (tidemap repair) writes a clear's meta row again,
// so the reopened replica still hides, drops and removes what it clears.
TEST_F(ClearTest, TheDerivedRowRebuildKeepsAClear) {
  {
    auto r = Open();
    ASSERT_TRUE(r->Put("m", "a", "1").ok());
    ASSERT_TRUE(r->ClearMap("m").ok());
    auto rebuilt = r->RebuildDerivedRows();
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
    EXPECT_EQ(*rebuilt, 2u);  // m/a and the clear
  }
  auto r = Open();
  EXPECT_EQ(r->Stats()->cleared_maps, 1u);
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  Drain(*r);
  EXPECT_EQ(r->Stats()->keys, 0u);
  ExpectScrubOk(*r);
}

TEST_F(ClearTest, ReplicasSyncingByOplogAndByTreeDiffEndWithEqualRoots) {
  constexpr uint64_t kA = 1, kB = 2, kC = 3;
  auto a = Open(kA);
  auto b = Open(kB);
  auto c = Open(kC);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a->Put("m", "k" + std::to_string(i), "a").ok());
  Pump(*a, kA, *b, kB);  // B holds A's records now (first contact: a tree diff)
  EXPECT_EQ(b->Stats()->keys, 100u);
  // C wrote, long ago and never synced, keys of the map the clear will delete.
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(c->Put("m", "c" + std::to_string(i), "c").ok());
  ClockOf(kA).Advance(10'000);
  const Version clear = *a->ClearMap("m");
  ASSERT_TRUE(a->Put("m", "after", "a").ok());
  // B's clock lags: its write is stamped before the clear, which it has not seen.
  ClockOf(kB).Advance(5'000);
  ASSERT_TRUE(b->Put("m", "late", "b").ok());
  ASSERT_LT(b->ReadRecord("m", "late")->value().version, clear);
  Pump(*a, kA, *b, kB);  // the oplog stream, both ways
  EXPECT_EQ(Render(*a), "after=a");
  EXPECT_EQ(Render(*b), "after=a");
  Pump(*a, kA, *c, kC);  // first contact: a tree diff carries the clear to C
  EXPECT_EQ(Render(*c), "after=a");
  Pump(*b, kB, *c, kC);
  for (Replica* r : {a.get(), b.get(), c.get()}) {
    Drain(*r);
    ExpectScrubOk(*r);
  }
  EXPECT_EQ(a->MerkleRoot(), b->MerkleRoot());
  EXPECT_EQ(a->MerkleRoot(), c->MerkleRoot());
  EXPECT_EQ(a->Stats()->keys, 1u);
  EXPECT_EQ(c->Stats()->keys, 1u);
  // Another round finds nothing to send: the trees agree.
  Pump(*a, kA, *c, kC);
  EXPECT_EQ(Render(*c), "after=a");
}

}  // namespace
}  // namespace tidemap
