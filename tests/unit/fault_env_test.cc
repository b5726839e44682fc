// Proves the crash model of tests/support/fault_env.h, first on the Env alone
// (synced prefixes, renames, removals, appendable files) and then with LevelDB
// on FaultEnv(MemEnv): synced writes survive a crash, unsynced writes before a
// synced one survive with it (the log is a prefix), unsynced writes alone are
// lost while the database still opens, and injected write errors reach the
// caller of DB::Put. A last suite pins how LevelDB 1.23 recovers a damaged
// log. State is rendered as ranges of surviving keys ("0-99").
#include "tests/support/fault_env.h"

#include <gtest/gtest.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <leveldb/options.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tidemap::testing {
namespace {

constexpr char kDbName[] = "/fault-env-test-db";

// The whole contents of `fname` in `env`, or "<missing>".
std::string Contents(leveldb::Env* env, const std::string& fname) {
  std::string data;
  if (!leveldb::ReadFileToString(env, fname, &data).ok()) return "<missing>";
  return data;
}

TEST(FaultEnvFileTest, KeepsOnlySyncedPrefixes) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  FaultEnv env(mem.get());
  ASSERT_TRUE(leveldb::WriteStringToFile(mem.get(), "before", "/pre-existing").ok());

  std::vector<std::unique_ptr<leveldb::WritableFile>> open;
  auto create = [&](const std::string& fname, bool appendable) -> leveldb::WritableFile* {
    leveldb::WritableFile* f = nullptr;
    leveldb::Status s =
        appendable ? env.NewAppendableFile(fname, &f) : env.NewWritableFile(fname, &f);
    EXPECT_TRUE(s.ok()) << s.ToString();
    open.emplace_back(f);
    return f;
  };

  leveldb::WritableFile* partly = create("/partly", false);
  ASSERT_TRUE(partly->Append("synced").ok());
  ASSERT_TRUE(partly->Sync().ok());
  ASSERT_TRUE(partly->Append("+flushed").ok());
  ASSERT_TRUE(partly->Flush().ok());

  leveldb::WritableFile* never = create("/never-synced", false);
  ASSERT_TRUE(never->Append("lost").ok());

  // Renamed while open (a File follows its id, not its name), synced after.
  leveldb::WritableFile* renamed = create("/temp", false);
  ASSERT_TRUE(renamed->Append("current").ok());
  ASSERT_TRUE(env.RenameFile("/temp", "/renamed").ok());
  ASSERT_TRUE(renamed->Sync().ok());
  ASSERT_TRUE(renamed->Append("+tail").ok());

  leveldb::WritableFile* removed = create("/removed", false);
  ASSERT_TRUE(removed->Append("gone").ok());
  ASSERT_TRUE(env.RemoveFile("/removed").ok());

  leveldb::WritableFile* appended = create("/pre-existing", true);
  ASSERT_TRUE(appended->Append("+after").ok());

  EXPECT_EQ(env.UnsyncedFileCount(), 4);
  for (auto& f : open) ASSERT_TRUE(f->Close().ok());
  open.clear();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  EXPECT_EQ(env.UnsyncedFileCount(), 0);

  EXPECT_EQ(Contents(mem.get(), "/partly"), "synced");
  EXPECT_EQ(Contents(mem.get(), "/never-synced"), "");
  EXPECT_EQ(Contents(mem.get(), "/temp"), "<missing>");
  EXPECT_EQ(Contents(mem.get(), "/renamed"), "current");
  EXPECT_EQ(Contents(mem.get(), "/removed"), "<missing>");
  EXPECT_EQ(Contents(mem.get(), "/pre-existing"), "before");

  // After a crash, what survived is durable: a second crash takes nothing more.
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(mem.get(), "/partly"), "synced");
  EXPECT_EQ(Contents(mem.get(), "/renamed"), "current");
}

TEST(FaultEnvFileTest, RenameOverATrackedFileReplacesItsState) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  FaultEnv env(mem.get());
  // LevelDB's CURRENT update: write a temp file, sync it, rename it over CURRENT.
  ASSERT_TRUE(leveldb::WriteStringToFile(&env, "old-unsynced", "/CURRENT").ok());
  leveldb::WritableFile* raw = nullptr;
  ASSERT_TRUE(env.NewWritableFile("/CURRENT.tmp", &raw).ok());
  std::unique_ptr<leveldb::WritableFile> tmp(raw);
  ASSERT_TRUE(tmp->Append("new").ok());
  ASSERT_TRUE(tmp->Sync().ok());
  ASSERT_TRUE(tmp->Close().ok());
  ASSERT_TRUE(env.RenameFile("/CURRENT.tmp", "/CURRENT").ok());
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(mem.get(), "/CURRENT"), "new");
  EXPECT_EQ(Contents(mem.get(), "/CURRENT.tmp"), "<missing>");
}

TEST(FaultEnvFileTest, ResetStateMakesEverythingDurable) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  FaultEnv env(mem.get());
  ASSERT_TRUE(leveldb::WriteStringToFile(&env, "unsynced", "/f").ok());
  env.SetWriteError(true);
  env.ResetState();
  ASSERT_TRUE(leveldb::WriteStringToFile(&env, "also unsynced", "/g").ok());  // no error now
  env.ResetState();
  ASSERT_TRUE(env.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(mem.get(), "/f"), "unsynced");
  EXPECT_EQ(Contents(mem.get(), "/g"), "also unsynced");
}

TEST(FaultEnvFileTest, WriteErrorFailsAppendAndSyncWithoutWriting) {
  std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
  FaultEnv env(mem.get());
  leveldb::WritableFile* raw = nullptr;
  ASSERT_TRUE(env.NewWritableFile("/f", &raw).ok());
  std::unique_ptr<leveldb::WritableFile> f(raw);
  ASSERT_TRUE(f->Append("a").ok());
  env.SetWriteError(true);
  EXPECT_TRUE(f->Append("b").IsIOError());
  EXPECT_TRUE(f->Sync().IsIOError());
  env.SetWriteError(false);
  ASSERT_TRUE(f->Append("c").ok());
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(f->Close().ok());
  EXPECT_EQ(Contents(mem.get(), "/f"), "ac");
}

class FaultEnvDbTest : public ::testing::Test {
 protected:
  FaultEnvDbTest() : mem_(leveldb::NewMemEnv(leveldb::Env::Default())), env_(mem_.get()) {}

  // Opens (or reopens) the database on env_.
  leveldb::Status Open(bool paranoid_checks = true, size_t write_buffer_bytes = 4 << 20) {
    db_.reset();
    leveldb::Options options;
    options.env = &env_;
    options.create_if_missing = true;
    options.paranoid_checks = paranoid_checks;
    options.write_buffer_size = write_buffer_bytes;
    leveldb::DB* db = nullptr;
    leveldb::Status s = leveldb::DB::Open(options, kDbName, &db);
    db_.reset(db);
    return s;
  }

  // Closes the database and loses what was not synced.
  void Crash() {
    db_.reset();
    leveldb::Status s = env_.DropUnsyncedData();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  static std::string Key(int i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "key%06d", i);
    return buf;
  }
  static std::string Value(int i, size_t bytes) {
    std::string v = "value" + std::to_string(i) + ":";
    v.resize(bytes, static_cast<char>('a' + i % 26));
    return v;
  }

  leveldb::Status Put(int i, bool sync, size_t value_bytes = 100) {
    leveldb::WriteOptions options;
    options.sync = sync;
    return db_->Put(options, Key(i), Value(i, value_bytes));
  }

  void PutAll(int begin, int end, bool sync, size_t value_bytes = 100) {
    for (int i = begin; i < end; ++i) {
      leveldb::Status s = Put(i, sync, value_bytes);
      ASSERT_TRUE(s.ok()) << "put " << i << ": " << s.ToString();
    }
  }

  // Which of the keys [0, n) are present with their right value, as ranges
  // ("0-41,50"); "" when none. A present key with a wrong value renders "!i".
  std::string Present(int n, size_t value_bytes = 100) {
    leveldb::ReadOptions options;
    options.verify_checksums = true;
    std::string out;
    int run_start = -1;
    auto close_run = [&](int end) {
      if (run_start < 0) return;
      if (!out.empty()) out += ",";
      out += std::to_string(run_start);
      if (end - 1 > run_start) {
        out += "-";
        out += std::to_string(end - 1);
      }
      run_start = -1;
    };
    for (int i = 0; i < n; ++i) {
      std::string value;
      leveldb::Status s = db_->Get(options, Key(i), &value);
      if (s.ok() && value == Value(i, value_bytes)) {
        if (run_start < 0) run_start = i;
        continue;
      }
      close_run(i);
      if (s.ok()) {
        out += out.empty() ? "!" : ",!";
        out += std::to_string(i);
      } else if (!s.IsNotFound()) {
        ADD_FAILURE() << "get " << i << ": " << s.ToString();
      }
    }
    close_run(n);
    return out;
  }

  // The name of the one log file of the database.
  std::string LogFile() {
    std::vector<std::string> children;
    EXPECT_TRUE(mem_->GetChildren(kDbName, &children).ok());
    std::string log;
    for (const std::string& c : children) {
      if (c.size() > 4 && c.compare(c.size() - 4, 4, ".log") == 0) {
        EXPECT_TRUE(log.empty()) << "two logs: " << log << " " << c;
        log = std::string(kDbName) + "/" + c;
      }
    }
    return log;
  }

  std::unique_ptr<leveldb::Env> mem_;
  FaultEnv env_;
  std::unique_ptr<leveldb::DB> db_;  // closed before env_ and mem_ go
};

TEST_F(FaultEnvDbTest, SyncedWritesSurviveACrash) {
  ASSERT_TRUE(Open().ok());
  PutAll(0, 100, /*sync=*/true);
  Crash();
  leveldb::Status s = Open();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(100), "0-99");

  // And again: the recovered state is itself durable.
  PutAll(100, 110, /*sync=*/true);
  Crash();
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(Present(110), "0-109");
}

TEST_F(FaultEnvDbTest, UnsyncedWritesBeforeASyncedOneSurviveWithIt) {
  ASSERT_TRUE(Open().ok());
  PutAll(0, 100, /*sync=*/false);
  PutAll(100, 101, /*sync=*/true);  // syncs the whole log so far
  PutAll(101, 120, /*sync=*/false);
  Crash();
  leveldb::Status s = Open();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(120), "0-100");
}

TEST_F(FaultEnvDbTest, UnsyncedWritesAreLostButTheDatabaseOpens) {
  ASSERT_TRUE(Open().ok());
  PutAll(0, 100, /*sync=*/false);
  EXPECT_EQ(Present(100), "0-99");
  Crash();
  // The log was never synced, so it is empty after the crash; with nothing
  // torn, even paranoid_checks recovers cleanly.
  leveldb::Status s = Open(/*paranoid_checks=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(100), "");
  // The database is usable after the loss.
  PutAll(0, 10, /*sync=*/true);
  EXPECT_EQ(Present(100), "0-9");
}

TEST_F(FaultEnvDbTest, FlushedTablesSurviveAndTheSurvivorsAreAPrefix) {
  // A small write buffer makes LevelDB flush memtables to table files (which it
  // syncs, with the MANIFEST) and compact them, renaming and removing files.
  constexpr int kKeys = 3000;
  constexpr size_t kValueBytes = 1000;
  ASSERT_TRUE(Open(true, 64 << 10).ok());
  PutAll(0, kKeys, /*sync=*/false, kValueBytes);
  Crash();
  leveldb::Status s = Open(true, 64 << 10);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string present = Present(kKeys, kValueBytes);
  // Some flushed tables survive, the tail in the unsynced log does not, and
  // nothing is lost in the middle. How much survives varies from run to run:
  // closing the DB does not wait for a memtable flush that has not started,
  // so the previous (closed, never synced) log may be lost too.
  int last = -1;
  ASSERT_EQ(std::sscanf(present.c_str(), "0-%d", &last), 1) << present;
  EXPECT_EQ(present, "0-" + std::to_string(last));
  EXPECT_LT(last, kKeys - 1) << present;
  std::printf("survivors of %d unsynced writes: %s\n", kKeys, present.c_str());
}

TEST_F(FaultEnvDbTest, WriteErrorsReachTheCaller) {
  ASSERT_TRUE(Open().ok());
  PutAll(0, 10, /*sync=*/true);
  env_.SetWriteError(true);
  leveldb::Status s = Put(10, /*sync=*/false);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  s = Put(11, /*sync=*/true);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  env_.SetWriteError(false);
  // Reads still work and show only what was written before the error.
  EXPECT_EQ(Present(12), "0-9");
}

// What LevelDB 1.23 does with a damaged log, pinned because storage/ opens it
// with paranoid_checks (storage/leveldb_options_internal.h) and must plan around it. If
// one of these fails after a LevelDB upgrade, revisit storage's recovery and
// write-error handling rather than the expectation.
class LevelDbLogRecoveryTest : public FaultEnvDbTest {
 protected:
  // Writes keys [0, n) with sync=true, closes the DB and edits its log in place.
  void WriteThenEditLog(int n, const std::function<void(std::string*)>& edit) {
    ASSERT_TRUE(Open().ok());
    PutAll(0, n, /*sync=*/true);
    db_.reset();
    const std::string log = LogFile();
    ASSERT_FALSE(log.empty());
    std::string data;
    ASSERT_TRUE(leveldb::ReadFileToString(mem_.get(), log, &data).ok());
    edit(&data);
    ASSERT_TRUE(leveldb::WriteStringToFile(mem_.get(), data, log).ok());
    env_.ResetState();
  }
};

TEST_F(LevelDbLogRecoveryTest, TornTailIsDroppedQuietlyEvenWithParanoidChecks) {
  // A record cut short at the end of the log: the writer died mid-record.
  WriteThenEditLog(20, [](std::string* log) { log->resize(log->size() - 50); });
  leveldb::Status s = Open(/*paranoid_checks=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(20), "0-18");
}

TEST_F(LevelDbLogRecoveryTest, DamagedLastRecordFailsParanoidOpen) {
  // A complete last record with a wrong byte (a sector of zeros or stale data
  // after a crash looks the same) is corruption, not a torn tail.
  WriteThenEditLog(20, [](std::string* log) { (*log)[log->size() - 5] ^= 1; });
  leveldb::Status s = Open(/*paranoid_checks=*/true);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  s = Open(/*paranoid_checks=*/false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(20), "0-18");
}

TEST_F(LevelDbLogRecoveryTest, WithoutParanoidChecksABadRecordDropsTheRestOfItsBlock) {
  // One wrong byte in the first record: the reader skips the rest of the 32 KiB
  // log block, here every record, and Open still reports OK.
  WriteThenEditLog(20, [](std::string* log) { (*log)[20] ^= 1; });
  leveldb::Status s = Open(/*paranoid_checks=*/false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Present(20), "");
}

TEST_F(LevelDbLogRecoveryTest, WritesAfterAFailedLogAppendLeaveAnUnreadableLog) {
  // A failed log append does not stop the DB (only a failed sync does), and
  // the log writer counts the lost bytes as written, so later records sit at
  // the wrong block offsets. Every later sync=true Put succeeds, yet recovery
  // cannot read them: storage must stop writing after the first write error.
  // 1000-byte values, so the records cross a 32 KiB log block boundary.
  constexpr size_t kValueBytes = 1000;
  ASSERT_TRUE(Open().ok());
  PutAll(0, 10, /*sync=*/true, kValueBytes);
  env_.SetWriteError(true);
  EXPECT_TRUE(Put(10, /*sync=*/true, kValueBytes).IsIOError());
  env_.SetWriteError(false);
  PutAll(11, 200, /*sync=*/true, kValueBytes);
  EXPECT_EQ(Present(200, kValueBytes), "0-9,11-199");
  db_.reset();  // a clean close: nothing unsynced is lost

  leveldb::Status s = Open(/*paranoid_checks=*/true);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  s = Open(/*paranoid_checks=*/false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string present = Present(200, kValueBytes);
  EXPECT_NE(present, "0-9,11-199");
  std::printf("acknowledged keys after recovery: %s\n", present.c_str());
}

}  // namespace
}  // namespace tidemap::testing
