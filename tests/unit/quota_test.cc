// Proves the storage quota's contract on in-memory replicas (a MemEnv, and a
// fault Env that fails writes as a full file system does):
// - the size grammar of `--storage-quota` and the config file;
// - a replica filled by local writes goes ok -> pruning -> full, announcing
//   each state to subscribers; at full, puts and peer records are refused
//   with QuotaExceeded while reads and deletes go on, and nothing
//   acknowledged is lost; a raised quota or a measurement below it lets
//   writes in again;
// - a full replica refuses a peer's streamed batch with BatchRefused
//   (quota_exceeded set), the sender keeps its cursor and its records, and
//   both converge once space is freed; the same for records a tree diff brings;
// - ENOSPC from the file system with no quota set is the same refusal and
//   leaves a consistent database;
// - PruneOplogThrough prunes past a cursor that holds the log back.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tests/support/fault_env.h"
#include "tests/support/sync_pump.h"
#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/server/size.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;

TEST(SizeGrammarTest, ParsesDecimalAndBinaryUnitsAndRefusesTheRest) {
  EXPECT_EQ(*ParseSizeBytes("q", "512MB"), 512'000'000u);
  EXPECT_EQ(*ParseSizeBytes("q", "2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(*ParseSizeBytes("q", "64KiB"), uint64_t{64} << 10);
  EXPECT_EQ(*ParseSizeBytes("q", "3kB"), 3000u);
  EXPECT_EQ(*ParseSizeBytes("q", "3KB"), 3000u);
  EXPECT_EQ(*ParseSizeBytes("q", "1TB"), 1'000'000'000'000u);
  EXPECT_EQ(*ParseSizeBytes("q", "1TiB"), uint64_t{1} << 40);
  EXPECT_EQ(*ParseSizeBytes("q", "4096B"), 4096u);
  EXPECT_EQ(*ParseSizeBytes("q", "4096"), 4096u);
  EXPECT_EQ(*ParseSizeBytes("q", "0"), 0u);
  for (const char* bad : {"", "MB", "1.5GB", "-1MB", "+1MB", " 1MB", "1 MB", "1MB ", "1mb", "1XB",
                          "20000000TB", "99999999999999999999"}) {
    const auto r = ParseSizeBytes("--storage-quota", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << bad;
    EXPECT_NE(r.status().message().find("--storage-quota"), std::string::npos);
  }
  EXPECT_EQ(FormatSizeBytes(900), "900 B");
  EXPECT_EQ(FormatSizeBytes(uint64_t{512} << 20), "512.0 MiB");
  EXPECT_EQ(FormatSizeBytes(uint64_t{3} << 29), "1.5 GiB");
}

std::string StateName(const Replica& r) {
  return std::string(StorageStateName(r.storage_usage().state));
}

class QuotaTest : public ::testing::Test {
 protected:
  QuotaTest() : mem_(leveldb::NewMemEnv(leveldb::Env::Default())), env_(mem_.get()) {}

  struct Node {
    std::unique_ptr<ManualClock> clock;
    std::unique_ptr<Replica> replica;
    std::vector<std::string> quota_events;  // "state used/quota"
  };

  Node& Add(uint64_t id, uint64_t quota_bytes = 0) {
    Node& n = nodes_[id];
    n.clock = std::make_unique<ManualClock>(kStartMs);
    ReplicaOptions o;
    o.path = "/n" + std::to_string(id);
    o.env = &env_;
    o.clock = n.clock.get();
    o.node_id = id;
    o.storage_quota_bytes = quota_bytes;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    n.replica = std::move(r).value();
    n.replica->Subscribe("some-other-map", [&n](const ChangeEvent& e) {
      if (e.kind != ChangeKind::kQuota) return;
      n.quota_events.push_back(std::string(StorageStateName(e.storage.state)));
    });
    return n;
  }

  // Puts 4 KiB values into map "m" until one is refused; returns the keys acknowledged.
  std::vector<std::string> FillUntilRefused(Node& n, Status* refusal) {
    std::vector<std::string> keys;
    const std::string value(4096, 'v');
    for (int i = 0; i < 100'000; ++i) {
      const std::string key = "k" + std::to_string(i);
      const auto put = n.replica->Put("m", key, value);
      if (!put.ok()) {
        *refusal = put.status();
        return keys;
      }
      keys.push_back(key);
    }
    return keys;
  }

  void ExpectConsistent(Replica& r) {
    auto scrub = r.Scrub();
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_TRUE(scrub->ok());
  }

  std::unique_ptr<leveldb::Env> mem_;
  testing::FaultEnv env_;
  std::map<uint64_t, Node> nodes_;
};

TEST_F(QuotaTest, LocalWritesFillItUpThenOnlyReadsAndDeletesGoOnUntilTheQuotaIsRaised) {
  Node& a = Add(1);
  const uint64_t base = a.replica->storage_usage().used_bytes;
  ASSERT_GT(base, 0u) << "the open measured the database directory";
  EXPECT_EQ(StateName(*a.replica), "ok");
  a.replica->SetStorageQuota(base + (uint64_t{256} << 10));
  EXPECT_EQ(StateName(*a.replica), "ok");

  Status refusal;
  const std::vector<std::string> keys = FillUntilRefused(a, &refusal);
  ASSERT_TRUE(refusal.IsQuotaExceeded()) << refusal.ToString();
  EXPECT_NE(refusal.message().find("storage quota exceeded"), std::string::npos);
  EXPECT_GT(keys.size(), 10u);
  EXPECT_EQ(a.quota_events, (std::vector<std::string>{"pruning", "full"}));
  const StorageUsage full = a.replica->storage_usage();
  EXPECT_EQ(full.state, StorageState::kFull);
  EXPECT_GE(full.used_bytes, full.quota_bytes);
  EXPECT_EQ(full.transitions, 2u);

  // Refused: puts, batches with a put, conditional puts, and peer records.
  EXPECT_TRUE(a.replica->Put("m", "late", "x").status().IsQuotaExceeded());
  WriteBatch mixed;
  mixed.Delete("m", keys[0]);
  mixed.Put("m", "late", "x");
  EXPECT_TRUE(a.replica->Write(mixed).status().IsQuotaExceeded());
  EXPECT_TRUE(a.replica->Get("m", keys[0]).ok()) << "a refused batch wrote nothing";
  EXPECT_TRUE(
      a.replica->PutIf("m", keys[1], "x", WriteCondition{{}, true}).status().IsQuotaExceeded());
  KeyedRecord remote;
  remote.map = "m";
  remote.key = "from-peer";
  remote.value = "x";
  remote.version = Version{Timestamp::FromParts(kStartMs, 1), 7};
  EXPECT_TRUE(a.replica->ApplyRemote({&remote, 1}, 7).status().IsQuotaExceeded());
  EXPECT_FALSE(a.replica->ReadRecord("m", "from-peer")->has_value());

  // Reads and deletes go on; nothing acknowledged is lost.
  for (const std::string& k : keys) ASSERT_TRUE(a.replica->Get("m", k).ok()) << k;
  ASSERT_TRUE(a.replica->Delete("m", keys[0]).ok());
  WriteBatch deletes;
  deletes.Delete("m", keys[1]);
  deletes.Delete("m", keys[2]);
  ASSERT_TRUE(a.replica->Write(deletes).ok());
  EXPECT_TRUE(a.replica->Get("m", keys[1]).status().IsNotFound());

  // A raised quota lets writes in at once, announced.
  a.replica->SetStorageQuota(uint64_t{1} << 30);
  EXPECT_EQ(StateName(*a.replica), "ok");
  EXPECT_EQ(a.quota_events, (std::vector<std::string>{"pruning", "full", "ok"}));
  ASSERT_TRUE(a.replica->Put("m", "late", "x").ok());
  ASSERT_TRUE(a.replica->ApplyRemote({&remote, 1}, 7).ok());
  EXPECT_TRUE(a.replica->ReadRecord("m", "from-peer")->has_value());
  ExpectConsistent(*a.replica);
}

TEST_F(QuotaTest, AMeasurementCorrectsTheEstimateBothWays) {
  Node& a = Add(1);
  const std::string value(4096, 'v');
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), value).ok());
  const uint64_t estimate = a.replica->storage_usage().used_bytes;
  const StorageUsage measured = a.replica->MeasureStorage();
  EXPECT_GT(estimate, 50u * 4096);
  EXPECT_GT(measured.used_bytes, 50u * 4096);
  // Set the quota just under what is measured: full; then above it: ok.
  a.replica->SetStorageQuota(measured.used_bytes - 1);
  EXPECT_EQ(StateName(*a.replica), "full");
  a.replica->SetStorageQuota(measured.used_bytes * 2);
  EXPECT_EQ(StateName(*a.replica), "ok");
  a.replica->SetStorageQuota(measured.used_bytes + measured.used_bytes / 10);
  EXPECT_EQ(StateName(*a.replica), "pruning");
  a.replica->SetStorageQuota(0);
  EXPECT_EQ(StateName(*a.replica), "ok");
  EXPECT_EQ(a.quota_events, (std::vector<std::string>{"full", "ok", "pruning", "ok"}));
}

TEST_F(QuotaTest, PruneOplogThroughGoesPastACursorThatHoldsTheLogBack) {
  Node& a = Add(1);
  ASSERT_TRUE(a.replica->AddPeer(9).ok());  // never acknowledges anything
  for (int i = 0; i < 2000; ++i)
    ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  auto normal = a.replica->PruneOplog();
  ASSERT_TRUE(normal.ok());
  EXPECT_EQ(normal->rows_pruned, 0u) << "peer 9's cursor holds every entry";
  auto forced = a.replica->PruneOplogThrough(a.replica->LastSeq());
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_GT(forced->rows_pruned, 1000u);
  EXPECT_GE(*a.replica->OplogPrunedThrough(), 1000u);
  EXPECT_EQ(a.replica->Get("m", "k5")->value, "v");
}

TEST_F(QuotaTest, AFullReplicaRefusesStreamedBatchesTheSenderKeepsThemAndTheyConvergeLater) {
  Node& a = Add(1);
  Node& b = Add(2);
  ASSERT_TRUE(a.replica->AddPeer(2).ok());
  ASSERT_TRUE(b.replica->AddPeer(1).ok());
  SyncSession sa(a.replica.get(), 2, SyncOptions{});
  SyncSession sb(b.replica.get(), 1, SyncOptions{});
  testing::SyncPumpOptions pump;
  pump.now_ms = kStartMs;
  bool refused_for_quota = false;
  pump.deliver = [&](const msg::Message& m, bool /*a_to_b*/) {
    if (const auto* r = std::get_if<msg::BatchRefused>(&m.body)) {
      refused_for_quota = refused_for_quota || r->quota_exceeded;
    }
  };
  ASSERT_TRUE(testing::PumpSync(sa, sb, pump).status.ok());  // first contact: both empty
  const uint64_t cursor = b.replica->PeerAcks()->at(1);

  a.replica->SetStorageQuota(1);  // A is full from now on
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(b.replica->Put("m", "k" + std::to_string(i), "v").ok());
  pump.start = false;
  ASSERT_TRUE(testing::PumpSync(sa, sb, pump).status.ok());
  EXPECT_TRUE(refused_for_quota);
  EXPECT_NE(sb.stats().last_error.find("out of storage (quota_exceeded)"), std::string::npos)
      << sb.stats().last_error;
  EXPECT_TRUE(a.replica->Get("m", "k0").status().IsNotFound());
  EXPECT_EQ(b.replica->PeerAcks()->at(1), cursor) << "B's cursor for A stays where it was";

  a.replica->SetStorageQuota(0);
  pump.now_ms = kStartMs + SyncOptions{}.refused_retry_ms;
  ASSERT_TRUE(testing::PumpSync(sa, sb, pump).status.ok());
  EXPECT_EQ(a.replica->Get("m", "k19")->value, "v");
  EXPECT_EQ(a.replica->MerkleRoot(), b.replica->MerkleRoot());
  EXPECT_TRUE(sb.stats().last_error.empty()) << sb.stats().last_error;
}

TEST_F(QuotaTest, AFullReplicaRefusesRecordsATreeDiffBringsAndAsksForThemAgainLater) {
  Node& a = Add(1);
  Node& b = Add(2);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(b.replica->Put("m", "k" + std::to_string(i), "v").ok());
  a.replica->SetStorageQuota(1);
  SyncSession sa(a.replica.get(), 2, SyncOptions{});
  SyncSession sb(b.replica.get(), 1, SyncOptions{});
  testing::SyncPumpOptions pump;
  pump.now_ms = kStartMs;
  ASSERT_TRUE(testing::PumpSync(sa, sb, pump).status.ok());  // first contact: a tree diff
  EXPECT_GT(sa.stats().records_refused, 0u);
  EXPECT_NE(sa.stats().last_error.find("quota"), std::string::npos) << sa.stats().last_error;
  EXPECT_TRUE(a.replica->Get("m", "k0").status().IsNotFound());

  a.replica->SetStorageQuota(0);
  pump.start = false;
  pump.now_ms = kStartMs + SyncOptions{}.refused_retry_ms;
  ASSERT_TRUE(testing::PumpSync(sa, sb, pump).status.ok());
  EXPECT_EQ(a.replica->Get("m", "k19")->value, "v");
  EXPECT_EQ(a.replica->MerkleRoot(), b.replica->MerkleRoot());
}

TEST_F(QuotaTest, AFullFileSystemIsTheSameRefusalAndLeavesAConsistentDatabase) {
  Node& a = Add(1);  // no quota
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  env_.SetNoSpace(true);
  const auto failed = a.replica->Put("m", "x", "1");
  ASSERT_TRUE(failed.status().IsQuotaExceeded()) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("No space left on device"), std::string::npos);
  const auto refused = a.replica->Delete("m", "k1");  // a delete needs space too
  EXPECT_TRUE(refused.status().IsQuotaExceeded()) << refused.status().ToString();
  EXPECT_EQ(StateName(*a.replica), "full");
  EXPECT_TRUE(a.replica->storage_usage().disk_full);
  EXPECT_EQ(a.quota_events, (std::vector<std::string>{"full"}));
  EXPECT_EQ(a.replica->Get("m", "k7")->value, "v");

  env_.SetNoSpace(false);
  a.clock->Advance(1000);  // the storage retry interval
  ASSERT_TRUE(a.replica->Put("m", "y", "2").ok());
  EXPECT_EQ(StateName(*a.replica), "ok");
  EXPECT_EQ(a.quota_events, (std::vector<std::string>{"full", "ok"}));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a.replica->Get("m", "k" + std::to_string(i)).ok());
  ExpectConsistent(*a.replica);
}

}  // namespace
}  // namespace tidemap
