// Proves the rekey of a running node (`tidemap rekey --http`, POST and GET
// /v1/admin/rekey) with a real `tidemap serve`: while thousands of records
// are resealed, a reader thread gets every record with its right value and a
// writer thread's puts all succeed; a second rekey meanwhile is refused with
// 409; status shows the suite, the key id and the progress. After it the
// node, restarted with the new key, serves every record, the old key is
// refused (exit 3), and the database files hold neither plaintext nor a
// ciphertext under the old key. A node killed in the middle starts with the
// new key and a rekey to the same key finishes the job. Refusals: a node
// in the clear (400), a key file others may read (exit 4), the --data form
// on a dir a node holds (exit 3, pointing to --http).
#include <signal.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/cluster/serve_fixture.h"
#include <tidemap/server/http_client.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

using testing::RunResult;
using testing::ServeNode;

// Records loaded before the rekey, and their value size: enough pages of
// resealing (1,000 records a page) and bytes to compact that readers and
// writers run alongside it.
constexpr int kRecords = 6000;
constexpr size_t kValueBytes = 600;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string ValueOf(int i) {
  std::string v = "sekrit-" + std::to_string(i) + "-";
  v.resize(kValueBytes, 'x');
  return v;
}

class RekeyServeTest : public testing::ServeClusterTest {
 protected:
  RekeyServeTest() : ServeClusterTest("tidemap-rekey-serve") {}

  // A node whose values are sealed under `key` (made by init).
  ServeNode& AddEncryptedNode(const std::string& name, const std::string& key) {
    auto node = std::make_unique<ServeNode>();
    node->name = name;
    node->dir = root_ + "/" + name;
    RunResult r = Tidemap({"init", "--data", node->dir, "--encrypt", "--key-file", key});
    EXPECT_EQ(r.exit_code, 0) << r;
    node->port = testing::FreeTcpPort();
    node->http_port = testing::FreeTcpPort();
    ServeNode& ref = *node;
    nodes_[name] = std::move(node);
    return ref;
  }

  void Serve(ServeNode& node, const std::string& key) {
    Launch(node, {"serve", "--data", node.dir, "--http", node.http(), "--key-file", key,
                  "--durability", "relaxed"});
  }

  void StopNode(ServeNode& node) {
    node.process->Signal(SIGTERM);
    ASSERT_EQ(node.process->Wait(30'000), 0) << node.process->Log();
  }

  // Writes records 0..kRecords-1 of map m in batches.
  void Load(const ServeNode& node) {
    for (int first = 0; first < kRecords; first += 500) {
      nlohmann::json ops = nlohmann::json::array();
      for (int i = first; i < first + 500 && i < kRecords; ++i) {
        ops.push_back(
            {{"op", "put"}, {"map", "m"}, {"key", "k" + std::to_string(i)}, {"value", ValueOf(i)}});
      }
      auto reply = HttpCall(Client(node), "POST", "/v1/batch", nlohmann::json{{"ops", ops}}.dump(),
                            "application/json");
      ASSERT_TRUE(reply.ok()) << reply.status().ToString();
      ASSERT_EQ(reply->status, 200) << reply->body;
    }
  }

  static nlohmann::json Rekey(const ServeNode& node, const std::string& new_key, int* status) {
    auto reply = HttpCall(Client(node), "POST", "/v1/admin/rekey",
                          nlohmann::json{{"new_key_file", new_key}}.dump(), "application/json");
    *status = reply.ok() ? reply->status : 0;
    return reply.ok() ? nlohmann::json::parse(reply->body, nullptr, false) : nlohmann::json();
  }

  static nlohmann::json Progress(const ServeNode& node) {
    auto reply = HttpCall(Client(node), "GET", "/v1/admin/rekey");
    if (!reply.ok() || reply->status != 200) return nlohmann::json();
    return nlohmann::json::parse(reply->body, nullptr, false);
  }

  // Waits for the rekey to leave `running`; its last progress.
  static nlohmann::json WaitEnded(const ServeNode& node) {
    nlohmann::json p;
    testing::WaitUntil(120'000, 20, [&] {
      p = Progress(node);
      return p.is_object() && p["state"] != "running";
    });
    return p;
  }

  // Every record of map m through one scan: count of those with their value.
  static int CountRight(const ServeNode& node) {
    auto reply = HttpCall(Client(node), "GET", "/v1/maps/m?limit=10000");
    if (!reply.ok() || reply->status != 200) return -1;
    const auto page = nlohmann::json::parse(reply->body, nullptr, false);
    int right = 0;
    for (const auto& item : page["items"]) {
      const std::string key = item["key"];
      if (key[0] == 'k' && item["value"] == ValueOf(std::stoi(key.substr(1)))) ++right;
    }
    return right;
  }

  // The last bytes of record k42's stored value (sealed): read from the
  // database of a stopped node.
  std::string SealedTail(const std::string& dir) {
    StoreOptions so;
    so.path = dir + "/db";
    so.create_if_missing = false;
    auto store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return {};
    const std::string bytes = (*store)->Get(rows::RecordKey("m", "k42")).value();
    return bytes.substr(bytes.size() - 24);
  }
};

// Reads of every record and writes, from threads of their own, while the
// node reseals; their failures, described.
class Traffic {
 public:
  explicit Traffic(HttpClientOptions client) : client_(std::move(client)) {
    reader_ = std::thread([this] { Read(); });
    writer_ = std::thread([this] { Write(); });
  }
  ~Traffic() { Stop(); }
  void Stop() {
    stop_ = true;
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
  }
  int reads() const { return reads_; }
  int writes() const { return writes_; }
  std::string errors() const {
    std::lock_guard lock(mu_);
    return errors_;
  }

 private:
  void Read() {
    for (int i = 0; !stop_; i = (i + 97) % kRecords) {
      auto r = HttpCall(client_, "GET", "/v1/maps/m/keys/k" + std::to_string(i));
      if (!r.ok() || r->status != 200 || r->body != ValueOf(i)) {
        Note("read k" + std::to_string(i) + ": " +
             (r.ok() ? std::to_string(r->status) + " " + r->body.substr(0, 80)
                     : r.status().ToString()));
      }
      ++reads_;
    }
  }
  void Write() {
    for (int i = 0; !stop_; ++i) {
      auto r = HttpCall(client_, "PUT", "/v1/maps/w/keys/w" + std::to_string(i),
                        "written-" + std::to_string(i));
      if (!r.ok() || r->status != 200) {
        Note("write w" + std::to_string(i) + ": " +
             (r.ok() ? std::to_string(r->status) + " " + r->body : r.status().ToString()));
      }
      ++writes_;
    }
  }
  void Note(const std::string& what) {
    std::lock_guard lock(mu_);
    if (errors_.size() < 2000) errors_ += what + "\n";
  }

  const HttpClientOptions client_;
  std::atomic<bool> stop_{false};
  std::atomic<int> reads_{0}, writes_{0};
  mutable std::mutex mu_;
  std::string errors_;  // guarded by mu_
  std::thread reader_, writer_;
};

TEST_F(RekeyServeTest, ReadsAndWritesGoOnWhileTheNodeReseals) {
  const std::string old_key = root_ + "/old.key", new_key = root_ + "/new.key";
  ServeNode& node = AddEncryptedNode("a", old_key);
  ASSERT_EQ(Tidemap({"put", "--data", node.dir, "--key-file", old_key, "m", "k42", ValueOf(42)})
                .exit_code,
            0);
  const std::string old_ciphertext = SealedTail(node.dir);
  ASSERT_EQ(old_ciphertext.size(), 24u);
  Serve(node, old_key);
  Load(node);
  nlohmann::json status = Status(node);
  EXPECT_EQ(status["encryption"]["encrypted"], true) << status.dump();
  EXPECT_EQ(status["encryption"]["key_id"], 1) << status.dump();
  EXPECT_EQ(status["encryption"]["rekey"]["state"], "idle") << status.dump();

  int writes_before = 0;
  {
    Traffic traffic(Client(node));
    ASSERT_TRUE(testing::WaitUntil(10'000, 10, [&] { return traffic.reads() > 20; }));
    int code = 0;
    nlohmann::json started = Rekey(node, new_key, &code);
    ASSERT_EQ(code, 202) << started.dump();
    EXPECT_EQ(started["state"], "running") << started.dump();
    const nlohmann::json again = Rekey(node, new_key, &code);
    EXPECT_EQ(code, 409) << again.dump();
    EXPECT_EQ(again["code"], "rekey_running") << again.dump();
    const int reads_at_start = traffic.reads();
    const nlohmann::json ended = WaitEnded(node);
    const int reads_during = traffic.reads() - reads_at_start;
    traffic.Stop();
    ASSERT_EQ(ended["state"], "done") << ended.dump() << node.process->Log();
    // The records loaded, and the writes that came before the switch.
    EXPECT_GE(ended["resealed"].get<int>(), kRecords) << ended.dump();
    EXPECT_EQ(ended["old_key_id"], 1);
    EXPECT_EQ(ended["new_key_id"], 2);
    EXPECT_GT(reads_during, 0);
    EXPECT_EQ(traffic.errors(), "");
    writes_before = traffic.writes();
  }
  struct stat st {};
  ASSERT_EQ(::stat(new_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  status = Status(node);
  EXPECT_EQ(status["encryption"]["key_id"], 2) << status.dump();
  EXPECT_EQ(status["encryption"]["rekey"]["state"], "done") << status.dump();
  EXPECT_EQ(CountRight(node), kRecords);
  StopNode(node);

  // With the old key, neither the CLI nor serve opens it.
  RunResult r = Tidemap({"get", "--data", node.dir, "--key-file", old_key, "m", "k1"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "is wrong")) << r;
  r = Tidemap({"serve", "--data", node.dir, "--http", node.http(), "--key-file", old_key});
  EXPECT_EQ(r.exit_code, 3) << r;
  const std::string files = testing::BytesOfFilesUnder(node.dir + "/db");
  EXPECT_FALSE(Contains(files, "sekrit-"));
  EXPECT_FALSE(Contains(files, old_ciphertext));

  Serve(node, new_key);
  EXPECT_EQ(CountRight(node), kRecords);
  r = Tidemap({"get", "--http", node.http(), "w", "w" + std::to_string(writes_before - 1)});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "written-" + std::to_string(writes_before - 1));
}

// The CLI waits and prints what the offline form prints; a node killed past
// the switch to the new key starts with it, and the same rekey finishes.
TEST_F(RekeyServeTest, CliWaitsAndARekeyCutShortIsFinishedAfterARestart) {
  const std::string old_key = root_ + "/old.key", new_key = root_ + "/new.key";
  const std::string third_key = root_ + "/third.key";
  ServeNode& node = AddEncryptedNode("a", old_key);
  Serve(node, old_key);
  Load(node);
  RunResult r = Tidemap({"rekey", "--http", node.http(), "--new-key-file", new_key});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "rekeyed " + node.http() + ": key 1 -> key 2")) << r;
  EXPECT_TRUE(Contains(r.out, "resealed         " + std::to_string(kRecords))) << r;
  EXPECT_TRUE(Contains(r.out, "OK: every value is sealed under the new key")) << r;

  // Killed once the new key seals (DIR/encryption names it), mid-reseal or after.
  int code = 0;
  ASSERT_EQ(Rekey(node, third_key, &code)["state"], "running");
  ASSERT_EQ(code, 202);
  ASSERT_TRUE(testing::WaitUntil(30'000, 1, [&] {
    const nlohmann::json s = Status(node);
    return s.is_object() && s["encryption"]["key_id"] == 3;
  }));
  node.process->Signal(SIGKILL);
  node.process->Wait(10'000);
  r = Tidemap({"serve", "--data", node.dir, "--http", node.http(), "--key-file", new_key});
  EXPECT_EQ(r.exit_code, 3) << r;
  Serve(node, third_key);
  EXPECT_EQ(CountRight(node), kRecords);
  r = Tidemap({"rekey", "--http", node.http(), "--new-key-file", third_key});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "OK: every value is sealed under the new key")) << r;
  StopNode(node);
  r = Tidemap({"get", "--data", node.dir, "--key-file", third_key, "m", "k5"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, ValueOf(5));
  r = Tidemap({"scrub", "--data", node.dir, "--key-file", third_key});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "value failures   0")) << r;
}

TEST_F(RekeyServeTest, RefusalsSayWhy) {
  const std::string key = root_ + "/value.key";
  ServeNode& node = AddEncryptedNode("a", key);
  Serve(node, key);
  // The --data form on a dir the node holds points to the --http form.
  RunResult r =
      Tidemap({"rekey", "--data", node.dir, "--key-file", key, "--new-key-file", root_ + "/n.key"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "rekey --http HOST:PORT")) << r;
  // A key file others may read.
  const std::string open_key = root_ + "/open.key";
  { std::ofstream(open_key) << "tidemap-value-key v1\nkey " << std::string(64, 'a') << "\n"; }
  ASSERT_EQ(::chmod(open_key.c_str(), 0644), 0);
  r = Tidemap({"rekey", "--http", node.http(), "--new-key-file", open_key});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_TRUE(Contains(r.err, "must be 0600")) << r;
  // A relative path in the request itself.
  int code = 0;
  nlohmann::json reply = Rekey(node, "new.key", &code);
  EXPECT_EQ(code, 400) << reply.dump();
  EXPECT_TRUE(Contains(reply.value("error", ""), "absolute path")) << reply.dump();
  reply = Rekey(node, key, &code);  // the key in force: nothing to change, done at once
  EXPECT_EQ(code, 202) << reply.dump();
  EXPECT_EQ(WaitEnded(node)["state"], "done");

  // A node whose values are in the clear.
  ServeNode& plain = AddNode("plain");
  Launch(plain, {"serve", "--data", plain.dir, "--http", plain.http()});
  reply = Rekey(plain, root_ + "/p.key", &code);
  EXPECT_EQ(code, 400) << reply.dump();
  EXPECT_TRUE(Contains(reply.value("error", ""), "not encrypted at rest")) << reply.dump();
  r = Tidemap({"rekey", "--http", plain.http(), "--new-key-file", root_ + "/p.key"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_EQ(Status(plain)["encryption"]["encrypted"], false);
}

}  // namespace
}  // namespace tidemap
