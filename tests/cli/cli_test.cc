// Proves the command-line contract (the README's "Command line") end to end:
// init/id keys and the identity file, put/get/del round trips (binary values
// through stdin), scan pages and their JSON, status --json, the exit codes
// (usage 2, unreachable 3, refused 4, not found 1), --help and the demo; and
// the same commands with the `--http HOST:PORT` target against an HttpServer
// this test process runs over the data dir (no daemon exists yet), with
// bearer tokens from --token and TIDEMAP_TOKEN.
// Every test runs the real `tidemap` binary with posix_spawn (no shell, so
// arguments pass byte for byte), feeds its stdin from a pipe, captures stdout
// and stderr separately, and works in its own fresh temp dir.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/base/version.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http.h>
#include <tidemap/server/json.h>
#include <tidemap/server/status.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

constexpr int kRunTimeoutMs = 60'000;

using testing::RunResult;

// Runs the tidemap binary (see tests/support/process.h).
RunResult RunTidemap(const std::vector<std::string>& args, std::string_view input = {},
                     const std::vector<std::string>& env = {}) {
  return testing::RunProgram(TIDEMAP_BIN, args, input, env, kRunTimeoutMs);
}

// The last line of `text`, without its newline.
std::string LastLine(std::string text) {
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

bool IsHlcText(const std::string& s) {
  static const std::regex kHlc(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z-\d{5}$)");
  return std::regex_match(s, kHlc);
}

bool IsHex(const std::string& s, size_t digits) {
  return s.size() == digits && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// RFC 4648 base64 with padding, decoded independently of the code under test.
// Returns false on any malformed input.
bool DecodeBase64(std::string_view text, std::string* out) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (text.size() % 4 != 0) return false;
  out->clear();
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t bits = 0;
    int pad = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      uint32_t v = 0;
      if (c == '=') {
        if (i + 4 != text.size() || j < 2) return false;
        ++pad;
      } else {
        if (pad > 0) return false;
        const size_t pos = kAlphabet.find(c);
        if (pos == std::string_view::npos) return false;
        v = static_cast<uint32_t>(pos);
      }
      bits = (bits << 6) | v;
    }
    out->push_back(static_cast<char>((bits >> 16) & 0xff));
    if (pad < 2) out->push_back(static_cast<char>((bits >> 8) & 0xff));
    if (pad < 1) out->push_back(static_cast<char>(bits & 0xff));
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

class CliTest : public ::testing::Test {
 protected:
  CliTest()
      : tmp_(testing::MakeTempDir("tidemap-cli-test")),
        data_((std::filesystem::path(tmp_) / "node").string()) {}
  ~CliTest() override {
    std::error_code ec;
    std::filesystem::remove_all(tmp_, ec);
  }

  // `tidemap init` on data_; returns the public key it printed.
  std::string Init() {
    const RunResult r = RunTidemap({"init", "--data", data_});
    EXPECT_EQ(r.exit_code, 0) << r;
    return LastLine(r.out);
  }

  // Runs `tidemap CMD --data data_ ARGS...`.
  RunResult Data(const std::string& cmd, std::vector<std::string> args = {},
                 std::string_view input = {}) {
    args.insert(args.begin(), {cmd, "--data", data_});
    return RunTidemap(args, input);
  }

  // Puts MAP/KEY=VALUE and checks it worked; returns the printed HLC.
  std::string Put(const std::string& map, const std::string& key, const std::string& value) {
    const RunResult r = Data("put", {map, key, value});
    EXPECT_EQ(r.exit_code, 0) << r;
    return LastLine(r.out);
  }

  nlohmann::json Json(const RunResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r;
    auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out;
    return j;
  }

  // "key=value key=value" over a scan page's items; "<binary>" for base64 fields.
  static std::string RenderItems(const nlohmann::json& page) {
    std::string out;
    for (const auto& item : page.at("items")) {
      if (!out.empty()) out += ' ';
      out += item.contains("key") ? item["key"].get<std::string>() : "<binary>";
      out += '=';
      out += item.contains("value") ? item["value"].get<std::string>() : "<binary>";
    }
    return out;
  }

  const std::string tmp_;
  const std::string data_;
};

TEST_F(CliTest, InitPrintsKeyWritesPrivateIdentityAndNeverOverwrites) {
  const RunResult init = RunTidemap({"init", "--data", data_});
  ASSERT_EQ(init.exit_code, 0) << init;
  const std::string key = LastLine(init.out);
  EXPECT_TRUE(IsHex(key, 64)) << "last line: '" << key << "'";

  const std::string key_file = data_ + "/identity.key";
  struct stat st {};
  ASSERT_EQ(stat(key_file.c_str(), &st), 0) << key_file;
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  const std::string key_bytes = ReadFile(key_file);
  EXPECT_FALSE(key_bytes.empty());

  const RunResult id = RunTidemap({"id", "--data", data_});
  EXPECT_EQ(id.exit_code, 0) << id;
  EXPECT_EQ(LastLine(id.out), key);

  const RunResult again = RunTidemap({"init", "--data", data_});
  EXPECT_EQ(again.exit_code, 4) << again;
  EXPECT_TRUE(Contains(again.err, "identity")) << again;
  EXPECT_TRUE(Contains(again.err, key_file)) << again;
  EXPECT_EQ(ReadFile(key_file), key_bytes);
  EXPECT_EQ(LastLine(RunTidemap({"id", "--data", data_}).out), key);
}

TEST_F(CliTest, PutGetDelRoundTripWithIncreasingHlcs) {
  Init();
  std::vector<std::string> hlcs;
  for (const char* value : {"one", "two words", "three"}) {
    const RunResult put = Data("put", {"m", "k", value});
    ASSERT_EQ(put.exit_code, 0) << put;
    const std::vector<std::string> lines = Lines(put.out);
    ASSERT_EQ(lines.size(), 1u) << put;
    EXPECT_TRUE(IsHlcText(lines[0])) << lines[0];
    if (!hlcs.empty()) {
      EXPECT_GT(lines[0], hlcs.back());
    }
    hlcs.push_back(lines[0]);

    const RunResult get = Data("get", {"m", "k"});
    EXPECT_EQ(get.exit_code, 0) << get;
    EXPECT_EQ(get.out, value);  // exact bytes: stdout is a pipe, so no newline is added
  }

  // Keys are per map.
  EXPECT_EQ(Data("get", {"other", "k"}).exit_code, 1);

  const RunResult del = Data("del", {"m", "k"});
  ASSERT_EQ(del.exit_code, 0) << del;
  EXPECT_TRUE(IsHlcText(LastLine(del.out))) << del;
  EXPECT_GT(LastLine(del.out), hlcs.back());

  for (const char* key : {"k", "never-written"}) {
    const RunResult get = Data("get", {"m", key});
    EXPECT_EQ(get.exit_code, 1) << get;
    EXPECT_EQ(get.out, "");
    EXPECT_TRUE(Contains(get.err, "not found")) << get;
  }

  // A delete then a put brings the key back.
  Put("m", "k", "four");
  EXPECT_EQ(Data("get", {"m", "k"}).out, "four");
}

TEST_F(CliTest, PutDashReadsExactBytesFromStdin) {
  Init();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"nul", std::string("a\0b\0", 4)},
      {"binary", all_bytes + all_bytes},
      {"newline", "line\n"},
      {"crlf", "x\r\n\r\n"},
      {"empty", ""},
      {"dash", "-"},
      {"large", std::string(1 << 20, '\xa5') + "end"},  // more than a pipe buffer
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(key);
    const RunResult put = Data("put", {"bin", key, "-"}, value);
    ASSERT_EQ(put.exit_code, 0) << put;
    EXPECT_TRUE(IsHlcText(LastLine(put.out))) << put;
    const RunResult get = Data("get", {"bin", key});
    EXPECT_EQ(get.exit_code, 0) << get;
    EXPECT_EQ(get.out.size(), value.size());
    EXPECT_TRUE(get.out == value) << "bytes differ";
  }
}

TEST_F(CliTest, ScanJsonPagesInKeyOrderWithoutTombstones) {
  Init();
  Put("fruit", "cherry", "dark red");
  Put("fruit", "apple", "red");
  Put("fruit", "banana", "yellow");
  Put("fruit", "apricot", "orange");
  Put("fruit", "date", "brown");
  Put("veg", "artichoke", "green");
  ASSERT_EQ(Data("del", {"fruit", "date"}).exit_code, 0);
  const std::string node_id = Json(Data("status", {"--json"})).at("node_id").get<std::string>();

  const nlohmann::json all = Json(Data("scan", {"fruit", "--json"}));
  EXPECT_EQ(RenderItems(all), "apple=red apricot=orange banana=yellow cherry=dark red");
  EXPECT_TRUE(all.at("next").is_null()) << all.dump();
  for (const auto& item : all.at("items")) {
    EXPECT_TRUE(IsHlcText(item.at("hlc").get<std::string>())) << item.dump();
    EXPECT_EQ(item.at("origin"), node_id) << item.dump();
  }

  EXPECT_EQ(RenderItems(Json(Data("scan", {"fruit", "--prefix", "ap", "--json"}))),
            "apple=red apricot=orange");
  EXPECT_EQ(RenderItems(Json(Data("scan", {"fruit", "--prefix", "zz", "--json"}))), "");
  EXPECT_EQ(RenderItems(Json(Data("scan", {"nothing", "--json"}))), "");

  const nlohmann::json page1 = Json(Data("scan", {"fruit", "--limit", "2", "--json"}));
  EXPECT_EQ(RenderItems(page1), "apple=red apricot=orange");
  ASSERT_TRUE(page1.at("next").is_string()) << page1.dump();
  const nlohmann::json page2 = Json(Data(
      "scan", {"fruit", "--after", page1["next"].get<std::string>(), "--limit", "2", "--json"}));
  EXPECT_EQ(RenderItems(page2), "banana=yellow cherry=dark red");
  // Only the tombstone of `date` follows: that is the end, not another page.
  EXPECT_TRUE(page2.at("next").is_null()) << page2.dump();

  const nlohmann::json one = Json(Data("scan", {"fruit", "--limit", "1", "--json"}));
  EXPECT_EQ(RenderItems(one), "apple=red");
  EXPECT_EQ(one.at("next"), "apple");
}

TEST_F(CliTest, ScanJsonGivesBase64ForNonUtf8Bytes) {
  Init();
  const std::string value("\xff\xfe\x00z\x80", 5);
  ASSERT_EQ(Data("put", {"m", "bin", "-"}, value).exit_code, 0);
  Put("m", "text", "caf\xc3\xa9");  // valid UTF-8 stays text
  Put("m", "\xc0\xff", "v");        // a non-UTF-8 key, passed as raw argv bytes

  const nlohmann::json page = Json(Data("scan", {"m", "--json"}));
  ASSERT_EQ(page.at("items").size(), 3u) << page.dump();
  const auto& bin = page["items"][0];
  EXPECT_EQ(bin.at("key"), "bin");
  EXPECT_FALSE(bin.contains("value")) << bin.dump();
  std::string decoded;
  ASSERT_TRUE(DecodeBase64(bin.at("value_base64").get<std::string>(), &decoded)) << bin.dump();
  EXPECT_TRUE(decoded == value);

  const auto& text = page["items"][1];
  EXPECT_EQ(text.at("value"), "caf\xc3\xa9");
  EXPECT_FALSE(text.contains("value_base64"));

  const auto& binary_key = page["items"][2];
  EXPECT_FALSE(binary_key.contains("key")) << binary_key.dump();
  ASSERT_TRUE(DecodeBase64(binary_key.at("key_base64").get<std::string>(), &decoded));
  EXPECT_EQ(decoded, "\xc0\xff");
  EXPECT_EQ(binary_key.at("value"), "v");
}

TEST_F(CliTest, HumanScanPrintsKeyTabValueLines) {
  Init();
  Put("fruit", "cherry", "dark red");
  Put("fruit", "apple", "red");
  Put("fruit", "banana", "yellow");
  ASSERT_EQ(Data("del", {"fruit", "banana"}).exit_code, 0);

  const RunResult scan = Data("scan", {"fruit"});
  EXPECT_EQ(scan.exit_code, 0) << scan;
  EXPECT_EQ(scan.out, "apple\tred\ncherry\tdark red\n");

  const RunResult empty = Data("scan", {"nothing"});
  EXPECT_EQ(empty.exit_code, 0) << empty;
  EXPECT_EQ(empty.out, "");
}

TEST_F(CliTest, StatusJsonCountsKeysTombstonesAndOplog) {
  const RunResult init = RunTidemap({"init", "--data", data_});
  ASSERT_EQ(init.exit_code, 0) << init;
  const std::string key = LastLine(init.out);

  const nlohmann::json fresh = Json(Data("status", {"--json"}));
  EXPECT_EQ(fresh.at("keys"), 0);
  EXPECT_EQ(fresh.at("tombstones"), 0);
  EXPECT_EQ(fresh.at("oplog").at("last_seq"), 0);

  Put("m", "a", "1");
  Put("m", "b", "2");
  Put("n", "c", "3");
  ASSERT_EQ(Data("del", {"m", "a"}).exit_code, 0);

  const nlohmann::json s = Json(Data("status", {"--json"}));
  const std::string node_id = s.at("node_id").get<std::string>();
  EXPECT_TRUE(IsHex(node_id, 16)) << node_id;
  EXPECT_TRUE(Contains(init.out, "node id " + node_id)) << init;
  EXPECT_EQ(s.at("public_key"), key);
  EXPECT_EQ(s.at("keys"), 2);
  EXPECT_EQ(s.at("tombstones"), 1);
  EXPECT_EQ(s.at("oplog").at("first_seq"), 1);
  EXPECT_EQ(s.at("oplog").at("last_seq"), 4);  // three puts and a delete
  ASSERT_TRUE(s.at("peers").is_array()) << s.dump();
  EXPECT_TRUE(s["peers"].empty()) << s.dump();

  // The Merkle root: 32 hex digits, zero for an empty replica, changing with writes.
  EXPECT_EQ(fresh.at("merkle_root"), std::string(32, '0'));
  const std::string root = s.at("merkle_root").get<std::string>();
  EXPECT_TRUE(IsHex(root, 32)) << root;
  EXPECT_NE(root, std::string(32, '0'));

  const RunResult human = Data("status");
  EXPECT_EQ(human.exit_code, 0) << human;
  EXPECT_TRUE(Contains(human.out, "merkle root " + root)) << human;
  EXPECT_TRUE(Contains(human.out, node_id)) << human;
  EXPECT_TRUE(Contains(human.out, key)) << human;
  EXPECT_TRUE(Contains(human.out, "2 live, 1 tombstones")) << human;
  EXPECT_TRUE(Contains(human.out, "encryption  none (values stored in the clear)")) << human;
  EXPECT_EQ(s.at("encryption"), nlohmann::json({{"encrypted", false}})) << s.dump();
}

// scrub compares the stored Merkle tree with a rebuild: exit 0 on a healthy
// data dir; after one leaf row is overwritten behind tidemap's back, exit 1
// with MISMATCH and the count of bad buckets.
TEST_F(CliTest, ScrubPassesOnAHealthyDirAndCatchesATamperedLeaf) {
  Init();
  for (int i = 0; i < 20; ++i) Put("m", "k" + std::to_string(i), "v");
  ASSERT_EQ(Data("del", {"m", "k3"}).exit_code, 0);
  const RunResult ok = RunTidemap({"scrub", "--data", data_});
  EXPECT_EQ(ok.exit_code, 0) << ok;
  EXPECT_TRUE(Contains(ok.out, "records          20")) << ok;
  EXPECT_TRUE(Contains(ok.out, "OK")) << ok;
  {
    StoreOptions so;
    so.path = (std::filesystem::path(data_) / "db").string();
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto it = (*store)->NewIterator();
    it->Seek("k");  // the first Merkle page row (family prefix 'k')
    ASSERT_TRUE(it->Valid());
    ASSERT_EQ(it->key()[0], 'k');
    const std::string page_key(it->key());
    auto leaves = rows::DecodeLeafPage(it->value());
    it.reset();
    ASSERT_TRUE(leaves.ok()) << leaves.status().ToString();
    ASSERT_FALSE(leaves->empty());
    // A well-formed page whose first leaf has the wrong digest.
    (*leaves)[0].digest = Digest128{0x0101010101010101, 0x0101010101010101};
    Batch b;
    b.Put(page_key, rows::EncodeLeafPage(*leaves));
    ASSERT_TRUE((*store)->Write(&b, true).ok());
  }
  const RunResult bad = RunTidemap({"scrub", "--data", data_});
  EXPECT_EQ(bad.exit_code, 1) << bad;
  EXPECT_TRUE(Contains(bad.out, "leaf mismatches  1")) << bad;
  EXPECT_TRUE(Contains(bad.err, "MISMATCH")) << bad;
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  Init();
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"no-such-command"},
      {"get", "m", "k"},  // no target
      {"put", "m", "k", "v"},
      {"status"},
      {"get", "--data", data_, "m"},  // missing KEY
      {"put", "--data", data_, "m", "k"},
      {"del", "--data", data_, "m"},
      {"scan", "--data", data_},
      {"init"},
      {"id"},
      {"get", "--data", data_, "--http", "127.0.0.1:1", "m", "k"},  // two targets
      {"scan", "--data", data_, "m", "--limit", "0"},
      {"scan", "--data", data_, "m", "--limit", "10001"},
      {"status", "--data", data_, "--no-such-flag"},
      {"get", "--data", data_, "m", "k", "extra"},
      {"put", "--data", data_, "", "k", "v"},  // empty map name
      {"get", "--data", data_, "", "k"},
      {"del", "--data", data_, "", "k"},
      {"scan", "--data", data_, ""},
      {"put", "--data", data_, "m", "", "v"},  // empty key
      {"get", "--data", data_, "m", ""},
      {"del", "--data", data_, "m", ""},
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const auto& a : args) joined += " '" + a + "'";
    SCOPED_TRACE("tidemap" + joined);
    const RunResult r = RunTidemap(args);
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_FALSE(r.err.empty()) << r;
  }
  EXPECT_TRUE(Contains(RunTidemap({"get", "m", "k"}).err, "--data DIR")) << "names the targets";
}

TEST_F(CliTest, MissingDataDirExitsThreeAndPointsToInit) {
  for (const std::string cmd : {"put", "get", "del", "scan", "status"}) {
    SCOPED_TRACE(cmd);
    std::vector<std::string> args = {"m", "k", "v"};
    if (cmd == "get" || cmd == "del") args.resize(2);
    if (cmd == "scan") args.resize(1);
    if (cmd == "status") args.clear();
    const RunResult r = Data(cmd, args);
    EXPECT_EQ(r.exit_code, 3) << r;
    EXPECT_EQ(r.out, "");
    EXPECT_TRUE(Contains(r.err, "tidemap init")) << r;
    EXPECT_TRUE(Contains(r.err, data_)) << r;
  }
  const RunResult id = RunTidemap({"id", "--data", data_});
  EXPECT_EQ(id.exit_code, 3) << id;
  EXPECT_EQ(id.out, "");
  EXPECT_TRUE(Contains(id.err, "tidemap init")) << id;
  EXPECT_FALSE(std::filesystem::exists(data_)) << "a read or write must not create the data dir";

  // A dir that exists but holds no identity is not a data dir either.
  const RunResult r = RunTidemap({"get", "--data", tmp_, "m", "k"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "not a tidemap data dir")) << r;
}

TEST_F(CliTest, DataDirHeldByAnotherProcessExitsThreeInUse) {
  Init();
  Put("m", "k", "v");
  {
    auto held = DataDir::Open(data_);
    ASSERT_TRUE(held.ok()) << held.status().ToString();
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"get", "--data", data_, "m", "k"},
          {"put", "--data", data_, "m", "k", "w"},
          {"del", "--data", data_, "m", "k"},
          {"scan", "--data", data_, "m"},
          {"status", "--data", data_, "--json"}}) {
      SCOPED_TRACE(args[0]);
      const RunResult r = RunTidemap(args);
      EXPECT_EQ(r.exit_code, 3) << r;
      EXPECT_EQ(r.out, "");
      EXPECT_TRUE(Contains(r.err, "in use")) << r;
      EXPECT_TRUE(Contains(r.err, data_)) << r;
    }
  }
  // Released: the same commands work again, and the refused put changed nothing.
  const RunResult get = Data("get", {"m", "k"});
  EXPECT_EQ(get.exit_code, 0) << get;
  EXPECT_EQ(get.out, "v");
}

TEST_F(CliTest, OverLimitInputIsRefusedWithExitFour) {
  Init();
  const std::string long_key(4097, 'k');
  const RunResult key = Data("put", {"m", long_key, "v"});
  EXPECT_EQ(key.exit_code, 4) << key.err;
  EXPECT_EQ(key.out, "");
  EXPECT_TRUE(Contains(key.err, "4097")) << key.err;
  EXPECT_TRUE(Contains(key.err, "4096")) << key.err;

  const RunResult map = Data("put", {std::string(256, 'm'), "k", "v"});
  EXPECT_EQ(map.exit_code, 4) << map;
  EXPECT_TRUE(Contains(map.err, "256")) << map;
  EXPECT_TRUE(Contains(map.err, "255")) << map;

  const size_t value_max = size_t{16} << 20;
  const RunResult value = Data("put", {"m", "big", "-"}, std::string(value_max + 1, 'v'));
  EXPECT_EQ(value.exit_code, 4) << value.err;
  EXPECT_TRUE(Contains(value.err, std::to_string(value_max + 1))) << value.err;
  EXPECT_TRUE(Contains(value.err, std::to_string(value_max))) << value.err;

  // Nothing was written; exactly at the limits is fine.
  EXPECT_EQ(Json(Data("status", {"--json"})).at("keys"), 0);
  const std::string max_key(4096, 'k');
  EXPECT_EQ(Data("put", {std::string(255, 'm'), max_key, "v"}).exit_code, 0);
  EXPECT_EQ(Data("get", {std::string(255, 'm'), max_key}).out, "v");
}

TEST_F(CliTest, UnreachableHttpNodeExitsThree) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"get", "--http", "127.0.0.1:1", "m", "k"},
        {"put", "--http", "127.0.0.1:1", "m", "k", "v"},
        {"scan", "--http", "127.0.0.1:1", "m"},
        {"status", "--http", "127.0.0.1:1", "--json"}}) {
    SCOPED_TRACE(args[0]);
    const RunResult r = RunTidemap(args);
    EXPECT_EQ(r.exit_code, 3) << r;
    EXPECT_EQ(r.out, "");
    EXPECT_TRUE(Contains(r.err, "127.0.0.1:1")) << r;
  }
}

// An HttpServer in this process over the data dir, for `--http` runs.
class CliHttpTest : public CliTest {
 protected:
  void Serve(const std::string& token = "", std::function<net::NetStatus()> net_status = nullptr) {
    Init();
    auto d = DataDir::Open(data_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(d).value();
    HttpOptions o;
    o.listen = "127.0.0.1:0";
    o.bearer_token = token;
    auto s = HttpServer::Start(o, HttpContext{&dir_->replica(), dir_->identity().public_key_text(),
                                              std::move(net_status)});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }
  ~CliHttpTest() override {
    server_.reset();
    dir_.reset();
  }

  // Runs `tidemap CMD --http address_ ARGS...`.
  RunResult Http(const std::string& cmd, std::vector<std::string> args = {},
                 std::string_view input = {}, const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), {cmd, "--http", address_});
    return RunTidemap(args, input, env);
  }

  std::unique_ptr<DataDir> dir_;
  std::unique_ptr<HttpServer> server_;
  std::string address_;
};

TEST_F(CliHttpTest, PutGetDelRoundTripOverHttp) {
  Serve();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"k", "one"},
      {"with/slash ?&#%", "two words"},
      {std::string("\xc0\xff\x01", 3), all_bytes},  // a binary key, passed as raw argv bytes
      {"large", std::string(1 << 20, '\xa5') + "end"},
      {"empty", ""},
  };
  std::string last_hlc;
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(key.substr(0, 20));
    const RunResult put = Http("put", {"m", key, "-"}, value);
    ASSERT_EQ(put.exit_code, 0) << put;
    const std::vector<std::string> lines = Lines(put.out);
    ASSERT_EQ(lines.size(), 1u) << put;
    EXPECT_TRUE(IsHlcText(lines[0])) << lines[0];
    EXPECT_GT(lines[0], last_hlc);
    last_hlc = lines[0];
    auto rec = dir_->replica().Get("m", key);
    ASSERT_TRUE(rec.ok()) << rec.status().ToString();
    EXPECT_TRUE(rec->value == value) << "the node holds exactly the bytes sent";

    const RunResult get = Http("get", {"m", key});
    EXPECT_EQ(get.exit_code, 0) << get;
    EXPECT_TRUE(get.out == value) << "bytes differ";
  }
  const RunResult del = Http("del", {"m", "k"});
  ASSERT_EQ(del.exit_code, 0) << del;
  EXPECT_TRUE(IsHlcText(LastLine(del.out))) << del;
  for (const char* key : {"k", "never-written"}) {
    const RunResult get = Http("get", {"m", key});
    EXPECT_EQ(get.exit_code, 1) << get;
    EXPECT_EQ(get.out, "");
    EXPECT_TRUE(Contains(get.err, "not found")) << get;
  }
  EXPECT_EQ(Http("put", {"m", "argv", "from argv"}).exit_code, 0);
  EXPECT_EQ(Http("get", {"m", "argv"}).out, "from argv");
}

TEST_F(CliHttpTest, ScanAndStatusPrintWhatTheDataTargetPrints) {
  Serve();
  for (const char* k : {"cherry", "apple", "banana", "apricot", "date"}) {
    ASSERT_EQ(Http("put", {"fruit", k, std::string("v-") + k}).exit_code, 0);
  }
  ASSERT_EQ(Http("del", {"fruit", "date"}).exit_code, 0);
  ASSERT_EQ(Http("put", {"fruit", "\xc0\xff", "\xfe"}).exit_code, 0);

  // The JSON page is the document `--data` builds from the same replica.
  auto page = dir_->replica().Scan("fruit", "", std::nullopt, 1000);
  ASSERT_TRUE(page.ok());
  const RunResult json = Http("scan", {"fruit", "--json"});
  EXPECT_EQ(json.exit_code, 0) << json;
  EXPECT_EQ(json.out, ScanPageJson(*page).dump(2) + "\n");

  const RunResult human = Http("scan", {"fruit", "--prefix", "ap"});
  EXPECT_EQ(human.exit_code, 0) << human;
  EXPECT_EQ(human.out, "apple\tv-apple\napricot\tv-apricot\n");

  const nlohmann::json page1 = Json(Http("scan", {"fruit", "--limit", "2", "--json"}));
  EXPECT_EQ(RenderItems(page1), "apple=v-apple apricot=v-apricot");
  EXPECT_EQ(page1.at("next"), "apricot");
  const nlohmann::json page2 =
      Json(Http("scan", {"fruit", "--after", "apricot", "--limit", "2", "--json"}));
  EXPECT_EQ(RenderItems(page2), "banana=v-banana cherry=v-cherry");
  EXPECT_EQ(Http("scan", {"nothing"}).out, "");

  auto info = CollectStatusInfo(&dir_->replica(), dir_->identity().public_key_text());
  ASSERT_TRUE(info.ok());
  const RunResult status = Http("status", {"--json"});
  EXPECT_EQ(status.exit_code, 0) << status;
  EXPECT_EQ(status.out, StatusJson(*info, {}).dump(2) + "\n");
  const RunResult status_human = Http("status");
  EXPECT_EQ(status_human.exit_code, 0) << status_human;
  EXPECT_TRUE(Contains(status_human.out, "merkle root " + info->merkle_root.ToHex()))
      << status_human;
  EXPECT_TRUE(Contains(status_human.out, "5 live, 1 tombstones")) << status_human;
  EXPECT_TRUE(Contains(status_human.out, "peers       none")) << status_human;
}

TEST_F(CliHttpTest, PendingPrintsWhatTheDataTargetPrints) {
  Serve();
  constexpr uint64_t kPeer = 0x00000000000000f2;
  ASSERT_TRUE(dir_->replica().AddPeer(kPeer).ok());
  ASSERT_EQ(Http("put", {"m", "k1", "v"}).exit_code, 0);
  ASSERT_EQ(Http("del", {"m", "k1"}).exit_code, 0);
  const std::string peer = NodeIdToString(kPeer);

  const nlohmann::json doc = Json(Http("pending", {"--peer", peer, "--json"}));
  ASSERT_EQ(doc.at("peers").size(), 1u) << doc;
  EXPECT_EQ(doc["peers"][0]["count"], 2);
  EXPECT_EQ(doc["peers"][0]["items"][0]["key"], "k1");
  EXPECT_EQ(doc["peers"][0]["items"][1]["op"], "delete");

  const RunResult human = Http("pending", {"--limit", "1"});
  EXPECT_EQ(human.exit_code, 0) << human;
  EXPECT_TRUE(Contains(human.out, "peer " + peer + "  2 pending, oldest ")) << human;
  EXPECT_TRUE(Contains(human.out, " put    m/k1  ")) << human;
  EXPECT_TRUE(Contains(human.out, "  more: --after ")) << human;

  const RunResult unknown = Http("pending", {"--peer", NodeIdToString(7)});
  EXPECT_EQ(unknown.exit_code, 1) << unknown;
  EXPECT_EQ(Http("pending", {"--peer", "nonsense"}).exit_code, 2);

  // The same document from the data dir itself, once the server let it go.
  server_.reset();
  dir_.reset();
  const RunResult offline = RunTidemap({"pending", "--data", data_, "--peer", peer, "--json"});
  ASSERT_EQ(offline.exit_code, 0) << offline;
  nlohmann::json from_dir = Json(offline);
  nlohmann::json from_http = doc;
  from_dir["peers"][0].erase("oldest_age_seconds");  // the time passes between the two
  from_http["peers"][0].erase("oldest_age_seconds");
  EXPECT_EQ(from_dir, from_http);
}

TEST_F(CliHttpTest, StatusNamesAPeerAddressNotIdentifiedYet) {
  Serve("", [] {
    net::NetStatus status;
    net::PeerStatus dial;  // a configured address that never answered: node id 0
    dial.address = "127.0.0.1:1";
    dial.last_error = "dial: Connection refused";
    status.peers.push_back(dial);
    return status;
  });
  const RunResult r = Http("status");
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "peer        (node not identified yet) not connected")) << r;
  EXPECT_TRUE(Contains(r.out, "at 127.0.0.1:1")) << r;
  EXPECT_FALSE(Contains(r.out, "peer        " + NodeIdToString(0))) << r;
}

TEST_F(CliHttpTest, ExitCodesOverHttp) {
  Serve();
  // Usage errors (2): checked before the request, or a 400 from the node.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"get", "", "k"},
                                               {"get", "m", ""},
                                               {"scan", ""},
                                               {"put", "", "k", "v"},
                                               {"put", "m", "", "v"},
                                               {"del", "m", ""}}) {
    SCOPED_TRACE(args[0] + " '" + args[1] + "'");
    std::vector<std::string> rest(args.begin() + 1, args.end());
    const RunResult r = Http(args[0], rest);
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_TRUE(Contains(r.err, "must not be empty")) << r;
  }
  // Over a limit (4), with the sizes in the message; a refused value is never uploaded.
  const RunResult key = Http("put", {"m", std::string(4097, 'k'), "v"});
  EXPECT_EQ(key.exit_code, 4) << key;
  EXPECT_TRUE(Contains(key.err, "4097") && Contains(key.err, "4096")) << key;
  const size_t value_max = size_t{16} << 20;
  const RunResult value = Http("put", {"m", "big", "-"}, std::string(value_max + 1, 'v'));
  EXPECT_EQ(value.exit_code, 4) << value;
  EXPECT_TRUE(Contains(value.err, std::to_string(value_max + 1))) << value;
  EXPECT_TRUE(Contains(value.err, std::to_string(value_max))) << value;
  EXPECT_EQ(dir_->replica().Stats()->keys, 0u);
  // A malformed address is a usage error.
  EXPECT_EQ(RunTidemap({"get", "--http", "no-port", "m", "k"}).exit_code, 2);
}

TEST_F(CliHttpTest, BearerTokenFromFlagOrEnvironment) {
  Serve("cli-s3cret");
  const RunResult none = Http("put", {"m", "k", "v"});
  EXPECT_EQ(none.exit_code, 4) << none;
  EXPECT_TRUE(Contains(none.err, "token")) << none;
  const RunResult wrong = Http("get", {"m", "k", "--token", "nope"});
  EXPECT_EQ(wrong.exit_code, 4) << wrong;
  EXPECT_TRUE(Contains(wrong.err, "token")) << wrong;
  const RunResult put = Http("put", {"m", "k", "v", "--token", "cli-s3cret"});
  EXPECT_EQ(put.exit_code, 0) << put;
  const RunResult get = Http("get", {"m", "k"}, {}, {"TIDEMAP_TOKEN=cli-s3cret"});
  EXPECT_EQ(get.exit_code, 0) << get;
  EXPECT_EQ(get.out, "v");
  EXPECT_EQ(Http("status", {"--json"}, {}, {"TIDEMAP_TOKEN=cli-s3cret"}).exit_code, 0);
  // --token only goes with --http.
  EXPECT_EQ(RunTidemap({"get", "--data", data_, "--token", "x", "m", "k"}).exit_code, 2);
}

// `clear TARGET MAP`, on the data dir and over HTTP: it prints the clear's
// version; the map's older keys are gone at once, other maps are untouched,
// and a later put is served.
TEST_F(CliTest, ClearDeletesTheMapsOlderKeys) {
  Init();
  Put("m", "a", "1");
  Put("m", "b", "2");
  Put("other", "a", "kept");
  const RunResult clear = Data("clear", {"m"});
  ASSERT_EQ(clear.exit_code, 0) << clear;
  ASSERT_EQ(Lines(clear.out).size(), 1u) << clear;
  EXPECT_TRUE(IsHlcText(LastLine(clear.out))) << clear;
  const RunResult get = Data("get", {"m", "a"});
  EXPECT_EQ(get.exit_code, 1) << get;
  EXPECT_TRUE(Contains(get.err, "not found")) << get;
  EXPECT_EQ(Data("scan", {"m"}).out, "");
  EXPECT_EQ(Data("get", {"other", "a"}).out, "kept");
  Put("m", "c", "after");
  EXPECT_EQ(Data("scan", {"m"}).out, "c\tafter\n");
  EXPECT_EQ(Data("clear", {}).exit_code, 2);
  EXPECT_EQ(Data("clear", {""}).exit_code, 2);
}

TEST_F(CliHttpTest, ClearOverHttp) {
  Serve();
  ASSERT_TRUE(dir_->replica().Put("m", "a", "1").ok());
  const RunResult clear = Http("clear", {"m"});
  ASSERT_EQ(clear.exit_code, 0) << clear;
  EXPECT_TRUE(IsHlcText(LastLine(clear.out))) << clear;
  EXPECT_TRUE(dir_->replica().Get("m", "a").status().IsNotFound());
  EXPECT_EQ(Http("get", {"m", "a"}).exit_code, 1);
}

TEST_F(CliTest, HelpOnEveryCommand) {
  const RunResult top = RunTidemap({"--help"});
  EXPECT_EQ(top.exit_code, 0) << top;
  for (const char* cmd : {"init", "id", "put", "get", "del", "clear", "scan", "status", "pending",
                          "scrub", "snapshot", "demo"}) {
    SCOPED_TRACE(cmd);
    EXPECT_TRUE(Contains(top.out, cmd)) << top;
    const RunResult r = RunTidemap({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_TRUE(Contains(r.out, "Usage")) << r;
    EXPECT_TRUE(Contains(r.out, cmd)) << r;
  }
}

TEST_F(CliTest, VersionPrintsTheVersionMacro) {
  const RunResult r = RunTidemap({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "tidemap " TIDEMAP_VERSION_STRING "\n") << r;
  EXPECT_EQ(std::string(TIDEMAP_VERSION_STRING), std::to_string(TIDEMAP_VERSION_MAJOR) + "." +
                                                     std::to_string(TIDEMAP_VERSION_MINOR) + "." +
                                                     std::to_string(TIDEMAP_VERSION_PATCH));
  EXPECT_EQ(TIDEMAP_VERSION,
            TIDEMAP_VERSION_MAJOR * 10000 + TIDEMAP_VERSION_MINOR * 100 + TIDEMAP_VERSION_PATCH);
}

TEST_F(CliTest, DemoPrintsItsCommandsAndRemovesItsDir) {
  // The demo makes its dir under TMPDIR; pointing that at our own empty dir
  // means no other process's files can confuse the before/after comparison.
  const RunResult r = RunTidemap({"demo"}, {}, {"TMPDIR=" + tmp_});
  EXPECT_EQ(r.exit_code, 0) << r;
  std::map<std::string, int> commands;
  std::string demo_data_dir;
  for (const std::string& line : Lines(r.out)) {
    if (line.rfind("$ tidemap ", 0) != 0) continue;
    const std::string rest = line.substr(10);
    commands[rest.substr(0, rest.find(' '))]++;
    const std::string init = "init --data ";
    if (rest.rfind(init, 0) == 0) demo_data_dir = rest.substr(init.size());
  }
  for (const char* cmd : {"init", "put", "get", "del", "scan", "status"}) {
    EXPECT_GE(commands[cmd], 1) << cmd << " not shown\n" << r;
  }
  EXPECT_TRUE(Contains(r.out, "Demo finished.")) << r;
  EXPECT_FALSE(Contains(r.out, "!! expected")) << r;
  // Its serve lines can be pasted: whole keys, never cut short.
  static const std::regex kTrust(R"( --trust ([0-9a-f]+))");
  int trusts = 0;
  for (const std::string& line : Lines(r.out)) {
    if (line.rfind("$ tidemap serve ", 0) != 0) continue;
    EXPECT_FALSE(Contains(line, "…")) << line;
    for (std::sregex_iterator m(line.begin(), line.end(), kTrust), end; m != end; ++m, ++trusts) {
      EXPECT_TRUE(IsHex((*m)[1].str(), 64)) << line;
    }
  }
  EXPECT_GE(trusts, 6) << r;

  ASSERT_FALSE(demo_data_dir.empty()) << r;
  const std::filesystem::path demo_dir = std::filesystem::path(demo_data_dir).parent_path();
  EXPECT_EQ(demo_dir.parent_path(), std::filesystem::path(tmp_)) << demo_data_dir;
  EXPECT_EQ(demo_dir.filename().string().rfind("tidemap-demo-", 0), 0u) << demo_data_dir;
  EXPECT_FALSE(std::filesystem::exists(demo_dir)) << demo_dir;
  EXPECT_TRUE(std::filesystem::is_empty(tmp_)) << "the demo left files in " << tmp_;
}

}  // namespace
}  // namespace tidemap
