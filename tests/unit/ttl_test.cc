// Proves per-record TTL on the replica and the wire: a TTL'd put stores the
// expiry the writer computed (hlc physical time + ttl), every read hides the
// record from its expiry on while LWW still counts its version, the expiry
// crosses to another replica with the version and leaves the Merkle roots
// equal whenever each side notices it, ExpireRecords announces each expiry
// once (across a reopen too), the GC purges an expired record like a
// tombstone so no older version comes back, scrub and the derived-row
// rebuild know the expiry index, a version 4 database's expiry queue is
// migrated at open (also when a migration was cut short), the GC drops the
// entries of replaced versions from later buckets, and the codec
// carries expiries (a message without any leaves their field empty). Runs on
// LevelDB's in-memory Env with a manual clock.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <string>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/test_access_internal.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/codec_internal.h>
#include <tidemap/storage/expiry_rows_internal.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;  // 2027-01-15
constexpr uint64_t kNode = 0xa1;
constexpr uint64_t kOther = 0xa2;
constexpr uint64_t kHorizonMs = 10'000;

class TtlTest : public ::testing::Test {
 protected:
  TtlTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())), clock_(kStartMs) {}

  std::unique_ptr<Replica> Open(uint64_t node = kNode, const std::string& path = "/db") {
    ReplicaOptions o;
    o.path = path;
    o.env = env_.get();
    o.clock = &clock_;
    o.node_id = node;
    o.tombstone_horizon_ms = kHorizonMs;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // "a=1 b=2" over the live (unexpired) keys of map "m".
  static std::string Render(const Replica& r) {
    auto page = r.Scan("m", "", std::nullopt, 1000);
    EXPECT_TRUE(page.ok());
    std::string out;
    for (const ScanItem& item : page->items) {
      if (!out.empty()) out += ' ';
      out += item.key + "=" + item.value;
    }
    return out;
  }

  static void ExpectScrubOk(Replica& r) {
    auto scrub = r.Scrub();
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_TRUE(scrub->ok()) << "leaf " << scrub->leaf_mismatches << " index "
                             << scrub->index_mismatches;
  }

  std::unique_ptr<Store> OpenStore(const std::string& path = "/db") {
    StoreOptions so;
    so.path = path;
    so.env = env_.get();
    auto store = Store::Open(so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // Rows of the closed database at "/db" whose key starts with `family`.
  size_t CountRows(char family) {
    auto store = OpenStore();
    auto it = store->NewIterator();
    size_t n = 0;
    for (it->Seek(std::string(1, family)); it->Valid() && it->key()[0] == family; it->Next()) ++n;
    return n;
  }

  // Rewrites the closed database at "/db" as version 4 left it: one expiry
  // queue row ('x', the version 4 key codec, seq 1) per live record with an
  // expiry, schema version 4, and (unless `keep_packed`: a migration cut
  // short) no packed expiry rows. `stale` adds a queue row of a version no
  // longer stored.
  void MakeVersion4(bool keep_packed, const rows::ExpiryEntry* stale = nullptr) {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Batch b;
    auto it = store->NewIterator();
    for (it->Seek("h"); it->Valid() && it->key()[0] == 'h'; it->Next()) {
      uint64_t hash = 0;
      std::string_view map, key;
      ASSERT_TRUE(rows::ParseHashIndexKey(it->key(), &hash, &map, &key));
      auto meta = rows::DecodeHashIndexValue(it->value());
      ASSERT_TRUE(meta.ok());
      if (meta->tombstone || meta->expiry_ms == 0) continue;
      b.Put(rows::LegacyExpiryQueueKey(meta->expiry_ms, meta->version, map, key),
            rows::EncodeU64(1));
    }
    if (stale != nullptr) {
      b.Put(rows::LegacyExpiryQueueKey(stale->expiry_ms, stale->version, stale->map, stale->key),
            rows::EncodeU64(1));
    }
    if (!keep_packed) {
      for (it->Seek("e"); it->Valid() && it->key()[0] == 'e'; it->Next()) b.Delete(it->key());
      b.Delete(rows::MetaKey(rows::kMetaExpiryRowId));
    }
    b.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(4));
    ASSERT_TRUE(store->Write(&b, true).ok());
  }

  // After MakeVersion4: Open migrates; the expiries are announced once each
  // (a at +1000, b at +3000), scrub agrees, and the GC purges both.
  void ExpectMigrated() {
    std::vector<std::string> events;
    {
      auto r = Open();
      ASSERT_NE(r, nullptr);
      ASSERT_TRUE(r->AddPeer(kOther).ok());
      r->Subscribe("", [&](const ChangeEvent& e) {
        if (e.kind == ChangeKind::kExpire) events.push_back(std::string(e.key));
      });
      ExpectScrubOk(*r);
      clock_.Advance(1000);
      auto first = r->ExpireRecords();
      ASSERT_TRUE(first.ok());
      EXPECT_EQ(first->expired, 1u);
      EXPECT_EQ(first->next_expiry_ms, kStartMs + 3000);
      clock_.Advance(2000);
      EXPECT_EQ(r->ExpireRecords()->expired, 1u);
      EXPECT_EQ(r->ExpireRecords()->expired, 0u);
      EXPECT_EQ(events, (std::vector<std::string>{"a", "b"}));
      clock_.Advance(kHorizonMs + 1);
      ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(kOther, r->LastSeq()).ok());
      auto purged = r->PurgeTombstones();
      ASSERT_TRUE(purged.ok());
      EXPECT_EQ(purged->expired_purged, 2u);
      EXPECT_EQ(Render(*r), "c=3b d=4");
      ExpectScrubOk(*r);
    }
    EXPECT_EQ(CountRows(rows::kExpiryPrefix), 0u);
    auto store = OpenStore();
    EXPECT_EQ(rows::DecodeU64(*store->Get(rows::MetaKey(rows::kMetaSchemaVersion)), "v").value(),
              rows::kSchemaVersion);
  }

  // a and b expire at +1000 and +3000; c's TTL'd version was overwritten by
  // a plain one, d has none.
  void WriteMigrationRecords(rows::ExpiryEntry* c_was) {
    auto r = Open();
    ASSERT_TRUE(r->Put("m", "a", "1", PutOptions{1000}).ok());
    ASSERT_TRUE(r->Put("m", "b", "2", PutOptions{3000}).ok());
    const Version c = *r->Put("m", "c", "3", PutOptions{1000});
    *c_was = rows::ExpiryEntry{c.hlc.physical_ms() + 1000, c, 1, "m", "c"};
    ASSERT_TRUE(r->Put("m", "c", "3b").ok());
    ASSERT_TRUE(r->Put("m", "d", "4").ok());
  }

  std::unique_ptr<leveldb::Env> env_;
  ManualClock clock_;
};

TEST_F(TtlTest, ExpiredRecordIsAbsentForReadsButStaysAVersion) {
  auto r = Open();
  const Version v = *r->Put("m", "a", "1", PutOptions{1000});
  ASSERT_TRUE(r->Put("m", "b", "2").ok());
  auto got = r->Get("m", "a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->expiry_ms, v.hlc.physical_ms() + 1000);
  EXPECT_EQ(r->Get("m", "b")->expiry_ms, 0u);
  auto page = r->Scan("m", "", std::nullopt, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].expiry_ms, v.hlc.physical_ms() + 1000);

  clock_.Advance(999);
  EXPECT_EQ(Render(*r), "a=1 b=2");
  clock_.Advance(1);  // the expiry instant itself: expired
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  EXPECT_EQ(Render(*r), "b=2");

  // An older write from a peer still loses to the expired version.
  KeyedRecord older{"m", "a", "old", Version{Timestamp::FromParts(kStartMs - 5, 0), kOther}};
  auto applied = r->ApplyRemote({&older, 1}, kOther);
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->applied, 0u);
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  // A newer one wins and is served (it has no expiry).
  ASSERT_TRUE(r->Put("m", "a", "again").ok());
  EXPECT_EQ(Render(*r), "a=again b=2");
  ExpectScrubOk(*r);
}

TEST_F(TtlTest, TtlOverTheLimitIsRefusedAndBatchesCarryTtls) {
  auto r = Open();
  EXPECT_TRUE(r->Put("m", "a", "1", PutOptions{kTtlMaxMs + 1}).status().IsInvalidArgument());
  WriteBatch b;
  b.Put("m", "x", "1", PutOptions{500});
  b.Put("m", "y", "2");
  b.Delete("m", "z");
  EXPECT_EQ(b.op(0).ttl_ms, 500u);
  EXPECT_EQ(b.op(1).ttl_ms, 0u);
  auto versions = r->Write(b);
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(r->Get("m", "x")->expiry_ms, (*versions)[0].hlc.physical_ms() + 500);
  clock_.Advance(500);
  EXPECT_EQ(Render(*r), "y=2");
}

// The expiry replicates with the version; the tree hashes versions, so the
// roots stay equal before, across and after the expiry, whichever replica
// notices it first.
TEST_F(TtlTest, ExpiryReplicatesWithTheVersionAndRootsStayEqual) {
  auto a = Open(kNode, "/a");
  auto b = Open(kOther, "/b");
  ASSERT_TRUE(a->Put("m", "k", "v", PutOptions{2000}).ok());
  ASSERT_TRUE(a->Put("m", "plain", "p").ok());
  std::vector<KeyedRecord> records = {**a->ReadRecord("m", "k"), **a->ReadRecord("m", "plain")};
  EXPECT_NE(records[0].expiry_ms, 0u);
  ASSERT_TRUE(b->ApplyRemote(records, kNode).ok());
  EXPECT_EQ(b->Get("m", "k")->expiry_ms, a->Get("m", "k")->expiry_ms);
  EXPECT_EQ(a->MerkleRoot(), b->MerkleRoot());
  clock_.Advance(2000);
  ASSERT_TRUE(a->ExpireRecords().ok());  // only a announces
  EXPECT_EQ(a->MerkleRoot(), b->MerkleRoot());
  EXPECT_EQ(Render(*a), "plain=p");
  EXPECT_EQ(Render(*b), "plain=p");
}

TEST_F(TtlTest, ExpireRecordsAnnouncesEachExpiryOnceAcrossReopen) {
  std::vector<std::string> events;
  {
    auto r = Open();
    r->Subscribe("", [&](const ChangeEvent& e) {
      if (e.kind == ChangeKind::kExpire) events.push_back(std::string(e.key));
    });
    ASSERT_TRUE(r->Put("m", "a", "1", PutOptions{1000}).ok());
    ASSERT_TRUE(r->Put("m", "b", "2", PutOptions{2000}).ok());
    ASSERT_TRUE(r->Put("m", "c", "3", PutOptions{1500}).ok());
    ASSERT_TRUE(r->Put("m", "c", "3b").ok());  // overwritten before its expiry: no event
    auto none = r->ExpireRecords();
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(none->expired, 0u);
    EXPECT_NE(none->next_expiry_ms, 0u);
    clock_.Advance(1000);
    EXPECT_EQ(r->ExpireRecords()->expired, 1u);
    EXPECT_EQ(r->ExpireRecords()->expired, 0u);
    EXPECT_EQ(events, std::vector<std::string>{"a"});
    auto stats = r->Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->expired, 1u);
    EXPECT_EQ(stats->next_expiry_ms, kStartMs + 2000);
  }
  auto r = Open();
  r->Subscribe("", [&](const ChangeEvent& e) {
    if (e.kind == ChangeKind::kExpire) events.push_back(std::string(e.key));
  });
  clock_.Advance(1000);
  auto later = r->ExpireRecords();
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->expired, 1u);
  EXPECT_EQ(later->next_expiry_ms, 0u);
  EXPECT_EQ(events, (std::vector<std::string>{"a", "b"}));
}

// An expired record is deleted everywhere from its expiry on: the GC purges
// it once the expiry is older than the horizon and every peer acknowledged
// it, and raises the watermark so that no older version comes back.
TEST_F(TtlTest, ExpiredRecordIsPurgedLikeATombstone) {
  auto r = Open();
  ASSERT_TRUE(r->AddPeer(kOther).ok());
  const Version v = *r->Put("m", "a", "1", PutOptions{1000});
  ASSERT_TRUE(r->Put("m", "b", "2").ok());
  const KeyedRecord expired_copy = **r->ReadRecord("m", "a");
  clock_.Advance(1000 + kHorizonMs + 1);
  auto held = r->PurgeTombstones();
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->purged, 0u);  // the peer acknowledged nothing yet
  EXPECT_EQ(held->unacknowledged, 1u);
  ASSERT_TRUE(ReplicaTestAccess::oplog(*r).SetPeerAck(kOther, 2).ok());
  std::vector<std::string> purged;
  auto done = r->PurgeTombstones([&](const KeyMeta& m) { purged.push_back(std::string(m.key)); });
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->purged, 1u);
  EXPECT_EQ(done->expired_purged, 1u);
  EXPECT_EQ(done->watermark, v);
  EXPECT_EQ(purged, std::vector<std::string>{"a"});
  EXPECT_FALSE(r->ReadRecord("m", "a")->has_value());
  auto stats = r->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 1u);
  EXPECT_EQ(stats->tombstones, 0u);
  ExpectScrubOk(*r);

  // The expired record again, from a peer that has not purged it: dropped.
  auto again = r->ApplyRemote({&expired_copy, 1}, kOther);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->below_watermark_tombstones, 1u);
  EXPECT_FALSE(r->ReadRecord("m", "a")->has_value());
  // An older live version: never served again (the delete is restored).
  KeyedRecord older{"m", "a", "old", Version{Timestamp::FromParts(kStartMs - 5, 0), kOther}};
  ASSERT_TRUE(r->ApplyRemote({&older, 1}, kOther).ok());
  EXPECT_TRUE(r->Get("m", "a").status().IsNotFound());
  EXPECT_EQ(Render(*r), "b=2");
  ExpectScrubOk(*r);
}

TEST_F(TtlTest, ScrubAndRebuildKnowTheExpiryQueue) {
  auto r = Open();
  for (int i = 0; i < 50; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(r->Put("m", key, "v", PutOptions{i % 2 == 0 ? 1000u : 0u}).ok());
  }
  ASSERT_TRUE(r->Delete("m", "k0").ok());
  ExpectScrubOk(*r);
  auto rebuilt = r->RebuildDerivedRows();
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(*rebuilt, 50u);
  ExpectScrubOk(*r);
  clock_.Advance(1000);
  // k2, k4, ... k48 expire: 24 events (k0 was deleted).
  EXPECT_EQ(r->ExpireRecords()->expired, 24u);
}

// A version 4 database (one queue row per record) is migrated at open: its
// rows move into packed rows, schema version 5 is written, and expiries and
// purges work as before.
TEST_F(TtlTest, MigratesAVersion4ExpiryQueue) {
  rows::ExpiryEntry c_was;
  WriteMigrationRecords(&c_was);
  MakeVersion4(/*keep_packed=*/false);
  EXPECT_EQ(CountRows(rows::kExpiryPrefix), 2u);
  EXPECT_EQ(CountRows(rows::kExpiryRowPrefix), 0u);
  ExpectMigrated();
}

// A migration cut short leaves queue rows next to packed rows holding the
// same entries (and a queue row of an overwritten version): the next open
// moves them, and duplicates and stale entries change nothing.
TEST_F(TtlTest, MigrationCutShortIsResumedAndDuplicatesAreHarmless) {
  rows::ExpiryEntry c_was;
  WriteMigrationRecords(&c_was);
  MakeVersion4(/*keep_packed=*/true, &c_was);
  EXPECT_EQ(CountRows(rows::kExpiryPrefix), 3u);
  EXPECT_GT(CountRows(rows::kExpiryRowPrefix), 0u);
  ExpectMigrated();
}

// A key rewritten with a TTL leaves the entry of each version it replaced in
// the expiry rows; the GC drops them from the rows of buckets not yet due,
// so they do not pile up for the TTL's length.
TEST_F(TtlTest, PurgeDropsEntriesOfReplacedVersionsFromLaterBuckets) {
  {
    auto r = Open();
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(r->Put("m", "k", "v" + std::to_string(i), PutOptions{3'600'000}).ok());
      clock_.Advance(1100);  // the next put carries a checkpoint
    }
  }
  // A row per version but the first, replaced before any checkpoint wrote it.
  EXPECT_EQ(CountRows(rows::kExpiryRowPrefix), 4u);
  {
    auto r = Open();
    clock_.Advance(kHorizonMs + 1);
    ASSERT_TRUE(r->PurgeTombstones().ok());
    ExpectScrubOk(*r);
    EXPECT_EQ(Render(*r), "k=v4");
  }
  EXPECT_EQ(CountRows(rows::kExpiryRowPrefix), 1u);
}

TEST(TtlCodecTest, ExpiriesRoundTrip) {
  const Version v{Timestamp::FromParts(kStartMs, 3), kNode};
  msg::RecordBatch batch;
  batch.first_seq = 1;
  batch.last_seq = 4;
  batch.records = {{"m", "a", "1", v, false, 0},
                   {"m", "b", "2", v, false, kStartMs + 90'000},
                   {"m", "c", "", v, true, 0},
                   {"m", "d", "4", v, false, kStartMs + 1}};
  const msg::Message m{1, batch};
  auto bytes = EncodeMessage(m);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto back = DecodeMessage(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);

  // Without any expiry the expiries field stays empty.
  msg::RecordBatch plain = batch;
  for (KeyedRecord& r : plain.records) r.expiry_ms = 0;
  EXPECT_TRUE(codec_internal::EncodeExpiries(plain.records).empty());

  // A tombstone cannot carry an expiry.
  msg::RecordBatch bad = batch;
  bad.records[2].expiry_ms = 5;
  EXPECT_TRUE(EncodeMessage(msg::Message{1, bad}).status().IsInvalidArgument());
  std::vector<KeyedRecord> records = plain.records;
  EXPECT_TRUE(codec_internal::DecodeExpiries("\x02\x05", "t", &records).IsCorruption());
  EXPECT_TRUE(codec_internal::DecodeExpiries("\x04\x05", "t", &records).IsCorruption());
  EXPECT_TRUE(codec_internal::DecodeExpiries(std::string_view("\x01\x00", 2), "t", &records)
                  .IsCorruption());
  EXPECT_TRUE(codec_internal::DecodeExpiries("\x01", "t", &records).IsCorruption());
}

}  // namespace
}  // namespace tidemap
