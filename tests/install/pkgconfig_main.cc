// Built by install_test with nothing but `pkg-config --cflags --libs tidemap` and run:
// proves the .pc file's include path and library list (link order included) are complete.
// It touches each library: a replica write and read (replica, storage, LevelDB, xxHash),
// a sync message through the codec (schemas, Cap'n Proto) and a key pair (libsodium).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include <tidemap/base/clock.h>
#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/replica/replica.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>

namespace {

int Fail(const std::string& what, const tidemap::Status& status) {
  std::fprintf(stderr, "pkgconfig_main: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

int Run(const std::string& dir) {
  tidemap::SystemClock clock;
  tidemap::ReplicaOptions options;
  options.path = dir + "/db";
  options.clock = &clock;
  options.node_id = 42;  // a fixed id: no identity file needed
  options.durability = tidemap::Durability::kRelaxed;
  auto replica = tidemap::Replica::Open(std::move(options));
  if (!replica.ok()) return Fail("open", replica.status());
  auto put = (*replica)->Put("m", "k", "v");
  if (!put.ok()) return Fail("put", put.status());
  auto got = (*replica)->Get("m", "k");
  if (!got.ok()) return Fail("get", got.status());
  if (got->value != "v") return Fail("get", tidemap::Status::Internal("read back " + got->value));

  tidemap::msg::Message hello;
  hello.seq = 1;
  tidemap::msg::Hello body;
  body.merkle_root = (*replica)->MerkleRoot();
  hello.body = body;
  auto frame = tidemap::EncodeMessage(hello);
  if (!frame.ok()) return Fail("encode", frame.status());
  auto decoded = tidemap::DecodeMessage(*frame);
  if (!decoded.ok()) return Fail("decode", decoded.status());
  if (!(*decoded == hello)) return Fail("decode", tidemap::Status::Internal("round trip"));

  tidemap::crypto::PublicKey public_key{};
  std::string secret_key;
  tidemap::Status generated = tidemap::crypto::GenerateSigningKeyPair(&public_key, &secret_key);
  if (!generated.ok()) return Fail("key pair", generated);

  std::printf("pkg-config build ok: root %s, %zu-byte hello, fresh node id %s\n",
              (*replica)->MerkleRoot().ToHex().c_str(), frame->size(),
              tidemap::NodeIdToString(tidemap::crypto::NodeIdOf(public_key)).c_str());
  return 0;
}

}  // namespace

int main() {
  std::string dir = (std::filesystem::temp_directory_path() / "tidemap-pc-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const int rc = Run(dir);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return rc;
}
