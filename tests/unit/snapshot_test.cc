// Proves snapshots: an export under concurrent writes holds exactly the
// records of every seq up to its header's seq and none after; a snapshot
// loaded into a new replica gives the same records, versions, expiries and
// Merkle root, and a tree diff with the source afterwards moves only what
// changed since (records and tree traffic within 2x the changed records'
// bytes); a truncated, corrupt or other-format file is refused with its
// offset; an import into a non-empty data dir, or of a bad file, leaves
// nothing behind. Replicas run on LevelDB's memory Env, data dirs in a temp dir.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "tests/support/sync_pump.h"
#include "tests/support/test_util.h"
#include <tidemap/base/aead.h>
#include <tidemap/merkle/merkle.h>
#include <tidemap/replica/snapshot.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/codec_internal.h>
#include <tidemap/schemas/record_blob_reader.h>
#include <tidemap/schemas/record_blob_writer.h>
#include <tidemap/schemas/snapshot_file.h>
#include <tidemap/server/snapshot.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;

class SnapshotTest : public ::testing::Test {
 protected:
  SnapshotTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())), clock_(kStartMs) {}

  std::unique_ptr<Replica> Open(uint64_t id, const std::string& path,
                                uint64_t horizon_ms = uint64_t{7} * 24 * 3600 * 1000,
                                const ValueCipher* cipher = nullptr) {
    ReplicaOptions o;
    o.value_cipher = cipher;
    o.tombstone_horizon_ms = horizon_ms;
    o.path = path;
    o.env = env_.get();
    o.clock = &clock_;
    o.node_id = id;
    o.durability = Durability::kRelaxed;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  static std::string Export(const Replica& r, SnapshotCounts* counts = nullptr) {
    std::string file;
    auto c = ExportSnapshot(r, kStartMs, [&](std::string_view b) {
      file.append(b);
      return Status::Ok();
    });
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    if (counts != nullptr && c.ok()) *counts = *c;
    return file;
  }

  // Reads a whole file from memory; its status, and the records and watermarks.
  static Status Read(const std::string& file, std::vector<KeyedRecord>* records = nullptr,
                     std::vector<SnapshotWatermark>* marks = nullptr,
                     SnapshotHeader* header = nullptr) {
    size_t at = 0;
    SnapshotFileReader reader([&](char* buf, size_t n) -> Result<size_t> {
      const size_t got = std::min(n, file.size() - at);
      std::memcpy(buf, file.data() + at, got);
      at += got;
      return got;
    });
    TIDEMAP_ASSIGN_OR_RETURN(SnapshotHeader h, reader.ReadHeader());
    if (header != nullptr) *header = h;
    std::vector<KeyedRecord> rs;
    std::vector<SnapshotWatermark> ms;
    for (;;) {
      TIDEMAP_ASSIGN_OR_RETURN(SnapshotPart part, reader.Next(&rs, &ms));
      if (part == SnapshotPart::kEnd) break;
    }
    if (records != nullptr) *records = std::move(rs);
    if (marks != nullptr) *marks = std::move(ms);
    return Status::Ok();
  }

  // Loads `file` into a new replica (node `id` at `path`, its values sealed
  // with `cipher` when given), closes and reopens it.
  std::unique_ptr<Replica> Load(const std::string& file, uint64_t id, const std::string& path,
                                const ValueCipher* cipher = nullptr) {
    constexpr uint64_t kHorizonMs = uint64_t{7} * 24 * 3600 * 1000;
    std::vector<KeyedRecord> records;
    std::vector<SnapshotWatermark> marks;
    EXPECT_TRUE(Read(file, &records, &marks).ok());
    {
      auto r = Open(id, path, kHorizonMs, cipher);
      auto loader = SnapshotLoader::Begin(r.get());
      EXPECT_TRUE(loader.ok()) << loader.status().ToString();
      EXPECT_TRUE((*loader)->Add(records).ok());
      auto loaded = (*loader)->Finish(marks);
      EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    }
    return Open(id, path, kHorizonMs, cipher);
  }

  // "map/key=value@version+expiry" of every stored record, tombstones as ⊥.
  static std::string Render(const Replica& r) {
    std::string out;
    EXPECT_TRUE(r.ForEachKeyMeta([&](const KeyMeta& m) {
                   auto rec = r.ReadRecord(m.map, m.key);
                   out += std::string(m.map) + "/" + std::string(m.key) + "=" +
                          (m.tombstone ? std::string("⊥") : (*rec)->value) + "@" +
                          m.version.ToString() +
                          (m.expiry_ms ? "+" + std::to_string(m.expiry_ms) : "") + " ";
                   return true;
                 }).ok());
    return out;
  }

  std::unique_ptr<leveldb::Env> env_;
  ManualClock clock_;
};

TEST_F(SnapshotTest, RoundTripKeepsVersionsExpiriesAndRoot) {
  auto a = Open(1, "/a");
  ASSERT_TRUE(a->Put("m", "k1", "v1").ok());
  ASSERT_TRUE(a->Put("m", "k2", std::string(3000, 'x')).ok());
  ASSERT_TRUE(a->Put("other", std::string("\0\xff", 2), "bin").ok());
  ASSERT_TRUE(a->Put("m", "ttl", "soon", PutOptions{60'000}).ok());
  ASSERT_TRUE(a->Delete("m", "k1").ok());
  SnapshotCounts counts;
  const std::string file = Export(*a, &counts);
  EXPECT_EQ(counts.records, 4u);
  EXPECT_EQ(counts.tombstones, 1u);
  EXPECT_EQ(counts.header.seq, 5u);
  EXPECT_EQ(counts.header.node_id, 1u);
  EXPECT_EQ(counts.header.incarnation, a->incarnation());
  EXPECT_EQ(counts.bytes, file.size());
  auto b = Load(file, 2, "/b");
  EXPECT_EQ(Render(*b), Render(*a));
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
  EXPECT_NE(b->incarnation(), a->incarnation());
  EXPECT_EQ(b->LastSeq(), 0u);  // the records are the source's, not changes here
  // Local writes after the restore are stamped above every loaded version.
  auto v = b->Put("m", "k3", "after");
  ASSERT_TRUE(v.ok());
  EXPECT_GT(v->hlc, a->LastTimestamp());
  EXPECT_TRUE(b->Scrub()->ok());
}

// The key-hash index rows of a large import are written in several sorted
// runs when they overflow the loader's buffer: here a run every few records
// (a buffer of 2 KB), with the same records, root and scrub as one run.
TEST_F(SnapshotTest, IndexRowsInManyRunsLoadTheSame) {
  auto a = Open(1, "/a");
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(a->Put(i % 3 == 0 ? "x" : "m", "k" + std::to_string(i), "v").ok());
  }
  for (int i = 0; i < 2000; i += 7) ASSERT_TRUE(a->Delete("m", "k" + std::to_string(i)).ok());
  std::vector<KeyedRecord> records;
  std::vector<SnapshotWatermark> marks;
  ASSERT_TRUE(Read(Export(*a), &records, &marks).ok());
  {
    auto b = Open(2, "/b");
    auto loader = SnapshotLoader::Begin(b.get(), 2048);
    ASSERT_TRUE(loader.ok()) << loader.status().ToString();
    for (const KeyedRecord& r : records) ASSERT_TRUE((*loader)->Add(std::span(&r, 1)).ok());
    ASSERT_TRUE((*loader)->Finish(marks).ok());
  }
  auto b = Open(2, "/b");
  EXPECT_EQ(Render(*b), Render(*a));
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
  EXPECT_TRUE(b->Scrub()->ok());
}

// A map's clear travels as its record; the restored node hides (and then
// removes) the records older than it that the source had not removed yet.
TEST_F(SnapshotTest, AClearedMapStaysClearedAfterARestore) {
  auto a = Open(1, "/a");
  ASSERT_TRUE(a->Put("m", "k1", "v1").ok());
  ASSERT_TRUE(a->Put("m", "k2", "v2").ok());
  ASSERT_TRUE(a->Put("other", "x", "kept").ok());
  ASSERT_TRUE(a->ClearMap("m").ok());
  ASSERT_TRUE(a->Put("m", "k3", "after").ok());
  auto b = Load(Export(*a), 2, "/b");
  EXPECT_EQ(b->Get("m", "k1").status().code(), Status::Code::kNotFound);
  auto page = b->Scan("m", "", std::nullopt, 100);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].key, "k3");
  EXPECT_TRUE(b->Get("other", "x").ok());
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
  // Both remove what the clear hides and still agree.
  ASSERT_TRUE(a->RemoveClearedRecords().ok());
  ASSERT_TRUE(b->RemoveClearedRecords().ok());
  EXPECT_EQ(Render(*b), Render(*a));
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
}

// An encrypted source exports its values opened (the file holds them in the
// clear); the loading replica seals them under its own key.
TEST_F(SnapshotTest, ValuesAreOpenedOnExportAndSealedAgainOnImport) {
  const auto cipher = [](std::string_view key) {
    auto k = crypto::AeadKey::Create(crypto::PreferredAeadSuite(),
                                     crypto::SymmetricKey::FromBytesForTesting(key));
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    return std::make_unique<ValueCipher>(1, std::move(k).value());
  };
  const auto source_key = cipher("the source's key");
  const auto target_key = cipher("the target's key");
  auto a = Open(1, "/a", uint64_t{7} * 24 * 3600 * 1000, source_key.get());
  ASSERT_TRUE(a->Put("m", "k", "a value sealed at rest").ok());
  const std::string file = Export(*a);
  EXPECT_NE(file.find("a value sealed at rest"), std::string::npos);
  auto b = Load(file, 2, "/b", target_key.get());
  auto rec = b->Get("m", "k");
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_EQ(rec->value, "a value sealed at rest");
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
  b.reset();
  auto unkeyed = Open(2, "/b");  // the stored value is sealed: no key, no value
  EXPECT_FALSE(unkeyed->Get("m", "k").ok());
}

// Purged tombstones leave GC watermarks; they travel, so the restored node
// refuses the same stale versions as its source.
TEST_F(SnapshotTest, GcWatermarksTravel) {
  auto a = Open(1, "/a", /*horizon_ms=*/1000);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(a->Put("m", "k" + std::to_string(i), "v").ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a->Delete("m", "k" + std::to_string(i)).ok());
  clock_.Advance(5000);
  auto purged = a->PurgeTombstones();
  ASSERT_TRUE(purged.ok()) << purged.status().ToString();
  ASSERT_EQ(purged->purged, 10u);
  SnapshotCounts counts;
  const std::string file = Export(*a, &counts);
  EXPECT_EQ(counts.watermarks, 10u);
  EXPECT_EQ(counts.records, 10u);
  auto b = Load(file, 2, "/b");
  EXPECT_EQ(b->gc_watermark(), a->gc_watermark());
  for (int i = 0; i < 10; ++i) {
    const uint64_t hash = KeyHash("m", "k" + std::to_string(i));
    EXPECT_EQ(b->gc_watermark(hash), a->gc_watermark(hash));
  }
  EXPECT_EQ(b->MerkleRoot(), a->MerkleRoot());
  EXPECT_EQ(Render(*b), Render(*a));
}

TEST_F(SnapshotTest, LoaderRefusesANonEmptyReplicaAndDisorder) {
  auto a = Open(1, "/a");
  ASSERT_TRUE(a->Put("m", "k", "v").ok());
  EXPECT_TRUE(SnapshotLoader::Begin(a.get()).status().IsRefused());
  auto b = Open(2, "/b");
  auto loader = SnapshotLoader::Begin(b.get());
  ASSERT_TRUE(loader.ok());
  const Version v{Timestamp::FromParts(kStartMs, 0), 1};
  std::vector<KeyedRecord> records = {{"m", "k2", "x", v, false, 0}, {"m", "k1", "y", v, false, 0}};
  EXPECT_TRUE((*loader)->Add(records).IsInvalidArgument());
}

// A writer puts k<i> at seq i while a snapshot is opened and read: the
// snapshot holds exactly k1..kS for its header's seq S, read while the
// writes went on (the cursor holds no lock).
TEST_F(SnapshotTest, ExportUnderConcurrentWritesIsPointInTime) {
  auto a = Open(1, "/a");
  constexpr uint64_t kWrites = 20'000;
  std::atomic<bool> failed{false};
  std::thread writer([&] {
    char key[32];
    for (uint64_t i = 1; i <= kWrites; ++i) {
      std::snprintf(key, sizeof(key), "k%08llu", static_cast<unsigned long long>(i));
      if (!a->Put("m", key, "v").ok()) failed = true;
    }
  });
  while (a->LastSeq() < kWrites / 4) std::this_thread::yield();
  auto stream = SnapshotStream::Open(*a, kStartMs);
  ASSERT_TRUE(stream.ok());
  const uint64_t seq = (*stream)->counts().header.seq;
  std::string file;
  // The open snapshot holds no lock: the writer goes on meanwhile.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (a->LastSeq() < seq + 1000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_GE(a->LastSeq(), seq + 1000) << "writes went on while the snapshot was open";
  Result<bool> more = true;
  while (more.ok() && *more) more = (*stream)->Next(4096, &file);
  writer.join();
  ASSERT_TRUE(more.ok()) << more.status().ToString();
  ASSERT_FALSE(failed);
  std::vector<KeyedRecord> records;
  SnapshotHeader header;
  ASSERT_TRUE(Read(file, &records, nullptr, &header).ok());
  EXPECT_EQ(header.seq, seq);
  ASSERT_EQ(records.size(), seq);
  char key[32];
  for (uint64_t i = 1; i <= seq; ++i) {
    std::snprintf(key, sizeof(key), "k%08llu", static_cast<unsigned long long>(i));
    ASSERT_EQ(records[i - 1].key, key);
  }
}

// Bytes of the encoded sync messages, and of the records among them.
struct Traffic {
  uint64_t bytes = 0;
  uint64_t records = 0;
};

uint64_t ChangedRecordBytes(const Replica& r, const std::vector<std::string>& keys) {
  uint64_t bytes = 0;
  for (const std::string& k : keys) {
    auto rec = r.ReadRecord("m", k);
    bytes += 1 + k.size() + (*rec)->value.size() + 16;
  }
  return bytes;
}

TEST_F(SnapshotTest, ImportThenTreeDiffShipsOnlyTheChanges) {
  auto a = Open(1, "/a");
  const std::string value(1000, 'v');
  constexpr int kKeys = 5000, kChanged = 100;
  for (int i = 0; i < kKeys; i += 100) {
    WriteBatch batch;
    for (int j = i; j < i + 100; ++j) batch.Put("m", "key" + std::to_string(j), value);
    ASSERT_TRUE(a->Write(batch).ok());
  }
  const std::string file = Export(*a);
  // Changes after the snapshot: updates, new keys, deletes.
  std::vector<std::string> changed;
  for (int i = 0; i < kChanged; ++i) {
    const std::string key = "key" + std::to_string(i * 37 % kKeys);
    if (i % 3 == 0) {
      ASSERT_TRUE(a->Delete("m", key).ok());
    } else if (i % 3 == 1) {
      ASSERT_TRUE(a->Put("m", key, std::string(1000, 'w')).ok());
    } else {
      ASSERT_TRUE(a->Put("m", "new" + std::to_string(i), value).ok());
      changed.push_back("new" + std::to_string(i));
      continue;
    }
    changed.push_back(key);
  }
  auto c = Load(file, 3, "/c");
  SyncSession sa(a.get(), 3, {}), sc(c.get(), 1, {});
  Traffic traffic;
  testing::SyncPumpOptions options;
  options.now_ms = kStartMs;
  options.deliver = [&](const msg::Message& m, bool) {
    auto bytes = EncodeMessage(m);
    ASSERT_TRUE(bytes.ok());
    traffic.bytes += bytes->size();
  };
  const auto pumped = testing::PumpSync(sa, sc, options);
  ASSERT_TRUE(pumped.status.ok()) << pumped.status.ToString();
  EXPECT_EQ(c->MerkleRoot(), a->MerkleRoot());
  EXPECT_EQ(Render(*c), Render(*a));
  const uint64_t changed_bytes = ChangedRecordBytes(*a, changed);
  std::printf(
      "changed records %zu (%llu bytes); sync moved %llu bytes, A sent %llu records, "
      "C sent %llu\n",
      changed.size(), static_cast<unsigned long long>(changed_bytes),
      static_cast<unsigned long long>(traffic.bytes),
      static_cast<unsigned long long>(sa.stats().records_sent),
      static_cast<unsigned long long>(sc.stats().records_sent));
  EXPECT_LE(sa.stats().records_sent, changed.size());
  EXPECT_EQ(sc.stats().records_sent, 0u);
  EXPECT_LE(traffic.bytes, 2 * changed_bytes);
}

// ---- files refused with the offset ----

TEST_F(SnapshotTest, TruncatedFilesAreRefusedWithTheOffset) {
  auto a = Open(1, "/a");
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(a->Put("m", "k" + std::to_string(i), "value").ok());
  const std::string file = Export(*a);
  ASSERT_TRUE(Read(file).ok());
  for (size_t cut : {size_t{0}, size_t{5}, size_t{8}, size_t{15}, size_t{40}, file.size() / 2,
                     file.size() - 30, file.size() - 1}) {
    const Status s = Read(file.substr(0, cut));
    EXPECT_TRUE(s.IsCorruption()) << cut << ": " << s.ToString();
    EXPECT_NE(s.message().find("snapshot offset "), std::string::npos) << s.ToString();
    if (cut > 8) {
      EXPECT_NE(s.message().find("truncated"), std::string::npos) << cut << ": " << s.ToString();
    }
  }
  EXPECT_NE(Read(file + "x").message().find("bytes after the trailer"), std::string::npos);
}

TEST_F(SnapshotTest, FlippedBytesAndOtherFormatsAreRefused) {
  auto a = Open(1, "/a");
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(a->Put("m", "k" + std::to_string(i), "value").ok());
  const std::string file = Export(*a);
  for (size_t at = 8; at < file.size(); at += 97) {
    std::string bad = file;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    const Status s = Read(bad);
    EXPECT_TRUE(s.IsCorruption()) << at << ": " << s.ToString();
    EXPECT_NE(s.message().find("snapshot offset "), std::string::npos) << s.ToString();
  }
  std::string magic = file;
  magic[0] = 'X';
  EXPECT_EQ(Read(magic).message(), "snapshot offset 0: not a tidemap snapshot file (bad magic)");
  // Another format version.
  std::string other;
  SnapshotFileWriter w([&](std::string_view b) {
    other.append(b);
    return Status::Ok();
  });
  SnapshotHeader h;
  h.format_version = 2;
  ASSERT_TRUE(w.WriteHeader(h).ok());
  ASSERT_TRUE(w.Finish().ok());
  EXPECT_NE(Read(other).message().find("format version 2; this build reads version 1"),
            std::string::npos)
      << Read(other).ToString();
}

// A frame dropped whole: every frame left checks, the file checksum does not.
TEST_F(SnapshotTest, DroppedFrameBreaksTheChain) {
  auto a = Open(1, "/a");
  for (int i = 0; i < 30'000; ++i) {
    ASSERT_TRUE(a->Put("m", "k" + std::to_string(i), std::string(100, 'v')).ok());
  }
  std::vector<std::string> frames;
  std::string file = Export(*a);
  // Split into magic + frames; drop the second records frame.
  size_t at = 8;
  while (at < file.size()) {
    const uint32_t len = static_cast<uint32_t>(static_cast<unsigned char>(file[at])) << 24 |
                         static_cast<uint32_t>(static_cast<unsigned char>(file[at + 1])) << 16 |
                         static_cast<uint32_t>(static_cast<unsigned char>(file[at + 2])) << 8 |
                         static_cast<uint32_t>(static_cast<unsigned char>(file[at + 3]));
    frames.push_back(file.substr(at, 12 + len));
    at += 12 + len;
  }
  ASSERT_GE(frames.size(), 4u);
  std::string dropped = file.substr(0, 8);
  for (size_t i = 0; i < frames.size(); ++i) {
    if (i != 2) dropped += frames[i];
  }
  const Status s = Read(dropped);
  EXPECT_NE(s.message().find("file checksum mismatch"), std::string::npos) << s.ToString();
}

// The record frames are built a record at a time from views
// (RecordBlobWriter) and read back the same way (VisitRecordBlob): the bytes
// must be those of the sync codec's blob encoders for the same records, and
// the views those its decoder gives, whatever the mix of maps, origins,
// tombstones, expiries and hlc steps (down as well as up).
TEST_F(SnapshotTest, RecordBlobsBuiltFromViewsMatchTheSyncCodec) {
  std::vector<KeyedRecord> records;
  for (int i = 0; i < 300; ++i) {
    KeyedRecord r;
    r.map = i < 100 ? "alpha" : (i < 250 ? "beta" : "gamma");
    r.key = "k" + std::to_string(1000 + i);
    r.tombstone = i % 7 == 3;
    r.value = r.tombstone ? "" : std::string(static_cast<size_t>(i % 40), 'v');
    r.version = Version{Timestamp{(uint64_t{1} << 40) + (i % 5 == 0 ? 10'000u - i : 20'000u + i)},
                        static_cast<uint64_t>(1 + i % 3)};
    r.expiry_ms = !r.tombstone && i % 4 == 0 ? kStartMs + static_cast<uint64_t>(i) : 0;
    records.push_back(r);
  }
  RecordBlobWriter writer;
  for (const KeyedRecord& r : records) {
    ASSERT_TRUE(
        writer
            .Add(SnapshotRecordView{r.map, r.key, r.value, r.version, r.tombstone, r.expiry_ms},
                 "test")
            .ok());
  }
  writer.Finish();
  const std::string blob = std::string(writer.head()) + std::string(writer.body());
  EXPECT_EQ(blob, *codec_internal::EncodeRecords(records, "test"));
  EXPECT_EQ(writer.expiries(), codec_internal::EncodeExpiries(records));
  std::vector<KeyedRecord> read;
  auto n = VisitRecordBlob(
      blob, writer.expiries(), DecodeLimits{}, "test", [&](const SnapshotRecordView& r) {
        read.push_back(KeyedRecord{std::string(r.map), std::string(r.key), std::string(r.value),
                                   r.version, r.tombstone, r.expiry_ms});
        return Status::Ok();
      });
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, records.size());
  EXPECT_EQ(read, records);
  // A tombstone with a value or an expiry cannot be written.
  KeyedRecord bad = records[3];
  bad.expiry_ms = 5;
  EXPECT_TRUE(
      writer
          .Add(SnapshotRecordView{bad.map, bad.key, bad.value, bad.version, true, bad.expiry_ms},
               "test")
          .IsInvalidArgument());
  // An expiry blob naming a record past the last is refused.
  EXPECT_TRUE(VisitRecordBlob(blob, std::string("\xb0\x02\x05", 3), DecodeLimits{}, "test",
                              [](const SnapshotRecordView&) { return Status::Ok(); })
                  .status()
                  .IsCorruption());
}

// ---- data dirs ----

class SnapshotDirTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::MakeTempDir("snapshot_dir_test"); }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string root_;
};

TEST_F(SnapshotDirTest, ImportRefusesANonEmptyDirAndLeavesNothingOnFailure) {
  std::string file = root_ + "/s.snap";
  Digest128 root;
  {
    auto src = DataDir::Init(root_ + "/src");
    ASSERT_TRUE(src.ok());
    ASSERT_TRUE((*src)->replica().Put("m", "k", "v").ok());
    ASSERT_TRUE(ExportSnapshotFile((*src)->replica(), kStartMs, file).ok());
    root = (*src)->replica().MerkleRoot();
  }
  ASSERT_TRUE(VerifySnapshotFile(file).ok());
  // Into a non-empty dir: refused, untouched.
  std::filesystem::create_directory(root_ + "/full");
  std::ofstream(root_ + "/full/x") << "x";
  EXPECT_TRUE(ImportSnapshotFile(root_ + "/full", file).status().IsRefused());
  EXPECT_TRUE(std::filesystem::exists(root_ + "/full/x"));
  // A truncated file: refused with the offset, nothing created.
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 3);
  const auto bad = ImportSnapshotFile(root_ + "/new", file);
  EXPECT_TRUE(bad.status().IsCorruption()) << bad.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/new"));
  EXPECT_FALSE(std::filesystem::exists(root_ + "/.new.snapshot-import"));
}

TEST_F(SnapshotDirTest, ImportIntoAnEmptyDirGivesANewNodeWithTheSameRoot) {
  const std::string file = root_ + "/s.snap";
  Digest128 root;
  uint64_t source_id = 0;
  {
    auto src = DataDir::Init(root_ + "/src");
    ASSERT_TRUE(src.ok());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE((*src)->replica().Put("m", "k" + std::to_string(i), "v").ok());
    }
    ASSERT_TRUE(ExportSnapshotFile((*src)->replica(), kStartMs, file).ok());
    root = (*src)->replica().MerkleRoot();
    source_id = (*src)->identity().node_id();
  }
  std::filesystem::create_directory(root_ + "/dst");
  auto report = ImportSnapshotFile(root_ + "/dst/", file);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->file.records, 100u);
  EXPECT_EQ(report->merkle_root, root);
  EXPECT_NE(report->node_id, source_id);
  auto dst = DataDir::Open(root_ + "/dst");
  ASSERT_TRUE(dst.ok()) << dst.status().ToString();
  EXPECT_EQ((*dst)->replica().MerkleRoot(), root);
  EXPECT_EQ((*dst)->replica().Get("m", "k42")->value, "v");
}

}  // namespace
}  // namespace tidemap
