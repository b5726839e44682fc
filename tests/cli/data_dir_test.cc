// Proves, with the real `tidemap` binary, that an operator's slip cannot
// destroy or split a data dir:
// - a data dir whose db/CURRENT (or MANIFEST) was deleted is refused by every
//   command that opens it (exit 3, naming the file and `tidemap repair`),
//   with no file created or deleted, and `tidemap repair` brings every key
//   back under a new incarnation and a clean scrub;
// - a data dir without its database is refused, and nothing creates one;
// - with db/LOCK deleted under a running `tidemap serve`, a second opener is
//   still refused ("in use by pid N", exit 3), and every write the daemon
//   acknowledged afterwards is there after it stops.
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

constexpr int kKeys = 300;

RunResult Tidemap(const std::vector<std::string>& args) {
  return testing::RunProgram(TIDEMAP_BIN, args, {}, {}, 60'000);
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

class DataDirTest : public ::testing::Test {
 protected:
  DataDirTest() : tmp_(testing::MakeTempDir("tidemap-data-dir")), dir_(tmp_ + "/node") {}
  ~DataDirTest() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  // `tidemap init`, then kKeys keys written through the library and closed;
  // with `compact`, values of 2 KiB compacted into tables.
  void InitWithKeys(bool compact = false) {
    ASSERT_EQ(Tidemap({"init", "--data", dir_}).exit_code, 0);
    auto d = DataDir::Open(dir_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    for (int i = 0; i < kKeys; ++i) {
      const std::string n = std::to_string(i);
      const std::string value = compact ? n + std::string(2048, 'x') : "v" + n;
      ASSERT_TRUE((*d)->replica().Put("m", "k" + n, value).ok());
    }
    if (compact) (*d)->replica().Compact();
  }

  // name -> size of the database's files, but LevelDB's own diagnostic log
  // (LOG, LOG.old), which it rotates at every open attempt.
  std::map<std::string, uintmax_t> DbListing() {
    std::map<std::string, uintmax_t> out;
    for (const auto& e : fs::directory_iterator(dir_ + "/db")) {
      const std::string name = e.path().filename().string();
      if (name == "LOG" || name == "LOG.old") continue;
      out[name] = e.is_regular_file() ? e.file_size() : 0;
    }
    return out;
  }

  uint64_t Keys() {
    const RunResult r = Tidemap({"status", "--data", dir_, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r;
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? 0 : j.value("keys", uint64_t{0});
  }

  // Every command that opens the dir fails with exit 3 and `needle` in its
  // message, and leaves the database's files as they were.
  void ExpectEveryOpenRefused(std::string_view needle) {
    const auto before = DbListing();
    for (const std::vector<std::string>& args : {std::vector<std::string>{"status", "--data", dir_},
                                                 {"get", "--data", dir_, "m", "k1"},
                                                 {"put", "--data", dir_, "m", "k1", "new"},
                                                 {"scan", "--data", dir_, "m"},
                                                 {"scrub", "--data", dir_}}) {
      SCOPED_TRACE(args[0]);
      const RunResult r = Tidemap(args);
      EXPECT_EQ(r.exit_code, 3) << r;
      EXPECT_EQ(r.out, "") << r;
      EXPECT_TRUE(Contains(r.err, needle)) << r;
      EXPECT_TRUE(Contains(r.err, "tidemap repair --data " + dir_)) << r;
      EXPECT_EQ(DbListing(), before) << "no file created or deleted";
    }
  }

  void RepairBringsEveryKeyBack() {
    const RunResult r = Tidemap({"repair", "--data", dir_});
    ASSERT_EQ(r.exit_code, 0) << r;
    EXPECT_TRUE(Contains(r.out, "keys             " + std::to_string(kKeys) + "\n")) << r;
    EXPECT_TRUE(Contains(r.out, "OK: nothing was lost")) << r;
    EXPECT_EQ(Keys(), static_cast<uint64_t>(kKeys));
    const RunResult get = Tidemap({"get", "--data", dir_, "m", "k123"});
    EXPECT_EQ(get.exit_code, 0) << get;
    EXPECT_EQ(get.out, "v123");
    EXPECT_EQ(Tidemap({"scrub", "--data", dir_}).exit_code, 0);
  }

  const std::string tmp_;
  const std::string dir_;
};

TEST_F(DataDirTest, MissingCurrentIsRefusedUntouchedAndRepaired) {
  InitWithKeys();
  auto d = DataDir::Open(dir_);
  ASSERT_TRUE(d.ok());
  const uint64_t incarnation = (*d)->replica().incarnation();
  d->reset();
  ASSERT_TRUE(fs::remove(dir_ + "/db/CURRENT"));
  ExpectEveryOpenRefused(dir_ + "/db/CURRENT is missing");
  RepairBringsEveryKeyBack();
  d = DataDir::Open(dir_);
  ASSERT_TRUE(d.ok());
  EXPECT_NE((*d)->replica().incarnation(), incarnation) << "peers must diff with it anew";
}

TEST_F(DataDirTest, MissingManifestIsRefusedNamingItAndRepaired) {
  InitWithKeys();
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/db")) {
    if (e.path().filename().string().rfind("MANIFEST-", 0) == 0) removed += fs::remove(e.path());
  }
  ASSERT_GT(removed, 0);
  ExpectEveryOpenRefused("MANIFEST-");
  RepairBringsEveryKeyBack();
}

TEST_F(DataDirTest, RepairOfADamagedTableKeepsWhatCanBeReadAndRebuildsTheTree) {
  InitWithKeys(/*compact=*/true);
  ASSERT_FALSE(testing::DamageLargestTable(dir_ + "/db").empty());
  {
    // Before the repair, a read of a key in the damaged block is refused,
    // and the error names the key (LevelDB's own message does not).
    auto d = DataDir::Open(dir_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    int refused = 0;
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "k" + std::to_string(i);
      auto got = (*d)->replica().Get("m", key);
      if (got.ok()) continue;
      ++refused;
      EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
      EXPECT_TRUE(Contains(got.status().message(), "map 'm', key '" + key + "'"))
          << got.status().ToString();
    }
    EXPECT_GT(refused, 0);
  }
  const RunResult r = Tidemap({"repair", "--data", dir_});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "tables damaged   1 ")) << r;
  EXPECT_TRUE(Contains(r.out, "leaf mismatches  0\nindex mismatches 0\n")) << r;
  EXPECT_TRUE(Contains(r.out, "REPAIRED with losses")) << r;
  const uint64_t keys = Keys();
  EXPECT_LT(keys, static_cast<uint64_t>(kKeys)) << "the damaged block's records are gone";
  EXPECT_GT(keys, 0u) << "the rest is kept";
  const RunResult scrub = Tidemap({"scrub", "--data", dir_});
  EXPECT_EQ(scrub.exit_code, 0) << scrub;
  // Every key left reads back whole (the count came from the rebuilt tree).
  const RunResult scan = Tidemap({"scan", "--data", dir_, "m"});
  EXPECT_EQ(scan.exit_code, 0) << scan;
  EXPECT_EQ(static_cast<uint64_t>(std::count(scan.out.begin(), scan.out.end(), '\n')), keys);
}

TEST_F(DataDirTest, DataDirWithoutItsDatabaseIsRefusedAndNothingCreatesOne) {
  InitWithKeys();
  fs::remove_all(dir_ + "/db");
  const RunResult r = Tidemap({"status", "--data", dir_});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "has no database")) << r;
  EXPECT_FALSE(fs::exists(dir_ + "/db")) << "opening must not create a database";
  EXPECT_EQ(Tidemap({"put", "--data", dir_, "m", "k", "v"}).exit_code, 3);
  const RunResult repair = Tidemap({"repair", "--data", dir_});
  EXPECT_EQ(repair.exit_code, 3) << repair;
  EXPECT_TRUE(Contains(repair.err, "has no database to repair")) << repair;
  EXPECT_FALSE(fs::exists(dir_ + "/db"));
}

TEST_F(DataDirTest, DeletedLevelDbLockStillKeepsASecondProcessOut) {
  ASSERT_EQ(Tidemap({"init", "--data", dir_}).exit_code, 0);
  const std::string http = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
  const std::string listen = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
  testing::ChildProcess serve(TIDEMAP_BIN,
                              {"serve", "--data", dir_, "--http", http, "--listen", listen},
                              tmp_ + "/serve.log");
  ASSERT_TRUE(serve.started());
  ASSERT_TRUE(testing::WaitUntil(20'000, 50, [&] {
    return !serve.running() || Tidemap({"status", "--http", http}).exit_code == 0;
  }));
  ASSERT_TRUE(serve.running()) << serve.Log();

  ASSERT_TRUE(fs::remove(dir_ + "/db/LOCK"));
  const std::string in_use =
      "data dir " + dir_ + " is in use by pid " + std::to_string(serve.pid());
  for (const std::vector<std::string>& args : {std::vector<std::string>{"status", "--data", dir_},
                                               {"put", "--data", dir_, "m", "k", "v"},
                                               {"repair", "--data", dir_}}) {
    SCOPED_TRACE(args[0]);
    const RunResult r = Tidemap(args);
    EXPECT_EQ(r.exit_code, 3) << r;
    EXPECT_TRUE(Contains(r.err, in_use)) << r;
  }
  HttpClientOptions client;
  client.address = http;
  for (int i = 0; i < kKeys; ++i) {
    const std::string n = std::to_string(i);
    auto reply = HttpCall(client, "PUT", "/v1/maps/m/keys/k" + n, "v" + n);
    ASSERT_TRUE(reply.ok() && reply->status == 200) << "put " << n;
  }
  serve.Signal(SIGTERM);
  ASSERT_EQ(serve.Wait(20'000), 0) << serve.Log();
  EXPECT_EQ(Keys(), static_cast<uint64_t>(kKeys)) << "every acknowledged write survived";
}

}  // namespace
}  // namespace tidemap
