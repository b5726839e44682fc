// Proves Batch::SortByKey: a sorted batch commits exactly what the batch in
// its built order commits (same keys, same values, the last change to a key
// winning), over random batches of puts and deletes whose keys repeat, share
// long prefixes, differ only past the eighth byte after their shared
// prefix, are prefixes of one another, or are empty; written over stores
// that already hold some of those keys. The seed is printed on failure.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "storage/storage.h"

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

}  // namespace
}  // namespace tidemap
