// Proves KeyOrderSorter and Batch::SortByKey: the sorted copy is in byte
// order of the keys, each key's changes in their first order; and a sorted
// batch commits exactly what the batch in its built order commits (the last
// change to a key winning), over stores that already hold some of its keys.
// The batches are random puts and deletes whose keys repeat, share long
// prefixes, differ only past the eighth byte after their shared prefix, are
// prefixes of one another, or are empty. The seed is printed on failure.
// Also proves PrefixIterator: a scan sees exactly the rows of its prefix, from
// any start (before, inside or past the prefix, and strictly after a row),
// with an iterator of its own or a borrowed one; rows::SplitRecordKey; and
// the packed expiry rows: they round-trip, and a row moved under another key,
// a flipped byte or an entry outside the row's bucket is corruption.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <tidemap/storage/expiry_rows_internal.h>
#include <tidemap/storage/key_order_sorter_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {
namespace {

struct Change {
  std::string key;
  std::string value;
  bool put;
};

class StoreFixture {
 public:
  explicit StoreFixture(const char* path) : env_(leveldb::NewMemEnv(leveldb::Env::Default())) {
    StoreOptions so;
    so.path = path;
    so.env = env_.get();
    auto s = Store::Open(so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok()) store_ = std::move(s).value();
  }
  ~StoreFixture() { store_.reset(); }  // before its Env

  Store* store() { return store_.get(); }

  std::map<std::string, std::string> Contents() const {
    std::map<std::string, std::string> out;
    auto it = store_->NewIterator();
    for (it->Seek(""); it->Valid(); it->Next()) out[std::string(it->key())] = it->value();
    EXPECT_TRUE(it->status().ok());
    return out;
  }

 private:
  std::unique_ptr<leveldb::Env> env_;
  std::unique_ptr<Store> store_;
};

void Fill(const std::vector<Change>& changes, Batch* batch) {
  for (const Change& c : changes) {
    if (c.put) {
      batch->Put(c.key, c.value);
    } else {
      batch->Delete(c.key);
    }
  }
}

// Keys built to hit the sort key's edge cases.
std::vector<std::string> KeyPool() {
  std::vector<std::string> keys = {
      "", std::string(1, '\0'), std::string(2, '\0'), "a", "ab", "abc", "b", "\xff", "\xff\xff"};
  const std::string long_prefix = "rmap-with-a-long-shared-prefix/";
  for (int i = 0; i < 40; ++i) {
    keys.push_back(long_prefix + std::to_string(i));
    // The same 7 bytes after the shared prefix, told apart later.
    keys.push_back(long_prefix + "0123456" + std::to_string(i % 7));
    keys.push_back("h" + std::string(8, static_cast<char>(i)) + "tail" + std::to_string(i));
  }
  return keys;
}

TEST(BatchTest, SortByKeyCommitsWhatTheBatchCommits) {
  const std::vector<std::string> pool = KeyPool();
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const auto pick = [&](size_t n) {
      return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
    };
    StoreFixture built("/built"), sorted("/sorted");
    // Some keys are already there, so deletes and overwrites have work to do.
    std::vector<Change> preload;
    for (size_t i = 0; i < 30; ++i) preload.push_back({pool[pick(pool.size())], "old", true});
    for (StoreFixture* f : {&built, &sorted}) {
      Batch b;
      Fill(preload, &b);
      ASSERT_TRUE(f->store()->Write(&b, false).ok());
    }
    std::vector<Change> changes;
    const size_t n = 1 + pick(300);
    for (size_t i = 0; i < n; ++i) {
      changes.push_back({pool[pick(pool.size())], "v" + std::to_string(i), pick(4) != 0});
    }
    Batch in_order, in_key_order;
    Fill(changes, &in_order);
    Fill(changes, &in_key_order);
    in_key_order.SortByKey();
    EXPECT_EQ(in_key_order.ApproximateBytes(), in_order.ApproximateBytes());
    ASSERT_TRUE(built.store()->Write(&in_order, false).ok());
    ASSERT_TRUE(sorted.store()->Write(&in_key_order, false).ok());

    // The oracle: the last change to each key wins.
    std::map<std::string, std::string> expected;
    for (const Change& c : preload) expected[c.key] = c.value;
    for (const Change& c : changes) {
      if (c.put) {
        expected[c.key] = c.value;
      } else {
        expected.erase(c.key);
      }
    }
    EXPECT_EQ(built.Contents(), expected);
    EXPECT_EQ(sorted.Contents(), expected);
  }
}

// Collects a LevelDB batch's changes in their order.
struct Collector : leveldb::WriteBatch::Handler {
  std::vector<Change> changes;
  void Put(const leveldb::Slice& key, const leveldb::Slice& value) override {
    changes.push_back({key.ToString(), value.ToString(), true});
  }
  void Delete(const leveldb::Slice& key) override {
    changes.push_back({key.ToString(), "", false});
  }
};

std::vector<Change> ChangesOf(const leveldb::WriteBatch& batch) {
  Collector c;
  EXPECT_TRUE(batch.Iterate(&c).ok());
  return c.changes;
}

// The sorted copy holds the same changes, in byte order of their keys, and
// the changes to each key in their first order.
TEST(KeyOrderSorterTest, CopiesInKeyOrderKeepingEachKeysOrder) {
  const std::vector<std::string> pool = KeyPool();
  KeyOrderSorter sorter;  // reused across seeds
  leveldb::WriteBatch out;
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const auto pick = [&](size_t n) {
      return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
    };
    leveldb::WriteBatch in;
    std::vector<Change> built;
    const size_t n = pick(300);  // 0 and 1 included
    for (size_t i = 0; i < n; ++i) {
      const bool put = pick(4) != 0;
      Change c{pool[pick(pool.size())], put ? "v" + std::to_string(i) : "", put};
      if (c.put) {
        in.Put(c.key, c.value);
      } else {
        in.Delete(c.key);
      }
      built.push_back(std::move(c));
    }
    out.Put("left over", "from the last seed");
    sorter.Sort(in, &out);
    const std::vector<Change> sorted = ChangesOf(out);
    ASSERT_EQ(sorted.size(), built.size());
    // std::stable_sort by bytes is the reference order.
    std::vector<Change> want = built;
    std::stable_sort(want.begin(), want.end(), [](const Change& a, const Change& b) {
      return std::string_view(a.key) < std::string_view(b.key);
    });
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(sorted[i].key, want[i].key) << "at " << i;
      EXPECT_EQ(sorted[i].value, want[i].value) << "at " << i;
      EXPECT_EQ(sorted[i].put, want[i].put) << "at " << i;
    }
  }
}

TEST(BatchTest, SortByKeyIsReusableAndKeepsEmptyBatchesEmpty) {
  StoreFixture f("/db");
  Batch b;
  b.SortByKey();
  EXPECT_TRUE(b.empty());
  // The same Batch object sorted, written and cleared twice (SortByKey swaps
  // in a buffer it keeps).
  for (int round = 0; round < 2; ++round) {
    b.Clear();
    b.Put("z", "1");
    b.Put("a", "2");
    b.Delete("z");
    b.Put("m", std::to_string(round));
    b.SortByKey();
    ASSERT_TRUE(f.store()->Write(&b, false).ok());
  }
  b.Clear();
  EXPECT_TRUE(b.empty());
  const std::map<std::string, std::string> want = {{"a", "2"}, {"m", "1"}};
  EXPECT_EQ(f.Contents(), want);
}

// The keys a scan visits, space-separated.
std::string Keys(PrefixIterator* rows) {
  std::string out;
  for (; rows->Valid(); rows->Next()) out += (out.empty() ? "" : " ") + std::string(rows->key());
  EXPECT_TRUE(rows->status().ok());
  return out;
}

TEST(PrefixIteratorTest, ScansExactlyItsPrefixFromAnyStart) {
  StoreFixture f("/prefix");
  Batch b;
  for (const char* k : {"a9", "b", "b1", "b2", "b3", "ba", "c", "c1"}) b.Put(k, "v");
  ASSERT_TRUE(f.store()->Write(&b, /*sync=*/false).ok());

  PrefixIterator rows(*f.store(), "b");
  rows.SeekToFirst();
  EXPECT_EQ(Keys(&rows), "b b1 b2 b3 ba");
  rows.Seek("b2");
  EXPECT_EQ(Keys(&rows), "b2 b3 ba");
  rows.Seek("a");  // before the prefix: from its first row
  EXPECT_EQ(Keys(&rows), "b b1 b2 b3 ba");
  rows.Seek("bb");  // past the prefix's rows
  EXPECT_EQ(Keys(&rows), "");
  rows.Seek("c");  // past the prefix itself
  EXPECT_EQ(Keys(&rows), "");
  rows.SeekAfter("b2");
  EXPECT_EQ(Keys(&rows), "b3 ba");
  rows.SeekAfter("b25");  // not a row: strictly after it
  EXPECT_EQ(Keys(&rows), "b3 ba");
  rows.SeekAfter("a");
  EXPECT_EQ(Keys(&rows), "b b1 b2 b3 ba");

  // A borrowed iterator serves consecutive scans of different prefixes.
  auto it = f.store()->NewIterator();
  PrefixIterator c(it.get(), "c");
  c.SeekToFirst();
  EXPECT_EQ(Keys(&c), "c c1");
  PrefixIterator everything(it.get(), "");
  everything.SeekToFirst();
  EXPECT_EQ(Keys(&everything), "a9 b b1 b2 b3 ba c c1");
  PrefixIterator none(it.get(), "d");
  none.SeekToFirst();
  EXPECT_EQ(Keys(&none), "");
}

TEST(RowsTest, SplitRecordKeyParsesRecordKeysAndRefusesOthers) {
  const std::string row_key = rows::RecordKey("orders", "k1");
  auto parts = rows::SplitRecordKey(row_key);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  EXPECT_EQ(parts->map, "orders");
  EXPECT_EQ(parts->key, "k1");
  auto bad = rows::SplitRecordKey("x-not-a-record");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsCorruption());
  EXPECT_EQ(bad.status().message().rfind("malformed record key ", 0), 0u) << bad.status().message();
}

TEST(RowsTest, ExpiryRowsRoundTripAndRefuseDamage) {
  const uint64_t bucket = rows::ExpiryBucketOf(1'800'000'000'500);
  const uint64_t start = rows::ExpiryBucketStart(bucket);
  const Version v{Timestamp::FromParts(1'800'000'000'000, 7), 0xa1};
  const std::vector<rows::ExpiryEntryRef> entries = {
      {start, v, 1, "m", "a"},
      {start + 5, v, 300, "map two", ""},
      {start + rows::kExpiryBucketMs - 1, Version{Timestamp::FromParts(9, 0), 2}, 0, "m", "z"}};
  const std::string key = rows::ExpiryRowKey(bucket, 42);
  uint64_t parsed_bucket = 0, id = 0;
  ASSERT_TRUE(rows::ParseExpiryRowKey(key, &parsed_bucket, &id));
  EXPECT_EQ(parsed_bucket, bucket);
  EXPECT_EQ(id, 42u);
  EXPECT_LT(rows::ExpiryRowSeek(bucket), key);
  EXPECT_LT(key, rows::ExpiryRowSeek(bucket + 1));

  const std::string bytes = rows::EncodeExpiryRow(key, bucket, entries);
  std::vector<rows::ExpiryEntry> back;
  ASSERT_TRUE(rows::DecodeExpiryRow(key, bytes, &back).ok());
  ASSERT_EQ(back.size(), entries.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].expiry_ms, entries[i].expiry_ms);
    EXPECT_EQ(back[i].version, entries[i].version);
    EXPECT_EQ(back[i].seq, entries[i].seq);
    EXPECT_EQ(back[i].map, entries[i].map);
    EXPECT_EQ(back[i].key, entries[i].key);
  }
  std::vector<rows::ExpiryEntry> ignored;
  EXPECT_TRUE(
      rows::DecodeExpiryRow(rows::ExpiryRowKey(bucket, 43), bytes, &ignored).IsCorruption());
  std::string flipped = bytes;
  flipped[3] ^= 1;
  EXPECT_TRUE(rows::DecodeExpiryRow(key, flipped, &ignored).IsCorruption());
  // A row whose last entry lies in the next bucket.
  std::vector<rows::ExpiryEntryRef> past = entries;
  past.push_back({start + rows::kExpiryBucketMs, v, 2, "m", "late"});
  EXPECT_TRUE(rows::DecodeExpiryRow(key, rows::EncodeExpiryRow(key, bucket, past), &ignored)
                  .IsCorruption());
}

}  // namespace
}  // namespace tidemap
