// Proves encryption at rest with the real `tidemap` binary: `init --encrypt`
// makes a key file (mode 0600) and a data dir whose files hold no plaintext;
// put/get/scan/status/scrub work with --key-file; a missing key, a wrong key
// and a missing key file are refused at open with exit 3 and a message that
// says which, a world-readable key file with exit 4; a passphrase from the
// environment works; `rekey` reseals under a new key, after which the old
// key is wrong and neither the plaintext nor an old ciphertext is in the
// database files.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/test_util.h"

namespace tidemap {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

RunResult Tidemap(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  return testing::RunProgram(TIDEMAP_BIN, args, {}, env, 60'000);
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

class AtRestCliTest : public ::testing::Test {
 protected:
  AtRestCliTest() : tmp_(testing::MakeTempDir("tidemap-at-rest")), dir_(tmp_ + "/node") {}
  ~AtRestCliTest() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  std::string tmp_, dir_;
};

TEST_F(AtRestCliTest, KeyFileLifecycle) {
  const std::string key = tmp_ + "/value.key";
  RunResult r = Tidemap({"init", "--data", dir_, "--encrypt", "--key-file", key});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "values encrypted at rest")) << r;
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  for (int i = 0; i < 50; ++i) {
    r = Tidemap({"put", "--data", dir_, "--key-file", key, "fruit", "k" + std::to_string(i),
                 "sekrit-" + std::to_string(i)});
    ASSERT_EQ(r.exit_code, 0) << r;
  }
  r = Tidemap({"get", "--data", dir_, "--key-file", key, "fruit", "k7"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "sekrit-7");
  r = Tidemap({"scan", "--data", dir_, "--key-file", key, "fruit", "--limit", "2"});
  EXPECT_EQ(r.exit_code, 0) << r;
  r = Tidemap({"scrub", "--data", dir_, "--key-file", key});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "value failures   0")) << r;
  r = Tidemap({"status", "--data", dir_, "--key-file", key});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, ", new values sealed under key 1\n")) << r;
  EXPECT_FALSE(Contains(testing::BytesOfFilesUnder(dir_), "sekrit-"));

  r = Tidemap({"get", "--data", dir_, "fruit", "k7"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "is encrypted at rest and no key was given")) << r;
  ASSERT_EQ(
      Tidemap({"init", "--data", tmp_ + "/other", "--encrypt", "--key-file", tmp_ + "/other.key"})
          .exit_code,
      0);
  r = Tidemap({"get", "--data", dir_, "--key-file", tmp_ + "/other.key", "fruit", "k7"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "is wrong")) << r;
  r = Tidemap({"status", "--data", dir_, "--key-file", tmp_ + "/missing.key"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "does not exist")) << r;
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  r = Tidemap({"get", "--data", dir_, "--key-file", key, "fruit", "k7"});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_TRUE(Contains(r.err, "must be 0600")) << r;
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);

  const std::string new_key = tmp_ + "/new.key";
  r = Tidemap({"rekey", "--data", dir_, "--key-file", key, "--new-key-file", new_key});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "resealed         50")) << r;
  r = Tidemap({"get", "--data", dir_, "--key-file", key, "fruit", "k7"});
  EXPECT_EQ(r.exit_code, 3) << r;
  r = Tidemap({"get", "--data", dir_, "--key-file", new_key, "fruit", "k7"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "sekrit-7");
  EXPECT_FALSE(Contains(testing::BytesOfFilesUnder(dir_), "sekrit-"));
  r = Tidemap({"status", "--data", dir_, "--key-file", new_key, "--json"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "\"key_id\": 2")) << r;
}

TEST_F(AtRestCliTest, PassphraseFromTheEnvironment) {
  const std::vector<std::string> env = {"TIDEMAP_PASSPHRASE=correct horse battery staple"};
  RunResult r = Tidemap({"init", "--data", dir_, "--encrypt"}, env);
  ASSERT_EQ(r.exit_code, 0) << r;
  ASSERT_EQ(Tidemap({"put", "--data", dir_, "m", "k", "v"}, env).exit_code, 0);
  r = Tidemap({"get", "--data", dir_, "m", "k"}, env);
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "v");
  r = Tidemap({"get", "--data", dir_, "m", "k"}, {"TIDEMAP_PASSPHRASE=wrong"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(Contains(r.err, "the passphrase is wrong")) << r;
}

// A snapshot of an encrypted data dir (export with its key) restores into
// another encrypted data dir under another key: the values open there with
// the new key only, and its files hold no plaintext.
TEST_F(AtRestCliTest, SnapshotsMoveBetweenEncryptedDataDirs) {
  const std::string key = tmp_ + "/value.key", other_key = tmp_ + "/restored.key";
  const std::string file = tmp_ + "/backup.tidesnap", restored = tmp_ + "/restored";
  ASSERT_EQ(Tidemap({"init", "--data", dir_, "--encrypt", "--key-file", key}).exit_code, 0);
  ASSERT_EQ(Tidemap({"put", "--data", dir_, "--key-file", key, "m", "k", "sekrit-value"}).exit_code,
            0);
  RunResult r = Tidemap({"snapshot", "export", "--data", dir_, file});
  EXPECT_EQ(r.exit_code, 3) << r;  // sealed values need the key
  r = Tidemap({"snapshot", "export", "--data", dir_, "--key-file", key, file});
  ASSERT_EQ(r.exit_code, 0) << r;
  r = Tidemap(
      {"snapshot", "import", "--data", restored, "--encrypt", "--key-file", other_key, file});
  ASSERT_EQ(r.exit_code, 0) << r;
  r = Tidemap({"get", "--data", restored, "--key-file", other_key, "m", "k"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "sekrit-value");
  r = Tidemap({"get", "--data", restored, "--key-file", key, "m", "k"});
  EXPECT_EQ(r.exit_code, 3) << r;  // the source's key is not this dir's
  EXPECT_FALSE(Contains(testing::BytesOfFilesUnder(restored), "sekrit-value"));
}

}  // namespace
}  // namespace tidemap
