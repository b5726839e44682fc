// Built by install_test with nothing but `pkg-config --cflags --libs tidemap-replica`:
// a program that uses only the replica compiles without any other library's flags and
// links only tidemap's own libraries, LevelDB (with its snappy and memenv), libsodium
// and xxHash. install_test checks the flags and the program's shared libraries; this
// file only proves the replica works when built that way.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>

namespace {

int Run(const std::string& dir) {
  tidemap::SystemClock clock;
  tidemap::ReplicaOptions options;
  options.path = dir + "/db";
  options.clock = &clock;
  options.node_id = 7;
  auto replica = tidemap::Replica::Open(std::move(options));
  if (!replica.ok()) {
    std::fprintf(stderr, "open: %s\n", replica.status().ToString().c_str());
    return 1;
  }
  auto put = (*replica)->Put("m", "k", "v");
  auto got = (*replica)->Get("m", "k");
  if (!put.ok() || !got.ok() || got->value != "v") {
    std::fprintf(stderr, "put/get failed\n");
    return 1;
  }
  std::printf("replica-only build ok: root %s\n", (*replica)->MerkleRoot().ToHex().c_str());
  return 0;
}

}  // namespace

int main() {
  std::string dir = (std::filesystem::temp_directory_path() / "tidemap-replica-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const int rc = Run(dir);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return rc;
}
