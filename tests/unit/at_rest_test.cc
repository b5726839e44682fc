// Proves encryption of values at rest: the AEAD suites seal and open, and
// refuse tampered bytes, other associated data and other keys; the record
// codec seals only values (versions stay readable without the key) and a
// sealed value moved to another key or version fails to open even with its
// checksum recomputed; a replica with a cipher stores no plaintext, reads
// every acknowledged record back after restarts and machine crashes, and
// reports tampered and swapped values as corruption (scrub counts them); a
// reseal under a new key keeps reads working while it runs and leaves no
// plaintext nor old ciphertext in the files after its compaction; a data dir
// refuses no key, a wrong key, a missing key file and a world-readable one at
// open, takes a passphrase, and finishes a rekey interrupted by a crash; a
// cipher switches keys while in use and an open data dir is rekeyed while it
// serves (stopped after a page, the next rekey finishes it); and
// an encrypted replica and a plain one sync as usual (plaintext on the wire).
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "tests/support/fault_env.h"
#include "tests/support/sync_pump.h"
#include "tests/support/test_util.h"
#include <tidemap/base/aead.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/value_cipher.h>
#include <tidemap/storage/value_key.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;

crypto::SymmetricKey TestKey(char fill) {
  return crypto::SymmetricKey::FromBytesForTesting(std::string(32, fill));
}

std::unique_ptr<ValueCipher> TestCipher(uint8_t id, char fill) {
  auto key = crypto::AeadKey::Create(crypto::PreferredAeadSuite(), TestKey(fill));
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::make_unique<ValueCipher>(id, std::move(key).value());
}

// ---- the AEAD wrapper ----

TEST(AeadTest, BothSuitesSealAndOpenAndRefuseTampering) {
  std::vector<crypto::AeadSuite> suites = {crypto::AeadSuite::kXChaCha20Poly1305};
  if (crypto::Aes256GcmAvailable()) suites.push_back(crypto::AeadSuite::kAes256Gcm);
  for (crypto::AeadSuite suite : suites) {
    SCOPED_TRACE(std::string(crypto::AeadSuiteName(suite)));
    auto key = crypto::AeadKey::Create(suite, TestKey('k'));
    ASSERT_TRUE(key.ok());
    std::string sealed, again, opened;
    key->Seal("hello", "ad", &sealed);
    key->Seal("hello", "ad", &again);
    EXPECT_EQ(sealed.size(), 5 + key->overhead());
    EXPECT_NE(sealed, again);  // a random nonce per seal
    ASSERT_TRUE(key->Open(sealed, "ad", &opened).ok());
    EXPECT_EQ(opened, "hello");
    EXPECT_TRUE(key->Open(sealed, "other ad", &opened).IsCorruption());
    EXPECT_TRUE(opened.empty());
    std::string tampered = sealed;
    tampered[tampered.size() / 2] ^= 1;
    EXPECT_TRUE(key->Open(tampered, "ad", &opened).IsCorruption());
    EXPECT_TRUE(key->Open(sealed.substr(0, 10), "ad", &opened).IsCorruption());
    auto other = crypto::AeadKey::Create(suite, TestKey('o'));
    EXPECT_TRUE(other->Open(sealed, "ad", &opened).IsCorruption());
    EXPECT_EQ(crypto::ParseAeadSuite(crypto::AeadSuiteName(suite)).value(), suite);
  }
  EXPECT_TRUE(crypto::ParseAeadSuite("rot13").status().IsInvalidArgument());
}

TEST(AeadTest, PassphraseKeysAreDeterministicPerSalt) {
  const crypto::PwhashParams cheap{1, 8 << 20};
  const std::string salt(crypto::kPwhashSaltBytes, 's');
  auto a = crypto::KeyFromPassphrase("correct horse", salt, cheap);
  auto b = crypto::KeyFromPassphrase("correct horse", salt, cheap);
  auto c = crypto::KeyFromPassphrase("correct horse", std::string(16, 't'), cheap);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(KeyCheckValue(*a), KeyCheckValue(*b));
  EXPECT_NE(KeyCheckValue(*a), KeyCheckValue(*c));
  EXPECT_TRUE(crypto::KeyFromPassphrase("x", "short", cheap).status().IsInvalidArgument());
}

// ---- the record codec ----

// Recomputes a record row's checksum after its bytes were changed (as an
// attacker who knows the format can), so that only the AEAD tag stands.
std::string WithChecksum(std::string_view row_key, std::string bytes, size_t header_bytes) {
  const std::string_view b = bytes;
  const uint64_t sum =
      Hash64(b.substr(header_bytes + 8), Hash64(b.substr(0, header_bytes), Hash64(row_key)));
  std::string encoded;
  PutFixed64BE(&encoded, sum);
  bytes.replace(header_bytes, 8, encoded);
  return bytes;
}

TEST(SealedRecordTest, SealsValuesNotVersionsAndBindsKeyAndVersion) {
  auto cipher = TestCipher(1, 'k');
  const std::string row_a = rows::RecordKey("m", "a"), row_b = rows::RecordKey("m", "b");
  rows::RecordValue rec;
  rec.version = Version{Timestamp{12345}, 7};
  rec.value = "plaintext-value";
  const std::string sealed = rows::EncodeRecord(row_a, rec, cipher.get());
  EXPECT_EQ(sealed.find("plaintext-value"), std::string::npos);
  EXPECT_EQ(rows::RecordSealKeyId(row_a, sealed).value(), 1);
  auto meta = rows::DecodeRecordMeta(row_a, sealed);  // no key needed for the version
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->version, rec.version);
  auto opened = rows::DecodeRecord(row_a, sealed, cipher.get());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->value, "plaintext-value");
  EXPECT_TRUE(rows::DecodeRecord(row_a, sealed).status().IsUnavailable());

  // Moved under another key, checksum recomputed: the tag fails.
  constexpr size_t kHeader = 1 + 8 + 8;
  auto moved = rows::DecodeRecord(row_b, WithChecksum(row_b, sealed, kHeader), cipher.get());
  ASSERT_TRUE(moved.status().IsCorruption()) << moved.status().ToString();
  EXPECT_NE(moved.status().message().find("map 'm', key 'b'"), std::string::npos);
  EXPECT_NE(moved.status().message().find("fails authentication"), std::string::npos);
  // Given another version (hlc byte changed), checksum recomputed: fails too.
  std::string older = sealed;
  older[8] ^= 1;
  EXPECT_TRUE(rows::DecodeRecord(row_a, WithChecksum(row_a, older, kHeader), cipher.get())
                  .status()
                  .IsCorruption());
  // A flipped ciphertext bit fails the checksum, and with it recomputed, the tag.
  std::string flipped = sealed;
  flipped.back() ^= 1;
  EXPECT_TRUE(rows::DecodeRecord(row_a, flipped, cipher.get()).status().IsCorruption());
  EXPECT_TRUE(rows::DecodeRecord(row_a, WithChecksum(row_a, flipped, kHeader), cipher.get())
                  .status()
                  .IsCorruption());
  // Another key (wrong key id or wrong bytes) does not open it.
  EXPECT_TRUE(rows::DecodeRecord(row_a, sealed, TestCipher(2, 'k').get()).status().IsCorruption());
  EXPECT_TRUE(rows::DecodeRecord(row_a, sealed, TestCipher(1, 'x').get()).status().IsCorruption());

  rows::RecordValue tomb;
  tomb.version = rec.version;
  tomb.tombstone = true;
  const std::string t = rows::EncodeRecord(row_a, tomb, cipher.get());
  EXPECT_EQ(rows::RecordSealKeyId(row_a, t).value(), 0);  // tombstones are never sealed
  EXPECT_TRUE(rows::DecodeRecord(row_a, t).ok());
}

// ---- a replica with a cipher ----

class AtRestReplicaTest : public ::testing::Test {
 protected:
  AtRestReplicaTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())), clock_(kStartMs) {}

  std::unique_ptr<Replica> Open(const std::string& path, const ValueCipher* cipher,
                                uint64_t node_id = 1) {
    ReplicaOptions o;
    o.path = path;
    o.env = env_.get();
    o.clock = &clock_;
    o.node_id = node_id;
    o.value_cipher = cipher;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  std::unique_ptr<Store> OpenStore(const std::string& path) {
    StoreOptions so;
    so.path = path;
    so.env = env_.get();
    so.create_if_missing = false;
    auto s = Store::Open(so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  // Every byte of every file of the database at `path`.
  std::string AllBytes(const std::string& path) {
    std::vector<std::string> files;
    EXPECT_TRUE(env_->GetChildren(path, &files).ok());
    std::string all;
    for (const std::string& f : files) {
      std::string bytes;
      if (leveldb::ReadFileToString(env_.get(), path + "/" + f, &bytes).ok()) all += bytes;
    }
    return all;
  }

  std::unique_ptr<leveldb::Env> env_;
  ManualClock clock_;
};

TEST_F(AtRestReplicaTest, NoPlaintextStoredAndEveryRecordOpensAfterRestart) {
  auto cipher = TestCipher(1, 'k');
  auto r = Open("/db", cipher.get());
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "secret-" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(r->Delete("m", "k7").ok());
  r.reset();  // a restart (the memory Env keeps the log, as a crash would)
  EXPECT_EQ(AllBytes("/db").find("secret-1"), std::string::npos);
  r = Open("/db", cipher.get());
  for (int i = 0; i < 200; ++i) {
    auto got = r->Get("m", "k" + std::to_string(i));
    if (i == 7) {
      EXPECT_TRUE(got.status().IsNotFound());
      continue;
    }
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->value, "secret-" + std::to_string(i));
  }
  auto page = r->Scan("m", "", std::nullopt, 1000);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->items.size(), 199u);
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
  r.reset();
  // Without the key the versions still load, the values do not.
  r = Open("/db", nullptr);
  EXPECT_TRUE(r->Get("m", "k1").status().IsUnavailable());
}

// A machine crash (every unsynced byte lost, nothing written after it):
// every acknowledged sealed value opens after the restart, repeatedly.
TEST_F(AtRestReplicaTest, EveryAcknowledgedRecordOpensAfterCrashes) {
  testing::FaultEnv fault(env_.get());
  auto cipher = TestCipher(1, 'k');
  const auto open = [&] {
    ReplicaOptions o;
    o.path = "/db";
    o.env = &fault;
    o.clock = &clock_;
    o.node_id = 1;
    o.durability = Durability::kSync;
    o.value_cipher = cipher.get();
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  };
  std::map<std::string, std::string> acked;
  auto r = open();
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 100; ++i) {
      const std::string key = "k" + std::to_string((round * 37 + i) % 150);
      const std::string value = "v" + std::to_string(round) + "-" + std::to_string(i);
      ASSERT_TRUE(r->Put("m", key, value).ok());
      acked[key] = value;
    }
    fault.SetWriteError(true);
    r.reset();
    fault.SetWriteError(false);
    ASSERT_TRUE(fault.DropUnsyncedData().ok());
    r = open();
    for (const auto& [key, value] : acked) {
      auto got = r->Get("m", key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
      EXPECT_EQ(got->value, value) << key;
    }
  }
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
}

TEST_F(AtRestReplicaTest, SwappedAndTamperedValuesAreCorruptionNeverServed) {
  auto cipher = TestCipher(1, 'k');
  auto r = Open("/db", cipher.get());
  ASSERT_TRUE(r->Put("m", "alice", "alice-secret").ok());
  ASSERT_TRUE(r->Put("m", "bob", "bob-secret").ok());
  ASSERT_TRUE(r->Put("m", "carol", "carol-secret").ok());
  r.reset();
  {
    auto store = OpenStore("/db");
    const std::string ra = rows::RecordKey("m", "alice"), rb = rows::RecordKey("m", "bob");
    const std::string rc = rows::RecordKey("m", "carol");
    const std::string a = store->Get(ra).value(), b = store->Get(rb).value();
    std::string c = store->Get(rc).value();
    constexpr size_t kHeader = 1 + 8 + 8;
    // Alice's and Bob's values swapped, with the same version bytes and
    // recomputed checksums: only the AEAD binding tells.
    std::string a_with_b = a.substr(0, kHeader + 8) + b.substr(kHeader + 8);
    std::string b_with_a = b.substr(0, kHeader + 8) + a.substr(kHeader + 8);
    c[c.size() - 3] ^= 0x40;
    Batch batch;
    batch.Put(ra, WithChecksum(ra, a_with_b, kHeader));
    batch.Put(rb, WithChecksum(rb, b_with_a, kHeader));
    batch.Put(rc, WithChecksum(rc, c, kHeader));
    ASSERT_TRUE(store->Write(&batch, true).ok());
  }
  r = Open("/db", cipher.get());
  for (const char* key : {"alice", "bob", "carol"}) {
    auto got = r->Get("m", key);
    ASSERT_TRUE(got.status().IsCorruption()) << key << ": " << got.status().ToString();
    EXPECT_NE(got.status().message().find("fails authentication"), std::string::npos);
  }
  EXPECT_TRUE(r->Scan("m", "", std::nullopt, 10).status().IsCorruption());
  auto scrub = r->Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_EQ(scrub->value_failures, 3u);
  EXPECT_FALSE(scrub->ok());
}

TEST_F(AtRestReplicaTest, ResealServesReadsAndLeavesNoOldBytes) {
  auto old_cipher = TestCipher(1, 'o');
  auto r = Open("/db", old_cipher.get());
  std::string old_ciphertext;
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(r->Put("m", "k" + std::to_string(i), "plain-" + std::to_string(i)).ok());
  }
  r.reset();
  {
    auto store = OpenStore("/db");
    const std::string row = rows::RecordKey("m", "k42");
    const std::string bytes = store->Get(row).value();
    old_ciphertext = bytes.substr(bytes.size() - 24);  // part of the tag and ciphertext
  }
  ASSERT_NE(AllBytes("/db").find(old_ciphertext), std::string::npos);

  auto cipher = TestCipher(2, 'n');
  cipher->AddOpenKey(1,
                     crypto::AeadKey::Create(crypto::PreferredAeadSuite(), TestKey('o')).value());
  r = Open("/db", cipher.get());
  std::atomic<bool> done{false};
  std::atomic<uint64_t> reads{0}, failures{0};
  std::thread reader([&] {
    for (int i = 0; !done.load() || i < 100; ++i) {
      auto got = r->Get("m", "k" + std::to_string(i % 3000));
      if (!got.ok() || got->value != "plain-" + std::to_string(i % 3000)) failures.fetch_add(1);
      reads.fetch_add(1);
    }
  });
  auto report = r->ResealValues();
  done.store(true);
  reader.join();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->records, 3000u);
  EXPECT_EQ(report->resealed, 3000u);
  EXPECT_EQ(failures.load(), 0u) << "of " << reads.load() << " reads during the reseal";
  EXPECT_EQ(r->ResealValues()->resealed, 0u);  // idempotent
  r.reset();

  const std::string files = AllBytes("/db");
  EXPECT_EQ(files.find(old_ciphertext), std::string::npos);
  EXPECT_EQ(files.find("plain-42"), std::string::npos);
  auto only_new = TestCipher(2, 'n');
  r = Open("/db", only_new.get());
  for (int i = 0; i < 3000; i += 97) {
    EXPECT_EQ(r->Get("m", "k" + std::to_string(i))->value, "plain-" + std::to_string(i));
  }
}

// An encrypted replica and a plain one converge, each value arriving in the
// clear and stored under the receiver's own policy.
TEST_F(AtRestReplicaTest, EncryptedAndPlainReplicasSync) {
  auto cipher = TestCipher(1, 'k');
  auto sealed = Open("/sealed", cipher.get(), 1);
  auto plain = Open("/plain", nullptr, 2);
  ASSERT_TRUE(sealed->Put("m", "from-sealed", "value-of-sealed").ok());
  ASSERT_TRUE(plain->Put("m", "from-plain", "value-of-plain").ok());
  SyncSession a(sealed.get(), 2, SyncOptions{});
  SyncSession b(plain.get(), 1, SyncOptions{});
  testing::SyncPumpOptions options;
  options.now_ms = kStartMs;
  bool saw_plaintext = false;
  options.deliver = [&](const msg::Message& m, bool a_to_b) {
    if (!a_to_b) return;
    if (const auto* batch = std::get_if<msg::RecordBatch>(&m.body)) {
      for (const KeyedRecord& rec : batch->records) saw_plaintext |= rec.value == "value-of-sealed";
    }
    if (const auto* diff = std::get_if<msg::DiffRecords>(&m.body)) {
      for (const KeyedRecord& rec : diff->records) saw_plaintext |= rec.value == "value-of-sealed";
    }
  };
  const testing::SyncPumpResult result = testing::PumpSync(a, b, options);
  ASSERT_TRUE(result.status.ok()) << result.status.ToString();
  EXPECT_TRUE(saw_plaintext);
  EXPECT_EQ(sealed->MerkleRoot(), plain->MerkleRoot());
  EXPECT_EQ(sealed->Get("m", "from-plain")->value, "value-of-plain");
  EXPECT_EQ(plain->Get("m", "from-sealed")->value, "value-of-sealed");
  sealed.reset();
  plain.reset();
  EXPECT_EQ(AllBytes("/sealed").find("value-of-plain"), std::string::npos);
  EXPECT_NE(AllBytes("/plain").find("value-of-sealed"), std::string::npos);
}

// ---- data dirs ----

class AtRestDataDirTest : public ::testing::Test {
 protected:
  AtRestDataDirTest() : root_(testing::MakeTempDir("at_rest")) {}
  ~AtRestDataDirTest() override { std::filesystem::remove_all(root_); }

  std::string Path(const std::string& name) const { return root_ + "/" + name; }

  DataDirOptions WithKey(const std::string& key_file) const {
    DataDirOptions o;
    o.value_key.key_file = key_file;
    return o;
  }

  std::string root_;
};

// A key file being created is never seen half written (a running rekey
// creates its new key while a second request may read the same path), an
// existing one is never overwritten, and no temporary copy stays behind.
TEST_F(AtRestDataDirTest, AKeyFileAppearsWholeOrNotAtAll) {
  const std::string key = Path("new.key");
  std::atomic<bool> done{false};
  std::string torn;
  std::thread reader([&] {
    while (!done) {
      auto k = LoadValueKeyFile(key);
      if (!k.ok() && !k.status().IsUnavailable() && torn.empty()) torn = k.status().ToString();
    }
  });
  for (int i = 0; i < 300; ++i) {
    const Status created = CreateValueKeyFile(key);
    if (!created.ok()) {  // not ASSERT: the reader must be joined
      ADD_FAILURE() << created.ToString();
      break;
    }
    const Status again = CreateValueKeyFile(key);
    EXPECT_TRUE(again.IsRefused()) << again.ToString();
    std::filesystem::remove(key);
  }
  done = true;
  reader.join();
  EXPECT_EQ(torn, "");
  EXPECT_TRUE(std::filesystem::is_empty(root_));
}

TEST_F(AtRestDataDirTest, InitCreatesAPrivateKeyAndOpenRefusesBadKeys) {
  const std::string dir = Path("node"), key = Path("value.key");
  DataDirOptions init = WithKey(key);
  init.encrypt = true;
  {
    auto d = DataDir::Init(dir, init);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE((*d)->encrypted());
    ASSERT_TRUE((*d)->replica().Put("m", "k", "top-secret-value").ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(std::filesystem::exists(dir + "/encryption"));
  EXPECT_EQ(testing::BytesOfFilesUnder(dir).find("top-secret-value"), std::string::npos);

  auto ok = DataDir::Open(dir, WithKey(key));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->replica().Get("m", "k")->value, "top-secret-value");
  ok->reset();

  auto none = DataDir::Open(dir);
  ASSERT_TRUE(none.status().IsUnavailable());
  EXPECT_NE(none.status().message().find("is encrypted at rest and no key was given"),
            std::string::npos)
      << none.status().ToString();

  ASSERT_TRUE(CreateValueKeyFile(Path("other.key")).ok());
  auto wrong = DataDir::Open(dir, WithKey(Path("other.key")));
  ASSERT_TRUE(wrong.status().IsUnavailable());
  EXPECT_NE(wrong.status().message().find("is wrong"), std::string::npos)
      << wrong.status().ToString();

  auto missing = DataDir::Open(dir, WithKey(Path("nope.key")));
  ASSERT_TRUE(missing.status().IsUnavailable());
  EXPECT_NE(missing.status().message().find("does not exist"), std::string::npos)
      << missing.status().ToString();

  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  auto readable = DataDir::Open(dir, WithKey(key));
  ASSERT_TRUE(readable.status().IsRefused());
  EXPECT_NE(readable.status().message().find("has mode 0644, must be 0600"), std::string::npos)
      << readable.status().ToString();

  auto plain_with_key = DataDir::Init(Path("plain"), WithKey(key));
  EXPECT_TRUE(plain_with_key.status().IsInvalidArgument());
}

TEST_F(AtRestDataDirTest, PassphraseDerivedKey) {
  const std::string dir = Path("node");
  DataDirOptions init;
  init.encrypt = true;
  init.value_key.passphrase = "correct horse battery staple";
  init.pwhash = crypto::PwhashParams{1, 8 << 20};  // cheap for the test
  {
    auto d = DataDir::Init(dir, init);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE((*d)->replica().Put("m", "k", "v").ok());
  }
  DataDirOptions open;
  open.value_key.passphrase = "correct horse battery staple";
  auto d = DataDir::Open(dir, open);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)->replica().Get("m", "k")->value, "v");
  d->reset();
  open.value_key.passphrase = "wrong horse";
  EXPECT_NE(DataDir::Open(dir, open).status().message().find("the passphrase is wrong"),
            std::string::npos);
}

TEST_F(AtRestDataDirTest, RekeyResumesAfterACrashAndLeavesNoOldBytes) {
  const std::string dir = Path("node"), old_key = Path("old.key"), new_key = Path("new.key");
  DataDirOptions init = WithKey(old_key);
  init.encrypt = true;
  std::string old_ciphertext;
  {
    auto d = DataDir::Init(dir, init);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    for (int i = 0; i < 500; ++i) {
      ASSERT_TRUE(
          (*d)->replica().Put("m", "k" + std::to_string(i), "plain-" + std::to_string(i)).ok());
    }
  }
  {
    StoreOptions so;
    so.path = dir + "/db";
    so.create_if_missing = false;
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok());
    const std::string bytes = (*store)->Get(rows::RecordKey("m", "k42")).value();
    old_ciphertext = bytes.substr(bytes.size() - 24);
  }
  // The crash: the first step of a rekey is done (DIR/encryption names the
  // new key, with the old one wrapped), no value is resealed yet.
  ASSERT_TRUE(CreateValueKeyFile(new_key).ok());
  {
    const EncryptionConfig config = LoadEncryptionConfig(dir).value().value();
    const EncryptionConfig next = BeginRekeyConfig(config, LoadValueKeyFile(old_key).value(),
                                                   LoadValueKeyFile(new_key).value())
                                      .value();
    ASSERT_TRUE(SaveEncryptionConfig(dir, next, /*replace=*/true).ok());
  }
  {
    // Both keys' values open with the new key; new writes use it.
    auto d = DataDir::Open(dir, WithKey(new_key));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ((*d)->replica().Get("m", "k1")->value, "plain-1");
    ASSERT_TRUE((*d)->replica().Put("m", "k1", "plain-1b").ok());
  }
  auto with_old = DataDir::Open(dir, WithKey(old_key));
  EXPECT_NE(with_old.status().message().find("old key of an unfinished rekey"), std::string::npos)
      << with_old.status().ToString();

  auto report = DataDir::Rekey(dir, WithKey(old_key), new_key);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->resumed);
  EXPECT_EQ(report->old_key_id, 1);
  EXPECT_EQ(report->new_key_id, 2);
  EXPECT_EQ(report->reseal.resealed, 499u);  // k1 was written under the new key already
  EXPECT_FALSE(LoadEncryptionConfig(dir).value()->old_key_id != 0);

  const std::string files = testing::BytesOfFilesUnder(dir + "/db");
  EXPECT_EQ(files.find(old_ciphertext), std::string::npos);
  EXPECT_EQ(files.find("plain-42"), std::string::npos);
  EXPECT_TRUE(DataDir::Open(dir, WithKey(old_key)).status().IsUnavailable());
  auto d = DataDir::Open(dir, WithKey(new_key));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)->replica().Get("m", "k1")->value, "plain-1b");
  EXPECT_EQ((*d)->replica().Get("m", "k42")->value, "plain-42");
  auto scrub = (*d)->replica().Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
  d->reset();

  // A second, uninterrupted rekey back to a third key.
  auto again = DataDir::Rekey(dir, WithKey(new_key), Path("third.key"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->resumed);
  EXPECT_EQ(again->reseal.resealed, 500u);
  EXPECT_TRUE(DataDir::Open(dir, WithKey(Path("third.key"))).ok());
}

// A cipher switched to a new sealing key while threads seal and open: every
// value opens, whichever key sealed it, and new values name the new key.
TEST(ValueCipherTest, SwitchSealKeyWhileInUse) {
  auto cipher = TestCipher(1, 'a');
  std::string first;
  cipher->Seal("ad", "value", &first);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread user([&] {
    std::string sealed, opened;
    while (!stop) {
      sealed.clear();
      cipher->Seal("ad", "value", &sealed);
      if (!cipher->Open("ad", sealed, &opened).ok() || opened != "value") ++failures;
    }
  });
  for (uint8_t id = 2; id <= 4; ++id) {
    auto key = crypto::AeadKey::Create(crypto::PreferredAeadSuite(),
                                       TestKey(static_cast<char>('a' + id - 1)));
    ASSERT_TRUE(key.ok());
    cipher->SwitchSealKey(id, std::move(key).value());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  user.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(cipher->seal_key_id(), 4);
  std::string sealed, opened;
  cipher->Seal("ad", "value", &sealed);
  EXPECT_EQ(ValueCipher::KeyIdOf(sealed).value_or(0), 4);
  ASSERT_TRUE(cipher->Open("ad", first, &opened).ok());
  EXPECT_EQ(opened, "value");
  // The new key alone opens the new value, not the first one.
  auto only_new = TestCipher(4, 'd');
  EXPECT_TRUE(only_new->Open("ad", sealed, &opened).ok());
  EXPECT_FALSE(only_new->Open("ad", first, &opened).ok());
}

// DataDir::RekeyServing on an open data dir: reads from another thread get
// every value while it runs; stopped after a page, it is left in progress and
// the next call finishes it; afterwards only the new key opens the dir.
TEST_F(AtRestDataDirTest, RekeyServingKeepsServingAndResumesAfterAStop) {
  const std::string dir = Path("node"), old_key = Path("old.key"), new_key = Path("new.key");
  DataDirOptions init = WithKey(old_key);
  init.encrypt = true;
  constexpr int kRecords = 2500;
  {
    auto d = DataDir::Init(dir, init);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    for (int i = 0; i < kRecords; ++i) {
      ASSERT_TRUE((*d)->replica().Put("m", "k" + std::to_string(i), "v" + std::to_string(i)).ok());
    }
  }
  auto d = DataDir::Open(dir, WithKey(old_key));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  Replica& replica = (*d)->replica();
  std::atomic<bool> stop{false};
  std::atomic<int> bad_reads{0}, reads{0};
  std::thread reader([&] {
    for (int i = 0; !stop; i = (i + 7) % kRecords, ++reads) {
      auto rec = replica.Get("m", "k" + std::to_string(i));
      if (!rec.ok() || rec->value != "v" + std::to_string(i)) ++bad_reads;
    }
  });
  auto stopped = (*d)->RekeyServing(new_key, [](const ResealReport&) { return false; });
  EXPECT_TRUE(stopped.status().IsUnavailable()) << stopped.status().ToString();
  EXPECT_EQ((*d)->value_key_id(), 2);
  ASSERT_TRUE(replica.Put("m", "after-switch", "new").ok());
  // After each page the rekey waits (up to 5 s) for the reader to read
  // again, so reads interleave with the pages however the threads are
  // scheduled.
  int pages = 0;
  auto report = (*d)->RekeyServing(new_key, [&](const ResealReport&) {
    ++pages;
    const int seen = reads.load();
    for (int ms = 0; reads.load() == seen && ms < 5000; ++ms) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  });
  stop = true;
  reader.join();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->resumed);
  EXPECT_EQ(report->old_key_id, 1);
  EXPECT_EQ(report->new_key_id, 2);
  EXPECT_EQ(report->reseal.resealed, uint64_t{kRecords} - 1000);  // the first page was done
  EXPECT_GE(pages, 2);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(bad_reads.load(), 0);
  EXPECT_EQ(LoadEncryptionConfig(dir).value()->old_key_id, 0);
  d->reset();
  EXPECT_TRUE(DataDir::Open(dir, WithKey(old_key)).status().IsUnavailable());
  auto reopened = DataDir::Open(dir, WithKey(new_key));
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->replica().Get("m", "k42")->value, "v42");
  EXPECT_EQ((*reopened)->replica().Get("m", "after-switch")->value, "new");
  auto scrub = (*reopened)->replica().Scrub();
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->ok());
}

}  // namespace
}  // namespace tidemap
