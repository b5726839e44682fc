// Proves the node identity file: Create then Load round-trips the key pair and
// node id, the file is created 0600 and never overwritten, and Load reports a
// missing, truncated, exposed (group/other mode bits) or inconsistent file with
// the right code and a message naming the file. Each test works in a fresh
// temporary data directory and edits the file on disk to inject the fault.
#include <tidemap/storage/identity.h>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/support/test_util.h"
#include <tidemap/base/crypto.h>

namespace tidemap {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Replaces the contents of an existing file, keeping its mode.
void OverwriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  ASSERT_TRUE(out.good());
}

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::MakeTempDir("tidemap-identity-test"); }
  void TearDown() override { fs::remove_all(root_); }

  // A data directory that does not exist yet, two levels below the temp dir.
  std::string DataDir() const { return root_ + "/node/data"; }
  std::string KeyPath() const { return DataDir() + "/identity.key"; }

  std::string root_;
};

TEST_F(IdentityTest, CreateThenLoadRoundTrips) {
  Result<Identity> created = Identity::Create(DataDir());
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(Identity::PathIn(DataDir()), KeyPath());
  EXPECT_EQ(created->secret_key().size(), crypto::kSecretKeyBytes);
  EXPECT_EQ(created->public_key_text(), crypto::PublicKeyToText(created->public_key()));

  Result<Identity> loaded = Identity::Load(DataDir());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key(), created->public_key());
  EXPECT_EQ(loaded->public_key_text(), created->public_key_text());
  EXPECT_EQ(loaded->secret_key(), created->secret_key());

  // The loaded secret signs for the public key.
  std::string signature;
  ASSERT_TRUE(crypto::Sign(loaded->secret_key(), "hello", &signature).ok());
  EXPECT_TRUE(crypto::Verify(created->public_key(), "hello", signature));

  // The file is the documented text form.
  const std::string text = ReadFile(KeyPath());
  EXPECT_EQ(text.size(), 228u);
  EXPECT_EQ(
      text.rfind("tidemap-identity v1\npublic " + created->public_key_text() + "\nsecret ", 0), 0u);
}

TEST_F(IdentityTest, NodeIdIsStableAndDerivedFromThePublicKey) {
  Result<Identity> created = Identity::Create(DataDir());
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const uint64_t id = created->node_id();
  EXPECT_EQ(id, crypto::NodeIdOf(created->public_key()));
  for (int i = 0; i < 3; ++i) {
    Result<Identity> loaded = Identity::Load(DataDir());
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ(loaded->node_id(), id);
  }
  // A different identity has a different id.
  Result<Identity> other = Identity::Create(root_ + "/other");
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_NE(other->node_id(), id);
}

TEST_F(IdentityTest, MovedIdentityKeepsItsKeys) {
  Result<Identity> created = Identity::Create(DataDir());
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string secret(created->secret_key());
  Identity moved = std::move(created).value();
  EXPECT_EQ(moved.secret_key(), secret);
  Result<Identity> other = Identity::Create(root_ + "/other");
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  moved = std::move(other).value();
  EXPECT_NE(moved.secret_key(), secret);
  EXPECT_EQ(moved.secret_key().size(), crypto::kSecretKeyBytes);
}

TEST_F(IdentityTest, FileModeIs0600EvenUnderAPermissiveUmask) {
  const mode_t old_umask = ::umask(0);
  Result<Identity> created = Identity::Create(DataDir());
  ::umask(old_umask);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(KeyPath().c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(IdentityTest, CreateTwiceIsRefusedAndKeepsTheFirstKey) {
  Result<Identity> first = Identity::Create(DataDir());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string before = ReadFile(KeyPath());

  Result<Identity> second = Identity::Create(DataDir());
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsRefused()) << second.status().ToString();
  EXPECT_NE(second.status().message().find(KeyPath()), std::string::npos)
      << second.status().ToString();
  EXPECT_NE(second.status().message().find("already exists"), std::string::npos);
  EXPECT_EQ(ReadFile(KeyPath()), before);

  Result<Identity> loaded = Identity::Load(DataDir());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key(), first->public_key());
}

TEST_F(IdentityTest, MissingFileIsNotFoundNamingThePathAndInit) {
  Result<Identity> loaded = Identity::Load(DataDir());
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(loaded.status().IsNotFound()) << loaded.status().ToString();
  EXPECT_NE(loaded.status().message().find(KeyPath()), std::string::npos)
      << loaded.status().ToString();
  EXPECT_NE(loaded.status().message().find("tidemap init --data " + DataDir()), std::string::npos)
      << loaded.status().ToString();
}

TEST_F(IdentityTest, TruncatedFileIsCorruption) {
  ASSERT_TRUE(Identity::Create(DataDir()).ok());
  const std::string full = ReadFile(KeyPath());
  // Every proper prefix, including the empty file a crash during Create can leave.
  for (size_t len : {size_t{0}, size_t{5}, size_t{20}, size_t{100}, full.size() - 1}) {
    OverwriteFile(KeyPath(), full.substr(0, len));
    Result<Identity> loaded = Identity::Load(DataDir());
    ASSERT_FALSE(loaded.ok()) << "len=" << len;
    EXPECT_TRUE(loaded.status().IsCorruption())
        << "len=" << len << " " << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find(KeyPath()), std::string::npos)
        << loaded.status().ToString();
  }
}

TEST_F(IdentityTest, MalformedContentIsCorruption) {
  ASSERT_TRUE(Identity::Create(DataDir()).ok());
  const std::string full = ReadFile(KeyPath());
  auto with = [&](size_t pos, const std::string& replacement) {
    std::string s = full;
    s.replace(pos, replacement.size(), replacement);
    return s;
  };
  const size_t public_hex = 20 + 7;
  const size_t secret_hex = 20 + 72 + 7;
  const std::string cases[] = {
      with(0, "tidemap-identity v2"),  // unknown version
      with(0, "not-an-identity-file"),
      with(20, "PUBLIC "),
      with(public_hex, "ABCDEF"),  // upper case hex is not the canonical form
      with(public_hex + 3, "g"),
      with(secret_hex + 10, "z"),
      with(full.size() - 1, " "),  // no final newline
      full + "\n",                 // trailing bytes
  };
  for (const std::string& contents : cases) {
    OverwriteFile(KeyPath(), contents);
    Result<Identity> loaded = Identity::Load(DataDir());
    ASSERT_FALSE(loaded.ok()) << contents;
    EXPECT_TRUE(loaded.status().IsCorruption()) << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find(KeyPath()), std::string::npos)
        << loaded.status().ToString();
    // Messages never echo the secret.
    EXPECT_EQ(loaded.status().message().find(full.substr(secret_hex, 16)), std::string::npos)
        << loaded.status().ToString();
  }
}

TEST_F(IdentityTest, GroupOrOtherAccessIsRefusedWithTheMode) {
  ASSERT_TRUE(Identity::Create(DataDir()).ok());
  for (mode_t mode : {mode_t{0644}, mode_t{0640}, mode_t{0620}, mode_t{0602}}) {
    ASSERT_EQ(::chmod(KeyPath().c_str(), mode), 0);
    Result<Identity> loaded = Identity::Load(DataDir());
    ASSERT_FALSE(loaded.ok());
    EXPECT_TRUE(loaded.status().IsRefused()) << loaded.status().ToString();
    char expected[32];
    std::snprintf(expected, sizeof(expected), "mode %04o, must be 0600", mode);
    EXPECT_NE(loaded.status().message().find(expected), std::string::npos)
        << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find(KeyPath()), std::string::npos);
  }
  // Owner-only read access is fine.
  ASSERT_EQ(::chmod(KeyPath().c_str(), 0400), 0);
  EXPECT_TRUE(Identity::Load(DataDir()).ok());
}

TEST_F(IdentityTest, PublicKeyNotMatchingTheSecretIsCorruption) {
  Result<Identity> created = Identity::Create(DataDir());
  ASSERT_TRUE(created.ok());
  Result<Identity> other = Identity::Create(root_ + "/other");
  ASSERT_TRUE(other.ok());
  const std::string full = ReadFile(KeyPath());
  const size_t public_hex = 20 + 7;
  const size_t secret_hex = 20 + 72 + 7;

  // Someone else's public key on line 2.
  std::string swapped = full;
  swapped.replace(public_hex, 64, other->public_key_text());
  // A damaged seed (first half of the secret): the embedded public key still matches
  // line 2, so only a signature check notices.
  std::string damaged_seed = full;
  damaged_seed[secret_hex] = damaged_seed[secret_hex] == '0' ? '1' : '0';
  // The public key half of the secret replaced as well as line 2.
  std::string both = swapped;
  both.replace(secret_hex + 64, 64, other->public_key_text());

  for (const std::string& contents : {swapped, damaged_seed, both}) {
    OverwriteFile(KeyPath(), contents);
    Result<Identity> loaded = Identity::Load(DataDir());
    ASSERT_FALSE(loaded.ok());
    EXPECT_TRUE(loaded.status().IsCorruption()) << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find("does not belong"), std::string::npos)
        << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find(KeyPath()), std::string::npos);
  }
}

TEST_F(IdentityTest, CreateWhereTheDirectoryCannotBeMadeIsAnIOError) {
  // A regular file where the data directory's parent should be.
  OverwriteFile(root_ + "/node", "not a directory");
  Result<Identity> created = Identity::Create(DataDir());
  ASSERT_FALSE(created.ok());
  EXPECT_TRUE(created.status().IsIOError()) << created.status().ToString();
  EXPECT_NE(created.status().message().find(DataDir()), std::string::npos)
      << created.status().ToString();
}

}  // namespace
}  // namespace tidemap
