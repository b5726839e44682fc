// Proves `tidemap import TARGET FILE.ndjson` end to end with the real
// executable: every op of a file lands, in batches, over --http (against an
// HttpServer in this process) and with --data; stdin as "-"; a bad line stops
// the import with its line number, the batches before it written and the
// exit code of the error (2 malformed, 4 over a limit, 3 unreachable).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http.h>

namespace tidemap {
namespace {

using testing::RunResult;

RunResult RunTidemap(const std::vector<std::string>& args, std::string_view input = {}) {
  return testing::RunProgram(TIDEMAP_BIN, args, input, {}, 60'000);
}

std::string PutLine(int i, size_t value_bytes = 0) {
  const std::string value =
      value_bytes > 0 ? std::string(value_bytes, 'v') : "value " + std::to_string(i);
  return nlohmann::json{
             {"op", "put"}, {"map", "m"}, {"key", "k" + std::to_string(i)}, {"value", value}}
             .dump() +
         "\n";
}

class ImportTest : public ::testing::Test {
 protected:
  ImportTest() : tmp_(testing::MakeTempDir("tidemap-import-test")), data_(tmp_ + "/node") {
    const RunResult init = RunTidemap({"init", "--data", data_});
    EXPECT_EQ(init.exit_code, 0) << init;
  }
  ~ImportTest() override {
    server_.reset();
    dir_.reset();
    std::error_code ec;
    std::filesystem::remove_all(tmp_, ec);
  }

  void Serve() {
    auto d = DataDir::Open(data_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(d).value();
    HttpOptions o;
    o.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(o, HttpContext{&dir_->replica(), "key", {}});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = tmp_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  const std::string tmp_, data_;
  std::unique_ptr<DataDir> dir_;
  std::unique_ptr<HttpServer> server_;
  std::string address_;
};

TEST_F(ImportTest, EveryOpLandsInBatchesOverHttp) {
  Serve();
  std::string text;
  for (int i = 0; i < 2500; ++i) text += PutLine(i);
  text +=
      "\n"
      R"({"op":"delete","map":"m","key":"k7"})"
      "\n";
  const std::string file = Write("ops.ndjson", text);
  const RunResult r = RunTidemap({"import", "--http", address_, file});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("imported 2501 ops in 3 batches"), std::string::npos) << r.out;
  Replica& replica = dir_->replica();
  EXPECT_EQ(replica.Get("m", "k2499")->value, "value 2499");
  EXPECT_TRUE(replica.Get("m", "k7").status().IsNotFound());
  const Result<ReplicaStats> stats = replica.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 2499u);
  // From stdin, in batches of 10.
  const RunResult piped = RunTidemap({"import", "--http", address_, "--batch", "10", "-"},
                                     PutLine(5000) + PutLine(5001));
  ASSERT_EQ(piped.exit_code, 0) << piped;
  EXPECT_EQ(replica.Get("m", "k5001")->value, "value 5001");
}

TEST_F(ImportTest, ABadLineStopsTheImportNamingIt) {
  Serve();
  std::string text;
  for (int i = 0; i < 15; ++i) text += PutLine(i);
  text += R"({"op":"put","map":"m","key":"no value"})"
          "\n";  // line 16
  text += PutLine(99);
  const std::string file = Write("bad.ndjson", text);
  const RunResult r = RunTidemap({"import", "--http", address_, "--batch", "10", file});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_NE(r.err.find("line 16"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the 10 ops before line 11 were written"), std::string::npos) << r.err;
  Replica& replica = dir_->replica();
  EXPECT_TRUE(replica.Get("m", "k9").ok());
  EXPECT_TRUE(replica.Get("m", "k10").status().IsNotFound()) << "its batch is refused whole";
  EXPECT_TRUE(replica.Get("m", "k99").status().IsNotFound());
  // Over a limit: exit 4. An unreachable node: exit 3.
  const std::string big = Write("big.ndjson", PutLine(1, (size_t{16} << 20) + 1));
  EXPECT_EQ(RunTidemap({"import", "--http", address_, big}).exit_code, 4);
  EXPECT_EQ(RunTidemap({"import", "--http", "127.0.0.1:1", file}).exit_code, 3);
  EXPECT_EQ(RunTidemap({"import", "--http", address_, tmp_ + "/none.ndjson"}).exit_code, 2);
}

TEST_F(ImportTest, DataDirTargetTakesTheSameFile) {
  std::string text;
  for (int i = 0; i < 30; ++i) text += PutLine(i);
  const std::string file = Write("ops.ndjson", text);
  const RunResult r = RunTidemap({"import", "--data", data_, "--batch", "7", file});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("imported 30 ops in 5 batches"), std::string::npos) << r.out;
  const RunResult get = RunTidemap({"get", "--data", data_, "m", "k29"});
  EXPECT_EQ(get.out, "value 29");
  const RunResult bad =
      RunTidemap({"import", "--data", data_, Write("bad.ndjson", PutLine(1) + "not json\n")});
  EXPECT_EQ(bad.exit_code, 2) << bad;
  EXPECT_NE(bad.err.find("line 2"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace tidemap
