// Proves the Merkle component: incremental Apply always equals a full rebuild
// from the item set (seeded random histories checked against a model), the
// tree depends only on the final set, descent finds exactly the differing
// buckets and visits nothing else, key-hash ranges tile the 64-bit space,
// DiffBucket decides send/request correctly (handcrafted cases and a seeded
// end-to-end repair of two diverged replicas), persisted leaves restore the
// tree, bad shapes and bad input are refused, and the digest formats are pinned.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <initializer_list>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/test_util.h"
#include <tidemap/base/coding.h>
#include <tidemap/base/random.h>
#include <tidemap/merkle/merkle.h>

namespace tidemap {
namespace {

constexpr uint64_t kDefaultSeed = 20260501;

uint64_t Seed() { return testing::SeedFromEnv("TIDEMAP_MERKLE_SEED", kDefaultSeed); }

Version V(uint64_t physical_ms, uint64_t logical, uint64_t origin) {
  return Version{Timestamp::FromParts(physical_ms, logical), origin};
}

// A replica's metadata, as the tree sees it: (map, key) -> (version, tombstone).
struct Rec {
  Version version;
  bool tombstone = false;
  friend bool operator==(const Rec&, const Rec&) = default;
};
using MapKey = std::pair<std::string, std::string>;
using Model = std::map<MapKey, Rec>;

Digest128 DigestOf(const MapKey& mk, const Rec& r) {
  return ItemDigest(mk.first, mk.second, r.version, r.tombstone);
}

uint32_t BucketOfKey(const MerkleTree& tree, const MapKey& mk) {
  return tree.BucketOf(KeyHash(mk.first, mk.second));
}

// Sets mk to r in both the model and the tree, the way the replica does.
void Put(Model& model, MerkleTree& tree, const MapKey& mk, const Rec& r) {
  Digest128 delta = DigestOf(mk, r);
  auto it = model.find(mk);
  if (it != model.end()) {
    delta ^= DigestOf(mk, it->second);
    it->second = r;
  } else {
    model.emplace(mk, r);
  }
  tree.Apply(BucketOfKey(tree, mk), delta);
}

// Forgets mk entirely (a purged tombstone).
void Purge(Model& model, MerkleTree& tree, const MapKey& mk) {
  auto it = model.find(mk);
  ASSERT_NE(it, model.end());
  tree.Apply(BucketOfKey(tree, mk), DigestOf(mk, it->second));
  model.erase(it);
}

// The reference: every leaf is the XOR of its bucket's item digests, computed
// without Apply, then the inner nodes by SetLeaves.
MerkleTree Rebuild(const Model& model, const TreeShape& shape) {
  auto tree = MerkleTree::Create(shape);
  TIDEMAP_CHECK(tree.ok());
  std::vector<Digest128> leaves(tree->leaf_count());
  for (const auto& [mk, r] : model)
    leaves[BucketOf(KeyHash(mk.first, mk.second), shape)] ^= DigestOf(mk, r);
  TIDEMAP_CHECK(tree->SetLeaves(leaves).ok());
  return std::move(tree).value();
}

// Every inner node is the XOR of its children.
void ExpectInnerConsistent(const MerkleTree& tree) {
  for (uint32_t level = 0; level < tree.depth(); ++level) {
    for (uint32_t i = 0; i < tree.NodesAt(level); ++i) {
      Digest128 sum;
      for (const Digest128& c : tree.Children(level, i)) sum ^= c;
      ASSERT_EQ(sum, tree.Node(level, i)) << "level " << level << " index " << i;
    }
  }
}

MapKey RandomKey(Random& rng, uint64_t key_space) {
  static const char* const kMaps[] = {"users", "carts", "", "u"};
  // Appended rather than `"k" + std::to_string(...)`: GCC 12 -Wrestrict misfires on the latter.
  std::string key = "k";
  key += std::to_string(rng.Uniform(key_space));
  if (rng.Bernoulli(0.1)) key.push_back('\0');  // binary bytes are keys too
  return {kMaps[rng.Uniform(4)], key};
}

// Fills a model with `n` random keys through the tree.
void Populate(Random& rng, Model& model, MerkleTree& tree, size_t n, uint64_t origin) {
  uint64_t t = 1'700'000'000'000;
  while (model.size() < n) {
    Put(model, tree, RandomKey(rng, n * 4),
        Rec{V(t++, rng.Uniform(3), origin), rng.Bernoulli(0.1)});
  }
}

std::string ShapeName(const TreeShape& shape) {
  std::string name = "f";
  name += std::to_string(shape.fanout_bits);
  name += "d";
  name += std::to_string(shape.depth);
  return name;
}

class MerkleShapeTest : public ::testing::TestWithParam<TreeShape> {};

INSTANTIATE_TEST_SUITE_P(Shapes, MerkleShapeTest,
                         ::testing::Values(TreeShape{}, TreeShape{1, 1}, TreeShape{2, 3},
                                           TreeShape{3, 5}, TreeShape{8, 2}),
                         [](const auto& param_info) { return ShapeName(param_info.param); });

TEST_P(MerkleShapeTest, IncrementalApplyEqualsFullRebuild) {
  const TreeShape shape = GetParam();
  SeededRandom rng(Seed());
  auto created = MerkleTree::Create(shape);
  ASSERT_TRUE(created.ok());
  MerkleTree tree = std::move(created).value();
  Model model;
  uint64_t t = 1'700'000'000'000;
  constexpr int kOps = 20'000;
  for (int op = 1; op <= kOps; ++op) {
    const MapKey mk = RandomKey(rng, 3'000);
    const auto it = model.find(mk);
    const uint64_t roll = rng.Uniform(10);
    // Same or later physical time, random logical and origin: versions mostly
    // grow, and equal hlc with different origins happens too.
    const Version v = V(t, rng.Uniform(4), 1 + rng.Uniform(3));
    t += rng.Uniform(2);
    if (it == model.end() || roll < 5) {
      Put(model, tree, mk, Rec{v, false});  // insert or update
    } else if (roll < 9) {
      Put(model, tree, mk, Rec{v, true});  // delete: a tombstone is a version
    } else {
      Purge(model, tree, mk);
    }
    if (op % 2'000 == 0) {
      ASSERT_EQ(tree.Root(), Rebuild(model, shape).Root()) << "after op " << op;
    }
  }
  EXPECT_GT(model.size(), 1'000u);
  EXPECT_TRUE(tree == Rebuild(model, shape));
  ExpectInnerConsistent(tree);

  // Removing every item returns the tree to zero.
  for (const auto& [mk, r] : model) tree.Apply(BucketOfKey(tree, mk), DigestOf(mk, r));
  EXPECT_TRUE(tree.Root().IsZero());
  for (const Digest128& leaf : tree.Leaves()) ASSERT_TRUE(leaf.IsZero());
}

TEST_P(MerkleShapeTest, KeyHashRangesTileTheSpace) {
  auto created = MerkleTree::Create(GetParam());
  ASSERT_TRUE(created.ok());
  const MerkleTree& tree = *created;
  for (uint32_t level = 0; level <= tree.depth(); ++level) {
    uint64_t next_lo = 0;
    const uint32_t count = tree.NodesAt(level);
    for (uint32_t i = 0; i < count; ++i) {
      const auto [lo, hi] = tree.KeyHashRange(level, i);
      ASSERT_EQ(lo, next_lo) << "gap or overlap at level " << level << " index " << i;
      ASSERT_LE(lo, hi);
      if (i + 1 == count) {
        ASSERT_EQ(hi, std::numeric_limits<uint64_t>::max()) << "level " << level;
      } else {
        next_lo = hi + 1;
      }
      if (level == tree.depth()) {
        ASSERT_EQ(tree.BucketOf(lo), i);
        ASSERT_EQ(tree.BucketOf(hi), i);
      } else {
        // An inner node covers exactly its children's ranges.
        ASSERT_EQ(lo, tree.KeyHashRange(level + 1, i * tree.fanout()).first);
        ASSERT_EQ(hi, tree.KeyHashRange(level + 1, (i + 1) * tree.fanout() - 1).second);
      }
    }
  }
}

TEST(MerkleTest, DefaultShapeAndMemory) {
  MerkleTree tree;
  EXPECT_EQ(tree.fanout(), 16u);
  EXPECT_EQ(tree.depth(), 4u);
  EXPECT_EQ(tree.leaf_count(), 65'536u);
  EXPECT_EQ(tree.MemoryBytes(), size_t{16} * (1 + 16 + 256 + 4'096 + 65'536));  // ~1.1 MB
  EXPECT_TRUE(tree.Root().IsZero());
  EXPECT_EQ(tree.BucketOf(0), 0u);
  EXPECT_EQ(tree.BucketOf(std::numeric_limits<uint64_t>::max()), 65'535u);
  EXPECT_EQ(tree.BucketOf(0x1234'5678'9abc'def0), 0x1234u);
}

TEST(MerkleTest, OrderAndHistoryIndependence) {
  SeededRandom rng(Seed());
  MerkleTree in_order;
  Model model;
  Populate(rng, model, in_order, 2'000, 1);

  // The same final set inserted in a shuffled order.
  std::vector<std::pair<MapKey, Rec>> items(model.begin(), model.end());
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.Uniform(i)]);
  MerkleTree shuffled;
  Model shuffled_model;
  for (const auto& [mk, r] : items) Put(shuffled_model, shuffled, mk, r);

  // The same final set reached through a different history: older versions
  // first, then replaced; extra keys inserted, deleted and purged.
  MerkleTree replayed;
  Model replayed_model;
  for (const auto& [mk, r] : items) {
    Put(replayed_model, replayed, mk, Rec{V(1, 0, 9), !r.tombstone});
  }
  for (int i = 0; i < 500; ++i) {
    const MapKey extra{"extra", std::to_string(i)};
    Put(replayed_model, replayed, extra, Rec{V(5, 0, 1), false});
    Put(replayed_model, replayed, extra, Rec{V(6, 0, 1), true});
  }
  for (const auto& [mk, r] : items) Put(replayed_model, replayed, mk, r);
  for (int i = 0; i < 500; ++i) Purge(replayed_model, replayed, {"extra", std::to_string(i)});

  EXPECT_FALSE(in_order.Root().IsZero());
  EXPECT_EQ(in_order.Root(), shuffled.Root());
  EXPECT_EQ(in_order.Root(), replayed.Root());
  EXPECT_TRUE(in_order == shuffled);
  EXPECT_TRUE(in_order == replayed);
}

// Descends from the root with DifferingChildren, as the sync protocol will,
// and returns the differing buckets found; `visited` gets every inner node entered.
std::set<uint32_t> Descend(const MerkleTree& local, const MerkleTree& remote,
                           std::vector<std::pair<uint32_t, uint32_t>>* visited) {
  std::set<uint32_t> buckets;
  if (local.Root() == remote.Root()) return buckets;
  std::deque<std::pair<uint32_t, uint32_t>> todo{{0, 0}};
  while (!todo.empty()) {
    const auto [level, index] = todo.front();
    todo.pop_front();
    visited->push_back({level, index});
    auto differing = local.DifferingChildren(level, index, remote.Children(level, index));
    TIDEMAP_CHECK(differing.ok());
    for (uint32_t child : *differing) {
      if (level + 1 == local.depth()) {
        buckets.insert(child);
      } else {
        todo.push_back({level + 1, child});
      }
    }
  }
  return buckets;
}

TEST(MerkleTest, DescentVisitsOnlyPathsToDifferingBuckets) {
  SeededRandom rng(Seed());
  for (const TreeShape shape : {TreeShape{}, TreeShape{2, 5}}) {
    for (const size_t k : std::initializer_list<size_t>{0, 1, 2, 7, 40}) {
      SCOPED_TRACE(ShapeName(shape) + " k=" + std::to_string(k));
      MerkleTree a = std::move(MerkleTree::Create(shape)).value();
      Model model_a;
      Populate(rng, model_a, a, 5'000, 1);
      MerkleTree b = a;
      Model model_b = model_a;

      // k changes on b: a newer version, a tombstone, a new key (action 2) or a purge.
      std::set<uint32_t> expected;
      std::vector<MapKey> keys;
      for (const auto& [mk, r] : model_b) keys.push_back(mk);
      std::set<MapKey> changed;
      while (changed.size() < k) {
        const uint64_t action = rng.Uniform(4);
        const MapKey mk = action == 2 ? MapKey{"fresh", std::to_string(changed.size())}
                                      : keys[rng.Uniform(keys.size())];
        if (!changed.insert(mk).second) continue;  // each change on a distinct key
        expected.insert(BucketOfKey(b, mk));
        if (action == 3) {
          Purge(model_b, b, mk);
        } else {
          Put(model_b, b, mk, Rec{V(1'900'000'000'000, 0, 2), action == 1});
        }
      }

      // The inner nodes on the paths from the root to the differing buckets:
      // exactly what the descent must enter, each once.
      std::set<std::pair<uint32_t, uint32_t>> paths;
      for (const uint32_t bucket : expected) {
        for (uint32_t level = 0; level < shape.depth; ++level) {
          paths.insert({level, bucket >> (shape.fanout_bits * (shape.depth - level))});
        }
      }
      for (const bool a_first : {true, false}) {
        std::vector<std::pair<uint32_t, uint32_t>> visited;
        EXPECT_EQ(a_first ? Descend(a, b, &visited) : Descend(b, a, &visited), expected);
        EXPECT_EQ(visited.size(), paths.size());
        EXPECT_EQ(std::set(visited.begin(), visited.end()), paths);
      }
    }
  }
}

TEST(MerkleTest, PersistedLeavesRestoreTheTree) {
  SeededRandom rng(Seed());
  MerkleTree original;
  Model model;
  Populate(rng, model, original, 3'000, 1);

  // What the replica stores: one 16-byte row per touched leaf.
  std::map<uint32_t, std::string> rows;
  for (uint32_t b = 0; b < original.leaf_count(); ++b) {
    if (original.Leaf(b).IsZero()) continue;
    std::string row;
    MerkleTree::EncodeDigest(original.Leaf(b), &row);
    ASSERT_EQ(row.size(), 16u);
    rows[b] = row;
  }

  MerkleTree restored;
  for (const auto& [bucket, row] : rows) {
    std::string_view in = row;
    Digest128 d;
    ASSERT_TRUE(MerkleTree::DecodeDigest(&in, &d));
    ASSERT_TRUE(in.empty());
    ASSERT_TRUE(restored.LoadLeaf(bucket, d).ok());
  }
  restored.RecomputeInner();
  EXPECT_EQ(restored.Root(), original.Root());
  EXPECT_TRUE(restored == original);

  // SetLeaves does the same in one call, and refuses a wrong count.
  MerkleTree bulk;
  const std::vector<Digest128> leaves(original.Leaves().begin(), original.Leaves().end());
  ASSERT_TRUE(bulk.SetLeaves(leaves).ok());
  EXPECT_TRUE(bulk == original);
  const Status short_set = bulk.SetLeaves(std::span(leaves).first(10));
  EXPECT_TRUE(short_set.IsInvalidArgument()) << short_set.ToString();
  EXPECT_TRUE(bulk == original);

  // A corrupt row's bucket number is an error, not a crash.
  const Status bad = restored.LoadLeaf(restored.leaf_count(), Digest128{});
  EXPECT_TRUE(bad.IsInvalidArgument());
  EXPECT_EQ(bad.message(), "merkle leaf 65536 out of range: the tree has 65536 buckets");
}

TEST(MerkleTest, DigestEncodingIsFixed) {
  const Digest128 d{0x0807060504030201, 0x1817161514131211};
  std::string row = "prefix";
  MerkleTree::EncodeDigest(d, &row);
  EXPECT_EQ(ToHex(row.substr(6)), d.ToHex());
  EXPECT_EQ(ToHex(row.substr(6)), "18171615141312110807060504030201");
  std::string_view in = std::string_view(row).substr(6);
  Digest128 back;
  ASSERT_TRUE(MerkleTree::DecodeDigest(&in, &back));
  EXPECT_EQ(back, d);
  std::string_view truncated = std::string_view(row).substr(7);
  EXPECT_FALSE(MerkleTree::DecodeDigest(&truncated, &back));
  EXPECT_EQ(truncated.size(), 15u);  // untouched
}

TEST(MerkleDeathTest, ReadingStaleInnerNodesIsABug) {
  MerkleTree tree;
  ASSERT_TRUE(tree.LoadLeaf(3, Digest128{1, 2}).ok());
  EXPECT_EQ(tree.Leaf(3), (Digest128{1, 2}));  // leaves stay readable
  EXPECT_DEATH((void)tree.Root(), "LoadLeaf without RecomputeInner");
  tree.RecomputeInner();
  EXPECT_EQ(tree.Root(), (Digest128{1, 2}));
}

TEST(MerkleTest, InvalidShapesAreRefused) {
  const TreeShape invalid[] = {
      {0, 4},
      {4, 0},
      {9, 1},
      {5, 5},
      {1, 25},
      {8, 4},
      {25, 1},
      {4, 0xffff'ffffu},
      {0xffff'ffffu, 2},  // must not overflow fanout_bits * depth
  };
  for (const TreeShape& shape : invalid) {
    const auto tree = MerkleTree::Create(shape);
    EXPECT_FALSE(tree.ok()) << shape.fanout_bits << "x" << shape.depth;
    EXPECT_TRUE(tree.status().IsInvalidArgument());
  }
  EXPECT_EQ(ValidateShape({5, 5}).ToString(),
            "invalid_argument: merkle tree shape fanout_bits=5 depth=5: fanout_bits * depth "
            "exceeds 24 (at most 2^24 buckets)");
  for (const TreeShape& shape :
       {TreeShape{1, 1}, TreeShape{8, 3}, TreeShape{1, 24}, TreeShape{3, 8}, TreeShape{6, 4}}) {
    EXPECT_TRUE(ValidateShape(shape).ok()) << shape.fanout_bits << "x" << shape.depth;
  }
}

TEST(MerkleTest, ItemDigestCoversEveryFieldAndIsInjective) {
  const Version v = V(1'700'000'000'000, 3, 0x42);
  const Digest128 base = ItemDigest("m", "k", v, false);
  EXPECT_EQ(base, ItemDigest("m", "k", v, false));
  const std::vector<Digest128> variants = {
      base,
      ItemDigest("n", "k", v, false),                              // map
      ItemDigest("m", "j", v, false),                              // key
      ItemDigest("m", "k", V(1'700'000'000'000, 4, 0x42), false),  // hlc logical
      ItemDigest("m", "k", V(1'700'000'000'001, 3, 0x42), false),  // hlc physical
      ItemDigest("m", "k", V(1'700'000'000'000, 3, 0x43), false),  // origin
      ItemDigest("m", "k", v, true),  // tombstone, even with the same version
  };
  EXPECT_EQ(std::set<std::string>({variants[0].ToHex(), variants[1].ToHex(), variants[2].ToHex(),
                                   variants[3].ToHex(), variants[4].ToHex(), variants[5].ToHex(),
                                   variants[6].ToHex()})
                .size(),
            variants.size());

  // The map/key boundary is encoded, not implied.
  EXPECT_NE(ItemDigest("a", "bc", v, false), ItemDigest("ab", "c", v, false));
  EXPECT_NE(ItemDigest("", "ab", v, false), ItemDigest("ab", "", v, false));
  EXPECT_NE(KeyHash("a", "bc"), KeyHash("ab", "c"));
  EXPECT_NE(KeyHash("", "ab"), KeyHash("ab", ""));
  EXPECT_NE(KeyHash("a", std::string("\x01", 1)), KeyHash(std::string("a\x01", 2), ""));

  // Long keys take the heap path and are still digested whole.
  const std::string long_key(5'000, 'x');
  std::string long_key2 = long_key;
  long_key2.back() = 'y';
  EXPECT_NE(ItemDigest("m", long_key, v, false), ItemDigest("m", long_key2, v, false));
  EXPECT_NE(KeyHash("m", long_key), KeyHash("m", long_key2));
}

// Known answers, computed by a separate C program that encodes the grammar in
// merkle.h by hand and calls libxxhash. These digests are persisted (leaf rows) and compared across
// replicas, so any change to their encoding or seeds must be deliberate.
TEST(MerkleTest, FormatKnownAnswers) {
  const Version v{Timestamp::FromParts(1'700'000'000'000, 7), 0x0123'4567'89ab'cdef};
  EXPECT_EQ(ItemDigest("users", "alice", v, false).ToHex(), "cc355fe3b1467b59683814fb1407cc58");
  EXPECT_EQ(ItemDigest("users", "alice", v, true).ToHex(), "76f737bb37d6e8ef05b065bd4273ffaa");
  EXPECT_EQ(ItemDigest("", std::string(300, 'k'), v, false).ToHex(),
            "fcffef4b5992c03abdc6913b02b72286");
  EXPECT_EQ(KeyHash("users", "alice"), 0x334c0cdafce1162eu);
  EXPECT_EQ(KeyHash("", std::string(300, 'k')), 0xb4b4da7468b7dad9u);
}

// ---------------------------------------------------------------------------
// DiffBucket

SummaryEntry E(uint64_t key_hash, uint64_t physical_ms, uint64_t origin, bool tombstone = false) {
  return SummaryEntry{key_hash, V(physical_ms, 0, origin), tombstone};
}

std::string Diff(const std::vector<SummaryEntry>& local, const std::vector<SummaryEntry>& remote) {
  auto diff = DiffBucket(local, remote);
  return diff.ok() ? diff->ToString() : diff.status().ToString();
}

TEST(DiffBucketTest, HandcraftedCases) {
  EXPECT_EQ(Diff({}, {}), "send=- request=-");
  EXPECT_EQ(Diff({E(1, 5, 1)}, {}), "send=1 request=-");            // remote lacks
  EXPECT_EQ(Diff({}, {E(1, 5, 1)}), "send=- request=1");            // local lacks
  EXPECT_EQ(Diff({E(1, 5, 1)}, {E(1, 5, 1)}), "send=- request=-");  // equal
  EXPECT_EQ(Diff({E(1, 9, 1)}, {E(1, 5, 1)}), "send=1 request=-");  // local newer
  EXPECT_EQ(Diff({E(1, 5, 1)}, {E(1, 9, 1)}), "send=- request=1");  // remote newer
  // Same hlc: the origin breaks the tie, as in LWW.
  EXPECT_EQ(Diff({E(1, 5, 2)}, {E(1, 5, 1)}), "send=1 request=-");
  EXPECT_EQ(Diff({E(1, 5, 1)}, {E(1, 5, 2)}), "send=- request=1");
  // A newer tombstone wins like any version; an older one loses.
  EXPECT_EQ(Diff({E(1, 9, 1, true)}, {E(1, 5, 1)}), "send=1 request=-");
  EXPECT_EQ(Diff({E(1, 5, 1, true)}, {E(1, 9, 1)}), "send=- request=1");
  // Tombstone vs live with the same version: no honest peer does this, but the
  // digests differ, so both sides get both records and the LWW tie rule decides.
  EXPECT_NE(ItemDigest("m", "k", V(5, 0, 1), true), ItemDigest("m", "k", V(5, 0, 1), false));
  EXPECT_EQ(Diff({E(1, 5, 1, true)}, {E(1, 5, 1)}), "send=1 request=1");

  // All of it in one merge.
  EXPECT_EQ(Diff({E(1, 5, 1), E(2, 5, 1), E(3, 5, 1), E(5, 5, 1, true), E(6, 9, 1), E(9, 1, 1)},
                 {E(2, 7, 1), E(3, 5, 1), E(4, 1, 1), E(5, 5, 1), E(6, 2, 1), E(10, 1, 1)}),
            "send=1,5,6,9 request=2,4,5,10");
}

TEST(DiffBucketTest, KeyHashCollisions) {
  // Two keys with the same 64-bit hash: entries cannot be paired, so any
  // difference exchanges everything under that hash both ways.
  EXPECT_EQ(Diff({E(7, 5, 1), E(7, 6, 1)}, {E(7, 6, 1), E(7, 5, 1)}), "send=- request=-");
  EXPECT_EQ(Diff({E(7, 5, 1), E(7, 6, 1)}, {E(7, 5, 1)}), "send=7 request=7");
  EXPECT_EQ(Diff({E(7, 5, 1)}, {E(7, 5, 1), E(7, 6, 1)}), "send=7 request=7");
  EXPECT_EQ(Diff({E(7, 5, 1), E(7, 6, 1)}, {E(7, 5, 1), E(7, 6, 1, true)}), "send=7 request=7");
  EXPECT_EQ(
      Diff({E(3, 1, 1), E(7, 5, 1), E(7, 6, 1), E(8, 1, 1)}, {E(7, 5, 1), E(7, 6, 1), E(8, 2, 1)}),
      "send=3 request=8");
}

TEST(DiffBucketTest, UnsortedInputIsRefused) {
  EXPECT_EQ(Diff({E(2, 1, 1), E(1, 1, 1)}, {}),
            "invalid_argument: bucket summary (local): not sorted by key_hash at entry 1");
  EXPECT_EQ(Diff({}, {E(1, 1, 1), E(3, 1, 1), E(2, 1, 1)}),
            "invalid_argument: bucket summary (remote): not sorted by key_hash at entry 2");
}

// The whole anti-entropy loop at this layer: two replicas diverge at random,
// descend to the differing buckets, diff the bucket summaries, ship the
// records each side asked for and merge them by LWW. Afterwards both models
// and both trees are equal, and only keys that differed were shipped.
class Replica {
 public:
  Model model;
  MerkleTree tree;

  std::vector<SummaryEntry> Summary(uint32_t bucket) const {
    const auto [lo, hi] = tree.KeyHashRange(tree.depth(), bucket);
    std::vector<SummaryEntry> out;
    for (const auto& [mk, r] : model) {
      const uint64_t h = KeyHash(mk.first, mk.second);
      if (h >= lo && h <= hi) out.push_back(SummaryEntry{h, r.version, r.tombstone});
    }
    std::sort(out.begin(), out.end(),
              [](const SummaryEntry& a, const SummaryEntry& b) { return a.key_hash < b.key_hash; });
    return out;
  }

  std::vector<std::pair<MapKey, Rec>> RecordsWithHash(uint64_t h) const {
    std::vector<std::pair<MapKey, Rec>> out;
    for (const auto& [mk, r] : model) {
      if (KeyHash(mk.first, mk.second) == h) out.emplace_back(mk, r);
    }
    return out;
  }

  // LWW merge; returns whether the record won.
  bool Merge(const MapKey& mk, const Rec& r) {
    auto it = model.find(mk);
    if (it != model.end() && it->second.version >= r.version) return false;
    Put(model, tree, mk, r);
    return true;
  }
};

TEST(DiffBucketTest, RepairsDivergedReplicas) {
  SeededRandom rng(Seed());
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Replica a;
    Populate(rng, a.model, a.tree, 3'000, 1);
    Replica b = a;
    // Each side writes on its own (origin 1 vs 2, so no equal versions).
    std::set<MapKey> touched;
    uint64_t t = 1'800'000'000'000;
    for (int i = 0; i < 60; ++i) {
      Replica& side = rng.Bernoulli(0.5) ? a : b;
      const MapKey mk = RandomKey(rng, 12'000);
      touched.insert(mk);
      Put(side.model, side.tree, mk,
          Rec{V(t + rng.Uniform(100), 0, &side == &a ? 1 : 2), rng.Bernoulli(0.3)});
    }
    ASSERT_NE(a.tree.Root(), b.tree.Root());

    std::vector<std::pair<uint32_t, uint32_t>> visited;
    size_t shipped = 0;
    for (uint32_t bucket : Descend(a.tree, b.tree, &visited)) {
      auto diff = DiffBucket(a.Summary(bucket), b.Summary(bucket));
      ASSERT_TRUE(diff.ok());
      for (uint64_t h : diff->send) {
        for (const auto& [mk, r] : a.RecordsWithHash(h)) {
          EXPECT_TRUE(touched.count(mk)) << mk.second;
          b.Merge(mk, r);
          ++shipped;
        }
      }
      for (uint64_t h : diff->request) {
        for (const auto& [mk, r] : b.RecordsWithHash(h)) {
          EXPECT_TRUE(touched.count(mk)) << mk.second;
          a.Merge(mk, r);
          ++shipped;
        }
      }
    }
    EXPECT_GT(shipped, 0u);
    EXPECT_LE(shipped, touched.size());
    EXPECT_TRUE(a.model == b.model);
    EXPECT_EQ(a.tree.Root(), b.tree.Root());
    EXPECT_TRUE(a.tree == b.tree);
    EXPECT_TRUE(a.tree == Rebuild(a.model, a.tree.shape()));
  }
}

TEST(MerkleTest, PeerInputToDiffHelpersIsChecked) {
  MerkleTree tree;
  const std::vector<Digest128> children = tree.Children(0, 0);
  ASSERT_EQ(children.size(), 16u);
  EXPECT_TRUE(tree.DifferingChildren(0, 0, children)->empty());
  EXPECT_EQ(tree.DifferingChildren(0, 0, std::span(children).first(15)).status().ToString(),
            "invalid_argument: merkle node (0, 0): peer sent 15 child digests, fanout is 16");
  EXPECT_EQ(tree.DifferingChildren(4, 0, children).status().ToString(),
            "invalid_argument: merkle node (4, 0) is not an inner node of a depth-4 tree");
  EXPECT_FALSE(tree.DifferingChildren(1, 16, children).ok());
  EXPECT_TRUE(tree.IsValidNode(4, 65'535));
  EXPECT_FALSE(tree.IsValidNode(4, 65'536));
  EXPECT_FALSE(tree.IsValidNode(5, 0));
  EXPECT_TRUE(tree.IsInnerNode(3, 4'095));
  EXPECT_FALSE(tree.IsInnerNode(4, 0));

  // Absolute child indices at the next level.
  tree.Apply(0x1234, Digest128{1, 0});
  std::vector<Digest128> zero(16);
  EXPECT_EQ(*tree.DifferingChildren(0, 0, zero), std::vector<uint32_t>{0x1});
  EXPECT_EQ(*tree.DifferingChildren(1, 0x1, zero), std::vector<uint32_t>{0x12});
  EXPECT_EQ(*tree.DifferingChildren(2, 0x12, zero), std::vector<uint32_t>{0x123});
  EXPECT_EQ(*tree.DifferingChildren(3, 0x123, zero), std::vector<uint32_t>{0x1234});
  EXPECT_EQ(tree.KeyHashRange(4, 0x1234),
            (std::pair<uint64_t, uint64_t>{0x1234'0000'0000'0000, 0x1234'ffff'ffff'ffff}));
  EXPECT_EQ(tree.KeyHashRange(1, 0x1),
            (std::pair<uint64_t, uint64_t>{0x1000'0000'0000'0000, 0x1fff'ffff'ffff'ffff}));
}

}  // namespace
}  // namespace tidemap
