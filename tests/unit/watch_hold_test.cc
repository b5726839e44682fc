// net::WatchHold: the seq above which the oplog stays for resumable watch
// streams, from (time, last seq) samples.
#include <gtest/gtest.h>

#include <cstdint>

#include <tidemap/net/watch_hold.h>

namespace tidemap::net {
namespace {

TEST(WatchHoldTest, ZeroRetentionHoldsNothing) {
  WatchHold hold(0);
  hold.Record(1'000, 5);
  EXPECT_EQ(hold.HoldAfter(10'000), UINT64_MAX);
}

TEST(WatchHoldTest, HoldsEverythingUntilASampleIsRetentionOld) {
  WatchHold hold(1'000);
  hold.Record(5'000, 10);
  EXPECT_EQ(hold.HoldAfter(5'000), 0u);
  EXPECT_EQ(hold.HoldAfter(5'999), 0u);
  EXPECT_EQ(hold.HoldAfter(6'000), 10u);
}

TEST(WatchHoldTest, HoldIsTheLastSeqOfTheNewestSampleAtLeastRetentionOld) {
  WatchHold hold(1'000);
  hold.Record(10'000, 10);
  hold.Record(10'500, 20);
  hold.Record(11'000, 30);
  hold.Record(11'500, 40);
  // A watcher gone since 10'600 saw at least seq 20 (the sample at 10'500).
  EXPECT_EQ(hold.HoldAfter(11'600), 20u);
  EXPECT_EQ(hold.HoldAfter(12'000), 30u);
  // It never moves back once older samples were dropped.
  EXPECT_EQ(hold.HoldAfter(12'000), 30u);
  EXPECT_EQ(hold.HoldAfter(20'000), 40u);
}

TEST(WatchHoldTest, AClockBeforeTheRetentionHoldsEverything) {
  WatchHold hold(1'000);
  hold.Record(500, 3);
  EXPECT_EQ(hold.HoldAfter(900), 0u);
}

}  // namespace
}  // namespace tidemap::net
