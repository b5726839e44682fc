// Proves what happens around a storage error: a read-only open writes
// nothing (on the real file system, byte for byte, and under an Env that
// fails every write); a Store whose write failed refuses writes, keeps
// reading, and takes writes again after Reopen once the fault is gone (not
// before, and not while an iterator is open); a Replica refuses writes with
// a clear error, serves reads, and heals on its own at the retry interval,
// also when a commit reported as failed came back from the log with the
// reopen (its tree, counts and key filter then include it); and readers on
// other threads never see an error while the store fails and reopens.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/fault_env.h"
#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kStartMs = 1'800'000'000'000;
constexpr uint64_t kNode = 0xa1;

Status WriteRow(Store* store, const std::string& key, const std::string& value) {
  Batch b;
  b.Put(key, value);
  return store->Write(&b, /*sync=*/true);
}

// Every file under `dir` with its bytes.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    out[e.path().string()] = bytes.str();
  }
  return out;
}

TEST(ReadOnlyStoreTest, ReadsEverythingAndWritesNothingToTheDirectory) {
  const std::string dir = testing::MakeTempDir("tidemap-ro");
  const std::string path = dir + "/db";
  {
    StoreOptions so;
    so.path = path;
    so.write_buffer_bytes = 64 << 10;  // several tables and a log tail to recover
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int i = 0; i < 3000; ++i) {
      ASSERT_TRUE(WriteRow(store->get(), "k" + std::to_string(i), std::string(100, 'v')).ok());
    }
  }
  const auto before = Snapshot(dir);
  {
    StoreOptions so;
    so.path = path;
    so.read_only = true;
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->read_only());
    for (int i = 0; i < 3000; i += 97) {
      auto v = (*store)->Get("k" + std::to_string(i));
      ASSERT_TRUE(v.ok()) << i << ": " << v.status().ToString();
      EXPECT_EQ(*v, std::string(100, 'v'));
    }
    const Status refused = WriteRow(store->get(), "new", "x");
    EXPECT_TRUE(refused.IsRefused()) << refused.ToString();
    EXPECT_NE(refused.message().find("read-only"), std::string::npos);
  }
  EXPECT_EQ(Snapshot(dir), before);  // not a byte changed, no file added or removed
  fs::remove_all(dir);
}

TEST(ReadOnlyStoreTest, OpensWhenEveryWriteToTheDiskFails) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  testing::FaultEnv env(mem.get());
  StoreOptions so;
  so.path = "/db";
  so.env = &env;
  {
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(WriteRow(store->get(), "a", "1").ok());
  }
  env.SetWriteError(true);             // a full disk
  EXPECT_FALSE(Store::Open(so).ok());  // a writable open needs to write
  so.read_only = true;
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto v = (*store)->Get("a");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "1");
}

class StoreReopenTest : public ::testing::Test {
 protected:
  StoreReopenTest() : mem_(leveldb::NewMemEnv(leveldb::Env::Default())), env_(mem_.get()) {
    StoreOptions so;
    so.path = "/db";
    so.env = &env_;
    auto s = Store::Open(so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok()) store_ = std::move(s).value();
  }
  ~StoreReopenTest() override { store_.reset(); }

  std::unique_ptr<leveldb::Env> mem_;
  testing::FaultEnv env_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreReopenTest, AFailedWriteIsRefusedUntilAReopenSucceeds) {
  ASSERT_TRUE(WriteRow(store_.get(), "before", "1").ok());
  env_.SetWriteError(true);
  const Status failed = WriteRow(store_.get(), "lost", "2");
  ASSERT_TRUE(failed.IsIOError()) << failed.ToString();
  EXPECT_FALSE(store_->write_error().ok());

  // The fault is still there: the probe fails, nothing is closed, reads go on.
  const Status still = store_->Reopen(1000);
  EXPECT_TRUE(still.IsIOError()) << still.ToString();
  EXPECT_NE(still.message().find("still fails"), std::string::npos) << still.ToString();
  EXPECT_FALSE(WriteRow(store_.get(), "refused", "3").ok());
  ASSERT_TRUE(store_->Get("before").ok());

  env_.SetWriteError(false);
  // Refused while the fault is gone but nobody reopened: the handle is poisoned.
  EXPECT_FALSE(WriteRow(store_.get(), "refused", "3").ok());
  {
    auto it = store_->NewIterator();  // an open iterator holds the reopen back
    const Status busy = store_->Reopen(20);
    EXPECT_TRUE(busy.IsUnavailable()) << busy.ToString();
  }
  ASSERT_TRUE(store_->Reopen(1000).ok());
  EXPECT_TRUE(store_->write_error().ok());
  ASSERT_TRUE(WriteRow(store_.get(), "after", "4").ok());
  EXPECT_EQ(*store_->Get("before"), "1");
  EXPECT_EQ(*store_->Get("after"), "4");
  EXPECT_TRUE(store_->Get("lost").status().IsNotFound());
  EXPECT_TRUE(store_->Get("refused").status().IsNotFound());
}

class ReplicaStorageErrorTest : public ::testing::Test {
 protected:
  ReplicaStorageErrorTest()
      : mem_(leveldb::NewMemEnv(leveldb::Env::Default())), env_(mem_.get()), clock_(kStartMs) {}
  ~ReplicaStorageErrorTest() override { replica_.reset(); }

  void Open() {
    ReplicaOptions o;
    o.path = "/db";
    o.env = &env_;
    o.clock = &clock_;
    o.node_id = kNode;
    auto r = Replica::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replica_ = std::move(r).value();
  }
  void ExpectConsistent() {
    auto scrub = replica_->Scrub();
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_TRUE(scrub->ok()) << "the tree in memory or on disk differs from the records";
  }

  std::unique_ptr<leveldb::Env> mem_;
  testing::FaultEnv env_;
  ManualClock clock_;
  std::unique_ptr<Replica> replica_;
};

TEST_F(ReplicaStorageErrorTest, WritesAreRefusedReadsGoOnAndWritesComeBackWithoutARestart) {
  Open();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(replica_->Put("m", "k" + std::to_string(i), "v").ok());
  env_.SetWriteError(true);
  const auto failed = replica_->Put("m", "x", "1");
  ASSERT_TRUE(failed.status().IsIOError()) << failed.status().ToString();
  const auto refused = replica_->Put("m", "y", "1");
  ASSERT_TRUE(refused.status().IsIOError());
  EXPECT_NE(refused.status().message().find("writes are refused until a retry succeeds"),
            std::string::npos)
      << refused.status().ToString();
  auto read = replica_->Get("m", "k7");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->value, "v");
  auto stats = replica_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_FALSE(stats->storage.error.empty());
  EXPECT_EQ(stats->storage.write_errors, 1u);

  env_.SetWriteError(false);
  // Before the retry interval a writer is refused without a reopen.
  EXPECT_FALSE(replica_->Put("m", "y", "1").ok());
  clock_.Advance(1000);
  ASSERT_TRUE(replica_->Put("m", "y", "2").ok());  // this writer's retry reopened the store
  stats = replica_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->storage.error.empty()) << stats->storage.error;
  EXPECT_EQ(stats->storage.recoveries, 1u);
  EXPECT_EQ(stats->keys, 101u);
  EXPECT_TRUE(replica_->Get("m", "x").status().IsNotFound());
  EXPECT_EQ(replica_->Get("m", "y")->value, "2");
  ExpectConsistent();
}

TEST_F(ReplicaStorageErrorTest, RetryStorageHealsWithoutAWriter) {
  Open();
  ASSERT_TRUE(replica_->Put("m", "a", "1").ok());
  env_.SetWriteError(true);
  ASSERT_FALSE(replica_->Put("m", "b", "1").ok());
  EXPECT_FALSE(replica_->RetryStorage().ok());  // the fault is still there
  env_.SetWriteError(false);
  ASSERT_TRUE(replica_->RetryStorage().ok());  // no clock advance needed
  EXPECT_TRUE(replica_->Stats()->storage.error.empty());
  ASSERT_TRUE(replica_->Put("m", "b", "2").ok());
  ExpectConsistent();
}

TEST_F(ReplicaStorageErrorTest, ACommitThatFailedAfterReachingTheLogIsCountedWhenItComesBack) {
  Open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(replica_->Put("m", "k" + std::to_string(i), "v").ok());
  const Digest128 root_before = replica_->MerkleRoot();
  env_.SetSyncError(true);  // the append lands, its fsync fails
  const auto failed = replica_->Put("m", "ghost", "g");
  ASSERT_TRUE(failed.status().IsIOError()) << failed.status().ToString();
  EXPECT_EQ(replica_->MerkleRoot(), root_before);
  env_.SetSyncError(false);
  ASSERT_TRUE(replica_->RetryStorage().ok());
  // The reopen recovered the record from the log: it is a stored key now,
  // and the tree, the counts and the next write's merge all know it.
  auto ghost = replica_->Get("m", "ghost");
  ASSERT_TRUE(ghost.ok()) << ghost.status().ToString();
  EXPECT_EQ(ghost->value, "g");
  EXPECT_NE(replica_->MerkleRoot(), root_before);
  EXPECT_EQ(replica_->Stats()->keys, 11u);
  ASSERT_TRUE(replica_->Put("m", "ghost", "g2").ok());  // an overwrite, not a new key
  EXPECT_EQ(replica_->Stats()->keys, 11u);
  ExpectConsistent();
}

TEST_F(ReplicaStorageErrorTest, ReadersOnOtherThreadsNeverFailWhileTheStoreFailsAndHeals) {
  Open();
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(replica_->Put("m", "k" + std::to_string(i), "v").ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, errors{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (uint64_t n = 0; !stop.load(); ++n) {
        const bool ok =
            (n + static_cast<uint64_t>(t)) % 4 == 0
                ? replica_->Scan("m", "", std::nullopt, 50).ok()
                : replica_->Get("m", "k" + std::to_string((n * 7 + static_cast<uint64_t>(t)) % 200))
                      .ok();
        errors.fetch_add(ok ? 0 : 1);
        reads.fetch_add(1);
      }
    });
  }
  for (int round = 0; round < 5; ++round) {
    env_.SetWriteError(true);
    EXPECT_FALSE(replica_->Put("m", "during" + std::to_string(round), "x").ok());
    EXPECT_FALSE(replica_->RetryStorage().ok());
    env_.SetWriteError(false);
    const Status healed = replica_->RetryStorage();
    EXPECT_TRUE(healed.ok()) << healed.ToString();
    EXPECT_TRUE(replica_->Put("m", "after" + std::to_string(round), "y").ok());
  }
  stop = true;
  for (std::thread& r : readers) r.join();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(errors.load(), 0u) << "a read failed while the store failed or reopened";
  EXPECT_EQ(replica_->storage_health().recoveries, 5u);
  ExpectConsistent();
}

TEST_F(ReplicaStorageErrorTest, AReadOnlyReplicaRefusesWritesAndLeavesTheStoreAsItWas) {
  Open();
  ASSERT_TRUE(replica_->Put("m", "a", "1").ok());
  replica_.reset();
  ReplicaOptions o;
  o.path = "/db";
  o.env = &env_;
  o.clock = &clock_;
  o.node_id = kNode;
  o.read_only = true;
  env_.SetWriteError(true);  // a full disk: a read-only open must not need to write
  auto r = Replica::Open(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Get("m", "a")->value, "1");
  EXPECT_TRUE((*r)->Put("m", "b", "1").status().IsRefused());
  EXPECT_TRUE((*r)->RetryStorage().IsRefused());
}

}  // namespace
}  // namespace tidemap
