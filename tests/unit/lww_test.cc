// Proves the last-writer-wins rule on its own (DecideMerge, with no LevelDB
// and no replica): a newer (hlc, origin) wins and an older one loses, the
// origin breaks an hlc tie, an equal pair with different bytes is decided by
// the content digest the same way from either side, a tombstone is a version
// like any other, and a key not held at or below its bucket's GC watermark is
// dropped (tombstone) or answered with a restored delete (live version) or
// dropped (live version, when stale senders are refused).
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include <tidemap/replica/merge_internal.h>

namespace tidemap {
namespace {

std::string Name(MergeDecision d) {
  switch (d) {
    case MergeDecision::kStore:
      return "store";
    case MergeDecision::kIgnore:
      return "ignore";
    case MergeDecision::kDropTombstone:
      return "drop-tombstone";
    case MergeDecision::kRedelete:
      return "redelete";
    case MergeDecision::kDropStale:
      return "drop-stale";
  }
  return "?";
}

Version V(uint64_t ms, uint64_t logical, uint64_t origin) {
  return Version{Timestamp::FromParts(ms, logical), origin};
}

// A held key with its content digest (as the pipeline loads it for a tie).
KeyState Held(const Version& v, bool tombstone, std::string_view value) {
  KeyState s;
  s.exists = true;
  s.meta = rows::RecordMeta{v, tombstone};
  s.content = ContentDigest(tombstone, value);
  return s;
}

IncomingVersion In(const Version& v, bool tombstone, std::string_view value) {
  return IncomingVersion{v, tombstone, ContentDigest(tombstone, value)};
}

// The decision for `in` against `held`, with no watermark.
std::string Decide(const KeyState& held, const IncomingVersion& in,
                   StaleRecords stale = StaleRecords::kRedelete) {
  return Name(DecideMerge(held, in, Version{}, stale));
}

TEST(LwwTest, NewerWinsOlderLoses) {
  const KeyState held = Held(V(1000, 5, 7), false, "old");
  EXPECT_EQ(Decide(held, In(V(1000, 6, 7), false, "new")), "store");  // logical
  EXPECT_EQ(Decide(held, In(V(1001, 0, 1), false, "new")), "store");  // physical
  EXPECT_EQ(Decide(held, In(V(1000, 4, 7), false, "older")), "ignore");
  EXPECT_EQ(Decide(held, In(V(999, 9, 9), false, "older")), "ignore");
}

TEST(LwwTest, OriginBreaksAnHlcTie) {
  const KeyState held = Held(V(1000, 5, 7), false, "seven");
  EXPECT_EQ(Decide(held, In(V(1000, 5, 8), false, "eight")), "store");
  EXPECT_EQ(Decide(held, In(V(1000, 5, 6), false, "six")), "ignore");
}

TEST(LwwTest, EqualVersionsWithDifferentBytesPickTheGreaterDigestOnEverySide) {
  const Version v = V(1000, 5, 7);
  const Digest128 a = ContentDigest(false, "a");
  const Digest128 b = ContentDigest(false, "b");
  const bool a_less = a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
  const std::string_view winner = a_less ? "b" : "a";
  const std::string_view loser = a_less ? "a" : "b";
  // Whichever arrives second, both replicas end up holding the winner.
  EXPECT_EQ(Decide(Held(v, false, loser), In(v, false, winner)), "store");
  EXPECT_EQ(Decide(Held(v, false, winner), In(v, false, loser)), "ignore");
  // The same bytes again are a duplicate.
  EXPECT_EQ(Decide(Held(v, false, "a"), In(v, false, "a")), "ignore");
}

TEST(LwwTest, TombstoneIsAVersionLikeAnyOther) {
  // A newer tombstone beats a value, and a newer value beats a tombstone.
  EXPECT_EQ(Decide(Held(V(1000, 0, 7), false, "v"), In(V(1001, 0, 7), true, "")), "store");
  EXPECT_EQ(Decide(Held(V(1001, 0, 7), true, ""), In(V(1002, 0, 7), false, "v")), "store");
  // An older tombstone, or an older value, loses.
  EXPECT_EQ(Decide(Held(V(1001, 0, 7), false, "v"), In(V(1000, 0, 7), true, "")), "ignore");
  EXPECT_EQ(Decide(Held(V(1001, 0, 7), true, ""), In(V(1000, 0, 7), false, "v")), "ignore");
  // Equal versions, tombstone against value: the digest of (tombstone,
  // value) decides, the same from either side.
  const Version v = V(1000, 0, 7);
  const std::string value_wins = Decide(Held(v, true, ""), In(v, false, "v"));
  const std::string tombstone_wins = Decide(Held(v, false, "v"), In(v, true, ""));
  EXPECT_NE(value_wins, tombstone_wins);
  EXPECT_TRUE(value_wins == "store" || value_wins == "ignore");
}

TEST(LwwTest, KeyNotHeldIsStoredAboveTheWatermark) {
  const KeyState absent;
  const Version watermark = V(1000, 0, 7);
  EXPECT_EQ(
      Name(DecideMerge(absent, In(V(1000, 1, 7), false, "v"), watermark, StaleRecords::kRedelete)),
      "store");
  EXPECT_EQ(
      Name(DecideMerge(absent, In(V(1000, 0, 8), true, ""), watermark, StaleRecords::kRedelete)),
      "store");
  // No watermark at all: everything is above it.
  EXPECT_EQ(Decide(absent, In(V(1, 0, 1), false, "v")), "store");
}

TEST(LwwTest, KeyNotHeldAtOrBelowTheWatermarkIsNeverStoredAsItIs) {
  const KeyState absent;
  const Version watermark = V(1000, 0, 7);
  for (const Version& v : {watermark, V(999, 3, 9), V(1000, 0, 6)}) {
    SCOPED_TRACE(v.ToString());
    EXPECT_EQ(Name(DecideMerge(absent, In(v, true, ""), watermark, StaleRecords::kRedelete)),
              "drop-tombstone");
    EXPECT_EQ(Name(DecideMerge(absent, In(v, true, ""), watermark, StaleRecords::kDrop)),
              "drop-tombstone");
    EXPECT_EQ(Name(DecideMerge(absent, In(v, false, "v"), watermark, StaleRecords::kRedelete)),
              "redelete");
    EXPECT_EQ(Name(DecideMerge(absent, In(v, false, "v"), watermark, StaleRecords::kDrop)),
              "drop-stale");
  }
}

TEST(LwwTest, HeldKeyIgnoresTheWatermark) {
  // A key held here is merged by LWW whatever the watermark: a write after a
  // delete is never affected.
  const Version watermark = V(2000, 0, 7);
  const KeyState held = Held(V(1000, 0, 7), false, "old");
  EXPECT_EQ(
      Name(DecideMerge(held, In(V(1500, 0, 7), false, "new"), watermark, StaleRecords::kDrop)),
      "store");
  EXPECT_EQ(Name(DecideMerge(held, In(V(500, 0, 7), true, ""), watermark, StaleRecords::kRedelete)),
            "ignore");
}

}  // namespace
}  // namespace tidemap
