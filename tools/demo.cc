// `tidemap demo`: a three-node cluster on loopback, narrated. It creates three
// data dirs in a temporary dir, runs three nodes (the same daemon `tidemap
// serve` runs, here inside this process so nothing outlives the demo), writes
// on each, cuts one node off, writes on both sides, heals the partition and
// shows the convergence: the status lines and the bytes the repair took.
// Every command it runs is printed first ("$ tidemap ..."), with the real
// ports, dirs and whole keys, so a newcomer can paste any step while it runs
// or repeat it by hand on dirs of their own.
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tools/cli.h"
#include <tidemap/base/status.h>
#include <tidemap/server/daemon.h>

namespace tidemap {

namespace {

constexpr int kConvergeTimeoutMs = 30'000;

std::string Quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_of(" \t'\"$\\") == std::string::npos) return arg;
  std::string out(1, '\'');
  for (char c : arg) {
    if (c == '\'') {
      out.append("'\\''");
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

void Say(const char* narration) { std::printf("\n# %s\n", narration); }

// One node of the demo: its data dir, key and, while it runs, its daemon.
struct DemoNode {
  std::string name;
  std::string dir;
  std::string public_key;
  uint16_t port = 0;
  std::unique_ptr<Daemon> daemon;

  std::string http() const {
    return "127.0.0.1:" + std::to_string(daemon ? daemon->http_port() : 0);
  }
};

class Demo {
 public:
  explicit Demo(std::string root) : root_(std::move(root)) {
    log_ =
        std::make_shared<spdlog::logger>("demo", std::make_shared<spdlog::sinks::null_sink_mt>());
  }

  // Runs `tidemap ARGS` in this process after printing it; counts an exit
  // status other than `expected` as a failure.
  void Run(std::vector<std::string> args, int expected = kExitOk) {
    std::string line = "$ tidemap";
    for (const std::string& a : args) line += " " + Quote(a);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    const int code = RunCli(args);
    // `get` prints the value's bytes alone, without a newline.
    if (args[0] == "get" && code == kExitOk) std::printf("\n");
    std::fflush(stdout);
    if (code != 0) std::printf("(exit status %d)\n", code);
    if (code != expected) {
      std::printf("!! expected exit status %d\n", expected);
      ++failures_;
    }
  }

  DemoNode& Init(const std::string& name) {
    DemoNode& n = nodes_[name];
    n.name = name;
    n.dir = root_ + "/node-" + name;
    Run({"init", "--data", n.dir});
    auto identity = Identity::Load(n.dir);
    if (identity.ok()) n.public_key = identity->public_key_text();
    return n;
  }

  // Starts `n` listening on a free port, dialing `peers`, trusting `trusted`.
  void Start(DemoNode& n, const std::vector<DemoNode*>& peers,
             const std::vector<DemoNode*>& trusted) {
    DaemonConfig c;
    c.data = n.dir;
    c.listen = "127.0.0.1:" + std::to_string(n.port);  // 0 the first time: any free port
    c.http = "127.0.0.1:0";
    for (DemoNode* p : peers) c.peers.push_back("127.0.0.1:" + std::to_string(p->port));
    for (DemoNode* t : trusted) c.trust.push_back(t->public_key);
    auto d = Daemon::Start(c, log_);
    if (!d.ok()) {
      std::printf("!! node %s did not start: %s\n", n.name.c_str(), d.status().message().c_str());
      ++failures_;
      return;
    }
    n.daemon = std::move(*d);
    n.port = n.daemon->listen_port();
    std::string line = "$ tidemap serve --data " + n.dir +
                       " --listen 127.0.0.1:" + std::to_string(n.port) + " --http " + n.http();
    for (const std::string& p : c.peers) line += " --peer " + p;
    for (DemoNode* t : trusted) line += " --trust " + t->public_key;
    std::printf("%s &\n", line.c_str());
  }

  void Stop(DemoNode& n) {
    if (n.daemon) n.daemon->Stop();
    n.daemon.reset();
    std::printf("(node %s stopped: SIGTERM to its `tidemap serve`)\n", n.name.c_str());
  }

  // Waits until every running node in `nodes` has the same Merkle root; prints
  // how long it took. False (a failure) after kConvergeTimeoutMs.
  bool WaitConverged(const std::vector<DemoNode*>& nodes) {
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      bool same = true;
      const Digest128 first = nodes[0]->daemon->replica().MerkleRoot();
      for (DemoNode* n : nodes) same = same && n->daemon->replica().MerkleRoot() == first;
      const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - start)
                               .count();
      if (same) {
        std::printf("(converged: equal Merkle roots on %zu nodes after %lld ms)\n", nodes.size(),
                    static_cast<long long>(elapsed));
        return true;
      }
      if (elapsed > kConvergeTimeoutMs) {
        std::printf("!! no convergence within %d ms\n", kConvergeTimeoutMs);
        ++failures_;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Bytes in and out on `n`'s peer connections since it (re)started.
  uint64_t WireBytes(const DemoNode& n) {
    uint64_t total = 0;
    for (const auto& p : n.daemon->NetSnapshot().peers) total += p.bytes_in + p.bytes_out;
    return total;
  }

  void StopAll() {
    for (auto& [name, n] : nodes_) {
      if (n.daemon) n.daemon->Stop();
      n.daemon.reset();
    }
  }

  int failures() const { return failures_; }

 private:
  std::string root_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<std::string, DemoNode> nodes_;
  int failures_ = 0;
};

}  // namespace

int RunDemo() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tidemap-demo-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "tidemap demo: cannot create a temporary dir\n");
    return kExitUnreachable;
  }
  int failures = 0;
  {
    Demo demo(tmpl);
    Say("Three nodes, each a data dir with its own identity (an Ed25519 key pair) and\n"
        "# LevelDB replica. The last line `init` prints is the public key that the other\n"
        "# nodes put in their trust list: only trusted keys may connect.");
    DemoNode& a = demo.Init("a");
    DemoNode& b = demo.Init("b");
    DemoNode& c = demo.Init("c");

    Say("Start them: each listens for peers (an encrypted, mutually authenticated TCP\n"
        "# connection per pair) and serves the HTTP API the commands below use.");
    demo.Start(a, {}, {&b, &c});
    demo.Start(b, {&a}, {&a, &c});
    demo.Start(c, {&a, &b}, {&a, &b});

    Say("Write on every node. Each write is stamped with a hybrid logical clock and\n"
        "# streams to the peers from the node's operation log.");
    demo.Run({"put", "--http", a.http(), "fruit", "apple", "red"});
    demo.Run({"put", "--http", b.http(), "fruit", "banana", "yellow"});
    demo.Run({"put", "--http", c.http(), "fruit", "cherry", "dark red"});
    demo.WaitConverged({&a, &b, &c});
    demo.Run({"scan", "--http", c.http(), "fruit"});

    Say("Partition: node c is cut off (stopped). Writes go on on both sides: a and b\n"
        "# keep replicating to each other; c's dir is written directly, as an app\n"
        "# embedding the library would. Both sides write `apple`: last writer wins.");
    demo.Stop(c);
    demo.Run({"put", "--http", a.http(), "fruit", "apple", "green"});
    demo.Run({"del", "--http", b.http(), "fruit", "banana"});
    for (int i = 0; i < 4; ++i) {
      demo.Run({"put", "--http", b.http(), "veg", "v" + std::to_string(i), "from b"});
    }
    demo.Run({"put", "--data", c.dir, "fruit", "date", "brown"});
    demo.Run({"put", "--data", c.dir, "fruit", "apple", "golden"});
    demo.Run({"status", "--data", c.dir});

    Say("Heal: c comes back. It streams what it missed from each peer's oplog cursor\n"
        "# and sends what it wrote alone; a periodic Merkle tree diff would catch anything\n"
        "# a stream missed. Equal Merkle roots mean equal state.");
    demo.Start(c, {&a, &b}, {&a, &b});
    if (demo.WaitConverged({&a, &b, &c})) {
      std::printf(
          "(the repair moved %llu bytes on c's connections, both directions, framing "
          "and encryption included)\n",
          static_cast<unsigned long long>(demo.WireBytes(c)));
    }
    demo.Run({"get", "--http", a.http(), "fruit", "apple"});
    demo.Run({"get", "--http", c.http(), "fruit", "banana"}, kExitNotFound);
    demo.Run({"scan", "--http", b.http(), "fruit", "--json"});
    for (DemoNode* n : {&a, &b, &c}) demo.Run({"status", "--http", n->http()});
    demo.StopAll();
    failures = demo.failures();
  }
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  std::printf("\n%s (every node stopped; the demo's dir %s was removed)\n",
              failures == 0 ? "Demo finished." : "Demo FAILED.", tmpl.c_str());
  return failures == 0 ? kExitOk : kExitUnreachable;
}

}  // namespace tidemap
