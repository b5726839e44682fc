// Proves that SIGKILL never loses an acknowledged write, in both durability
// modes: a real `tidemap serve` takes PUTs from four client threads over
// HTTP and is killed with SIGKILL at a random moment, then restarted, over
// and over (TIDEMAP_KILL_ITERATIONS per mode, 30 by default). Every PUT
// answered 200 goes into a ledger (each key is written once); at the end the
// data dir is opened directly and every ledger entry must be there with its
// value. In `relaxed` mode a process crash loses nothing either: LevelDB has
// handed every acknowledged write to the kernel before the reply.
// The kill moments come from a seed that is printed; TIDEMAP_KILL_SEED
// replays it.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http_client.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;

constexpr int kWriters = 4;
constexpr int kStartTimeoutMs = 20'000;

class KillLoopTest : public ::testing::TestWithParam<const char*> {
 protected:
  KillLoopTest() : tmp_(testing::MakeTempDir("tidemap-kill-loop")), dir_(tmp_ + "/node") {}
  ~KillLoopTest() override {
    serve_.reset();
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  // Starts `tidemap serve` on fresh ports and waits until its HTTP API answers.
  void Start() {
    http_ = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
    const std::string listen = "127.0.0.1:" + std::to_string(testing::FreeTcpPort());
    serve_ = std::make_unique<testing::ChildProcess>(
        TIDEMAP_BIN,
        std::vector<std::string>{"serve", "--data", dir_, "--http", http_, "--listen", listen,
                                 "--durability", GetParam()},
        tmp_ + "/serve." + std::to_string(++starts_) + ".log");
    ASSERT_TRUE(serve_->started());
    HttpClientOptions client;
    client.address = http_;
    client.timeout_ms = 1000;
    const bool up = testing::WaitUntil(kStartTimeoutMs, 20, [&] {
      if (!serve_->running()) return true;
      auto r = HttpCall(client, "GET", "/v1/status");
      return r.ok() && r->status == 200;
    });
    ASSERT_TRUE(up && serve_->running()) << "start " << starts_ << ":\n" << serve_->Log();
  }

  // PUTs from kWriters threads until `stop`; each acknowledged key goes to
  // its thread's ledger.
  void Write(int round, const std::atomic<bool>& stop,
             std::vector<std::vector<std::string>>* acked) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kWriters; ++t) {
      threads.emplace_back([&, t] {
        HttpClientOptions client;
        client.address = http_;
        client.timeout_ms = 2000;
        for (int n = 0; !stop.load(); ++n) {
          const std::string key =
              "r" + std::to_string(round) + "-t" + std::to_string(t) + "-" + std::to_string(n);
          auto r = HttpCall(client, "PUT", "/v1/maps/m/keys/" + key, key + "=v");
          if (r.ok() && r->status == 200) (*acked)[t].push_back(key);
        }
      });
    }
    for (std::thread& th : threads) th.join();
  }

  const std::string tmp_;
  const std::string dir_;
  std::string http_;
  std::unique_ptr<testing::ChildProcess> serve_;
  int starts_ = 0;
};

TEST_P(KillLoopTest, NoAcknowledgedWriteIsLost) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_KILL_SEED", 20261207);
  const uint64_t iterations = testing::IntFromEnv("TIDEMAP_KILL_ITERATIONS", 30);
  std::mt19937_64 rng(seed);
  ASSERT_EQ(testing::RunProgram(TIDEMAP_BIN, {"init", "--data", dir_}).exit_code, 0);
  std::vector<std::vector<std::string>> acked(kWriters);
  for (uint64_t i = 0; i < iterations; ++i) {
    ASSERT_NO_FATAL_FAILURE(Start());
    std::atomic<bool> stop{false};
    std::thread writer([&] { Write(static_cast<int>(i), stop, &acked); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    serve_->Signal(SIGKILL);
    EXPECT_EQ(serve_->Wait(kStartTimeoutMs), 128 + SIGKILL);
    stop = true;
    writer.join();
  }
  auto d = DataDir::Open(dir_);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  size_t total = 0, lost = 0;
  for (const auto& ledger : acked) {
    for (const std::string& key : ledger) {
      ++total;
      auto rec = (*d)->replica().Get("m", key);
      if (!rec.ok() || rec->value != key + "=v") {
        if (++lost <= 10) ADD_FAILURE() << "acknowledged write lost: " << key;
      }
    }
  }
  std::printf("%s: %zu acknowledged writes over %llu kills, %zu lost\n", GetParam(), total,
              static_cast<unsigned long long>(iterations), lost);
  EXPECT_EQ(lost, 0u);
  EXPECT_GT(total, iterations) << "the writers got writes through between kills";
}

INSTANTIATE_TEST_SUITE_P(Durability, KillLoopTest, ::testing::Values("sync", "relaxed"));

}  // namespace
}  // namespace tidemap
