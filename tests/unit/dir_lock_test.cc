// Proves that opening a database directory can neither destroy it nor share
// it: a DirLock keeps a second opener out (in this process, and in a forked
// child that names its pid) even after LevelDB's LOCK file is deleted; a
// directory whose CURRENT is gone is refused, by Store::Open with or without
// create_if_missing, with every file left as it was; a missing directory is
// NotFound and is not created; and Store::Repair brings back every row after
// CURRENT was deleted, and reports a table it could not read.
// Everything runs on the real file system in a fresh temp dir.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "tests/support/test_util.h"
#include <tidemap/storage/dir_lock.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;

constexpr int kRows = 2000;

class DirLockTest : public ::testing::Test {
 protected:
  DirLockTest() : tmp_(testing::MakeTempDir("tidemap-dir-lock")), db_(tmp_ + "/db") {}
  ~DirLockTest() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  Result<std::unique_ptr<Store>> Open(bool create = true) {
    StoreOptions so;
    so.path = db_;
    so.create_if_missing = create;
    return Store::Open(so);
  }

  // A closed database of kRows rows, flushed into tables.
  void Fill() {
    auto store = Open();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int i = 0; i < kRows; ++i) {
      Batch b;
      b.Put("k" + std::to_string(i), std::string(100, static_cast<char>('a' + i % 26)));
      ASSERT_TRUE((*store)->Write(&b, false).ok());
    }
    (*store)->CompactRange("", "\xff");
  }

  int CountRows() {
    auto store = Open(false);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return -1;
    int n = 0;
    auto it = (*store)->NewIterator();
    for (it->Seek(""); it->Valid(); it->Next()) ++n;
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return n;
  }

  // "name:size" of every file in the database directory.
  std::map<std::string, uintmax_t> Listing() {
    std::map<std::string, uintmax_t> out;
    for (const auto& e : fs::directory_iterator(db_)) {
      out[e.path().filename().string()] = e.is_regular_file() ? e.file_size() : 0;
    }
    return out;
  }

  const std::string tmp_;
  const std::string db_;
};

TEST_F(DirLockTest, SecondLockInThisProcessIsRefusedNamingOurPid) {
  auto first = DirLock::Acquire(tmp_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = DirLock::Acquire(tmp_);
  ASSERT_TRUE(second.status().IsUnavailable()) << second.status().ToString();
  EXPECT_EQ(second.status().message(), tmp_ + " is in use by pid " + std::to_string(getpid()));
  EXPECT_EQ(DirLock::HolderPid(tmp_), getpid());
  first->reset();
  EXPECT_TRUE(DirLock::Acquire(tmp_).ok()) << "released when destroyed";
  EXPECT_EQ(DirLock::HolderPid(tmp_), std::nullopt);
}

TEST_F(DirLockTest, LockHeldByAnotherProcessNamesItsPid) {
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = DirLock::Acquire(tmp_);
    const char ok = lock.ok() ? '1' : '0';
    (void)!write(ready[1], &ok, 1);
    char c;
    (void)!read(done[0], &c, 1);  // hold the lock until the parent is done
    _exit(0);
  }
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, '1');
  auto refused = DirLock::Acquire(tmp_);
  EXPECT_TRUE(refused.status().IsUnavailable()) << refused.status().ToString();
  EXPECT_EQ(refused.status().message(), tmp_ + " is in use by pid " + std::to_string(child));
  (void)!write(done[1], "x", 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(DirLock::Acquire(tmp_).ok()) << "the kernel released the lock at exit";
  for (int fd : {ready[0], ready[1], done[0], done[1]}) close(fd);
}

TEST_F(DirLockTest, DeletingLevelDbsLockFileDoesNotLetASecondStoreIn) {
  auto first = Open();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(fs::remove(db_ + "/LOCK"));
  auto second = Open();
  ASSERT_TRUE(second.status().IsUnavailable()) << second.status().ToString();
  EXPECT_EQ(second.status().message(),
            "database " + db_ + " is in use by pid " + std::to_string(getpid()));
}

TEST_F(DirLockTest, MissingCurrentIsRefusedAndNothingIsTouched) {
  Fill();
  ASSERT_TRUE(fs::remove(db_ + "/CURRENT"));
  const auto before = Listing();
  for (bool create : {true, false}) {
    SCOPED_TRACE(create ? "create_if_missing" : "no create");
    auto s = Open(create);
    ASSERT_TRUE(s.status().IsCorruption()) << s.status().ToString();
    EXPECT_NE(s.status().message().find(db_ + "/CURRENT is missing"), std::string::npos)
        << s.status().ToString();
    EXPECT_EQ(Listing(), before) << "a refused open must not create or delete a file";
  }
}

TEST_F(DirLockTest, MissingDirectoryWithoutCreateIsNotFoundAndNotCreated) {
  auto s = Open(/*create=*/false);
  EXPECT_TRUE(s.status().IsNotFound()) << s.status().ToString();
  EXPECT_FALSE(fs::exists(db_));
  fs::create_directory(db_);
  s = Open(/*create=*/false);
  EXPECT_TRUE(s.status().IsNotFound()) << s.status().ToString();
  EXPECT_TRUE(fs::is_empty(db_)) << "an empty directory stays empty";
}

TEST_F(DirLockTest, RepairAfterCurrentWasDeletedBringsBackEveryRow) {
  Fill();
  ASSERT_TRUE(fs::remove(db_ + "/CURRENT"));
  auto report = Store::Repair(db_);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->tables_lost, 0u);
  EXPECT_EQ(report->problems, 0u);
  EXPECT_GE(report->tables_after, 1u);
  EXPECT_EQ(CountRows(), kRows);
}

TEST_F(DirLockTest, RepairReportsATableItCouldNotRead) {
  Fill();
  ASSERT_FALSE(testing::DamageLargestTable(db_).empty());
  auto report = Store::Repair(db_);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_GT(report->tables_lost + report->problems, 0u) << "the damage is reported";
  const int rows = CountRows();
  EXPECT_LT(rows, kRows);
  EXPECT_GT(rows, 0) << "what could be read is kept";
}

TEST_F(DirLockTest, RepairOfADatabaseInUseIsRefused) {
  auto open = Open();
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  auto report = Store::Repair(db_);
  EXPECT_TRUE(report.status().IsUnavailable()) << report.status().ToString();
}

}  // namespace
}  // namespace tidemap
