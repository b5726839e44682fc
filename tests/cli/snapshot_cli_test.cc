// Proves `tidemap snapshot` end to end with real daemons on loopback: a live
// node is backed up over HTTP (`snapshot export --http`), the file verifies;
// the node is stopped and wiped, restored (`snapshot import --data`) under a
// new identity, served again with its peer, and rejoins: the writes its peer
// took after the snapshot reach it and both Merkle roots end equal. Also: an
// import into a non-empty data dir is refused (exit 4), a damaged file fails
// verify and import with the offset (exit 3) and leaves no data dir, and an
// offline export (--data) gives the same records.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/cluster/serve_fixture.h"

namespace tidemap {
namespace {

using testing::RunResult;
using testing::ServeNode;

std::string LastLine(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class SnapshotCliTest : public testing::ServeClusterTest {
 protected:
  SnapshotCliTest() : ServeClusterTest("tidemap-snapshot-cli") {}

  void Serve(ServeNode& node, const ServeNode& peer) {
    Launch(node, {"serve", "--data", node.dir, "--listen", node.listen(), "--http", node.http(),
                  "--peer", peer.listen(), "--trust", peer.public_key});
  }

  std::string Root(const ServeNode& node) {
    const nlohmann::json s = Status(node);
    return s.is_object() ? s.value("merkle_root", std::string()) : std::string();
  }

  bool Converged(const ServeNode& a, const ServeNode& b) {
    return testing::WaitUntil(30'000, 100, [&] {
      const std::string ra = Root(a);
      return !ra.empty() && ra == Root(b);
    });
  }
};

TEST_F(SnapshotCliTest, ExportWipeImportServeRejoin) {
  ServeNode& a = AddNode("a");
  ServeNode& b = AddNode("b");
  Serve(a, b);
  Serve(b, a);
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(Tidemap({"put", "--http", a.http(), "m", "k" + std::to_string(i), "v"}).exit_code, 0);
  }
  ASSERT_EQ(Tidemap({"del", "--http", a.http(), "m", "k7"}).exit_code, 0);
  ASSERT_TRUE(Converged(a, b));

  const std::string file = root_ + "/a.snap";
  RunResult r = Tidemap({"snapshot", "export", "--http", a.http(), file});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "records      50 (1 tombstones)")) << r.out;
  r = Tidemap({"snapshot", "verify", file});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "OK")) << r.out;

  // The peer takes writes after the snapshot while a is down and wiped.
  a.process->Signal(SIGTERM);
  ASSERT_EQ(a.process->Wait(20'000), 0) << a.process->Log();
  ASSERT_EQ(Tidemap({"put", "--http", b.http(), "m", "after", "yes"}).exit_code, 0);
  ASSERT_EQ(Tidemap({"del", "--http", b.http(), "m", "k3"}).exit_code, 0);
  std::filesystem::remove_all(a.dir);

  // A damaged copy fails with the offset and leaves nothing behind.
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    bytes = s.str();
  }
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
  std::ofstream(root_ + "/bad.snap", std::ios::binary) << bytes;
  r = Tidemap({"snapshot", "verify", root_ + "/bad.snap"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "snapshot offset ")) << r.err;
  r = Tidemap({"snapshot", "import", "--data", a.dir, root_ + "/bad.snap"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_FALSE(std::filesystem::exists(a.dir));

  r = Tidemap({"snapshot", "import", "--data", a.dir, file});
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::string old_key = a.public_key;
  a.public_key = LastLine(r.out);
  EXPECT_NE(a.public_key, old_key);
  EXPECT_EQ(Tidemap({"snapshot", "import", "--data", a.dir, file}).exit_code, 4);
  EXPECT_EQ(Tidemap({"get", "--data", a.dir, "m", "k1"}).out, "v");

  // b learns a's new key; both serve again and converge by tree diff.
  b.process->Signal(SIGTERM);
  ASSERT_EQ(b.process->Wait(20'000), 0) << b.process->Log();
  Serve(a, b);
  Serve(b, a);
  ASSERT_TRUE(Converged(a, b));
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "after"}).out, "yes");
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "k3"}).exit_code, 1);
  EXPECT_EQ(Tidemap({"get", "--http", a.http(), "m", "k7"}).exit_code, 1);

  // An offline export of the stopped node holds what it serves.
  a.process->Signal(SIGTERM);
  ASSERT_EQ(a.process->Wait(20'000), 0) << a.process->Log();
  r = Tidemap({"snapshot", "export", "--data", a.dir, root_ + "/offline.snap"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "records      51 (2 tombstones)")) << r.out;
}

}  // namespace
}  // namespace tidemap
