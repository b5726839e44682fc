// Proves the HLC contract: Now() is strictly monotonic through seeded random
// histories of local events, remote merges and clock jumps (driven by a
// ManualClock, replayable via TIDEMAP_HLC_SEED), the logical counter rolls into
// the next millisecond, a floor survives a restart with the clock set back,
// remote clocks too far ahead are refused without touching the clock, and the
// printable form round-trips, has a fixed width and sorts as text in timestamp
// order (checked against gmtime_r and by sorting both ways).
#include <tidemap/hlc/hlc.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <ctime>
#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_util.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/random.h>

namespace tidemap {

namespace {

// 2026-11-22T02:15:20.123Z: a fixed instant, so printed forms are known answers.
constexpr uint64_t kStartMs = 1'795'313'720'123;
constexpr char kPeer[] = "3f2a00000000beef";

TEST(HlcTest, RandomHistoryIsStrictlyMonotonic) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_HLC_SEED", 20261122);
  SeededRandom rng(seed);
  ManualClock clock(kStartMs);
  const HlcOptions options;
  Hlc hlc(&clock, options);

  // The greatest timestamp issued or merged so far: every Now() must exceed
  // it, and Last() must equal it.
  Timestamp high;
  int issued = 0, accepted = 0, refused = 0, rewinds = 0;
  constexpr int kSteps = 200'000;
  for (int step = 0; step < kSteps; ++step) {
    const uint64_t op = rng.Uniform(100);
    if (op < 45) {
      const Timestamp t = hlc.Now();
      ASSERT_GT(t, high) << "seed " << seed << " step " << step;
      ASSERT_GE(t.physical_ms(), clock.NowMillis()) << "seed " << seed << " step " << step;
      high = t;
      ++issued;
    } else if (op < 70) {
      // A remote timestamp near our clock (the common case) or anywhere within
      // two minutes either side of it, so both sides of the limit occur.
      const int64_t offset_ms = rng.Bernoulli(0.5)
                                    ? static_cast<int64_t>(rng.Uniform(201)) - 100
                                    : static_cast<int64_t>(rng.Uniform(240'001)) - 120'000;
      const uint64_t remote_ms = clock.NowMillis() + static_cast<uint64_t>(offset_ms);
      const Timestamp remote =
          Timestamp::FromParts(remote_ms, rng.Uniform(Timestamp::kLogicalMax + 1));
      const Status s = hlc.Update(remote, kPeer);
      const bool within = offset_ms <= static_cast<int64_t>(options.max_clock_offset_ms);
      ASSERT_EQ(s.ok(), within) << "seed " << seed << " step " << step << ": " << s.ToString();
      if (s.ok()) {
        high = std::max(high, remote);
        ++accepted;
      } else {
        ASSERT_TRUE(s.IsRefused()) << s.ToString();
        ++refused;
      }
    } else if (op < 85) {
      clock.Advance(rng.Uniform(4));  // time passing slowly: many events per millisecond
    } else if (op < 90) {
      clock.Advance(rng.Uniform(600'001));  // a jump forward of up to ten minutes
    } else if (op < 95) {
      clock.Rewind(rng.Uniform(600'001));  // an NTP step back of up to ten minutes
      ++rewinds;
    } else {
      // A floor read back from storage, sometimes behind, sometimes ahead.
      const Timestamp floor = Timestamp::FromParts(clock.NowMillis() + rng.Uniform(2'000) - 1'000,
                                                   rng.Uniform(Timestamp::kLogicalMax + 1));
      hlc.RaiseFloor(floor);
      high = std::max(high, floor);
    }
    ASSERT_EQ(hlc.Last(), high) << "seed " << seed << " step " << step;
  }
  // The history must have exercised every branch for the run to mean anything.
  EXPECT_GT(issued, kSteps / 4);
  EXPECT_GT(accepted, kSteps / 10);
  EXPECT_GT(refused, kSteps / 50);
  EXPECT_GT(rewinds, kSteps / 50);
}

TEST(HlcTest, FrozenMillisecondRollsIntoTheNext) {
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{});
  Timestamp prev;
  for (uint64_t i = 0; i < 70'000; ++i) {
    const Timestamp t = hlc.Now();
    ASSERT_GT(t, prev) << "i=" << i;
    // 65,536 timestamps fit in one millisecond (logical 0..65535); the next
    // one borrows the following millisecond.
    const Timestamp want = i <= Timestamp::kLogicalMax
                               ? Timestamp::FromParts(kStartMs, i)
                               : Timestamp::FromParts(kStartMs + 1, i - 65'536);
    ASSERT_EQ(t, want) << "i=" << i;
    prev = t;
  }
  // When the clock reaches the borrowed millisecond, it carries on from there
  // rather than reusing it; one millisecond later physical time takes over.
  clock.Advance(1);
  EXPECT_EQ(hlc.Now(), Timestamp::FromParts(kStartMs + 1, 70'000 - 65'536));
  clock.Advance(1);
  EXPECT_EQ(hlc.Now(), Timestamp::FromParts(kStartMs + 2, 0));
}

TEST(HlcTest, MergedLogicalOverflowRollsOver) {
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{});
  ASSERT_TRUE(hlc.Update(Timestamp::FromParts(kStartMs, Timestamp::kLogicalMax), kPeer).ok());
  EXPECT_EQ(hlc.Now(), Timestamp::FromParts(kStartMs + 1, 0));
}

TEST(HlcTest, RestartWithClockSetBackKeepsGrowingFromFloor) {
  ManualClock clock(kStartMs);
  Timestamp persisted;
  {
    Hlc before(&clock, HlcOptions{});
    for (int i = 0; i < 1000; ++i) {
      (void)before.Now();
      if (i % 10 == 0) clock.Advance(1);
    }
    ASSERT_TRUE(before.Update(Timestamp::FromParts(clock.NowMillis() + 30'000, 5), kPeer).ok());
    persisted = before.Last();
  }
  clock.Rewind(3'600'000);  // the machine comes back an hour in the past

  // Without the floor the new clock would issue older timestamps: this is
  // what the floor is for.
  Hlc unfloored(&clock, HlcOptions{});
  EXPECT_LT(unfloored.Now(), persisted);

  Hlc after(&clock, HlcOptions{}, persisted);
  EXPECT_EQ(after.Last(), persisted);
  Timestamp prev = persisted;
  for (int i = 0; i < 10'000; ++i) {
    const Timestamp t = after.Now();
    ASSERT_GT(t, prev) << "i=" << i;
    prev = t;
    if (i % 100 == 0) clock.Advance(1);
  }
  // Once the clock has caught up, physical time takes over again.
  clock.Advance(2 * 3'600'000);
  EXPECT_EQ(after.Now(), Timestamp::FromParts(clock.NowMillis(), 0));
}

TEST(HlcTest, RaiseFloorNeverLowers) {
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{});
  const Timestamp first = hlc.Now();
  hlc.RaiseFloor(Timestamp::FromParts(kStartMs - 1, 9));
  EXPECT_EQ(hlc.Last(), first);
  // No offset check: a floor from our own storage may be far ahead of the clock.
  const Timestamp far = Timestamp::FromParts(kStartMs + 86'400'000, 0);
  hlc.RaiseFloor(far);
  EXPECT_EQ(hlc.Last(), far);
  EXPECT_EQ(hlc.Now(), Timestamp::FromParts(kStartMs + 86'400'000, 1));
}

TEST(HlcTest, OffsetLimitBoundary) {
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{});
  (void)hlc.Now();

  const Timestamp near_limit = Timestamp::FromParts(kStartMs + 59'900, 3);
  ASSERT_TRUE(hlc.CheckOffset(near_limit, kPeer).ok());
  ASSERT_TRUE(hlc.Update(near_limit, kPeer).ok());
  EXPECT_EQ(hlc.Last(), near_limit);
  EXPECT_GT(hlc.Now(), near_limit);

  const Timestamp last = hlc.Last();
  const Timestamp too_far = Timestamp::FromParts(kStartMs + 60'100, 0);
  const Status checked = hlc.CheckOffset(too_far, kPeer);
  const Status s = hlc.Update(too_far, kPeer);
  EXPECT_TRUE(s.IsRefused()) << s.ToString();
  EXPECT_EQ(s.message(), "peer 3f2a00000000beef: clock 60.1 s ahead, limit 60 s");
  EXPECT_EQ(checked.ToString(), s.ToString());
  EXPECT_EQ(hlc.Last(), last);
  EXPECT_EQ(hlc.Now(), Timestamp{last.raw + 1});  // nothing of it was merged

  // Exactly at the limit is accepted; one millisecond over is not, and the
  // message rounds up so it never reads as equal to the limit.
  EXPECT_TRUE(hlc.CheckOffset(Timestamp::FromParts(kStartMs + 60'000, 0xffff), kPeer).ok());
  EXPECT_EQ(hlc.CheckOffset(Timestamp::FromParts(kStartMs + 60'001, 0), kPeer).message(),
            "peer 3f2a00000000beef: clock 60.1 s ahead, limit 60 s");
  EXPECT_EQ(hlc.CheckOffset(Timestamp::FromParts(kStartMs + 94'000, 0), kPeer).message(),
            "peer 3f2a00000000beef: clock 94.0 s ahead, limit 60 s");

  // The limit is measured from the physical clock, not from what was merged,
  // so a chain of peers each a little ahead cannot ratchet the clock forward.
  EXPECT_TRUE(hlc.Update(Timestamp::FromParts(kStartMs + 59'900 + 59'900, 0), kPeer).IsRefused());
  // Timestamps behind us, however far, are fine.
  EXPECT_TRUE(hlc.Update(Timestamp::FromParts(0, 1), kPeer).ok());
  EXPECT_TRUE(hlc.Update(Timestamp{}, kPeer).ok());
  EXPECT_EQ(hlc.Last(), Timestamp{last.raw + 1});
}

TEST(HlcTest, OffsetLimitIsConfigurable) {
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{.max_clock_offset_ms = 1'500});
  EXPECT_TRUE(hlc.Update(Timestamp::FromParts(kStartMs + 1'500, 0), "b").ok());
  EXPECT_EQ(hlc.Update(Timestamp::FromParts(kStartMs + 1'501, 0), "b").message(),
            "peer b: clock 1.6 s ahead, limit 1.5 s");
  Hlc tight(&clock, HlcOptions{.max_clock_offset_ms = 250});
  EXPECT_EQ(tight.Update(Timestamp::FromParts(kStartMs + 1'000, 0), "c").message(),
            "peer c: clock 1.0 s ahead, limit 0.25 s");
}

TEST(HlcTest, RefusesUnprintablePhysicalTime) {
  ManualClock clock(kStartMs);
  // No practical offset limit, and no overflow in the comparison either.
  Hlc hlc(&clock, HlcOptions{.max_clock_offset_ms = ~uint64_t{0}});
  const Timestamp last_printable = Timestamp::FromParts(Timestamp::kPrintablePhysicalMax, 0);
  const Timestamp beyond = Timestamp::FromParts(Timestamp::kPrintablePhysicalMax + 1, 0);
  const Status s = hlc.Update(beyond, kPeer);
  EXPECT_TRUE(s.IsRefused()) << s.ToString();
  EXPECT_NE(s.message().find(kPeer), std::string::npos) << s.message();
  EXPECT_TRUE(hlc.Last().IsZero());
  EXPECT_TRUE(hlc.Update(last_printable, kPeer).ok());
  EXPECT_EQ(hlc.Last(), last_printable);
}

TEST(TimestampTest, KnownTexts) {
  EXPECT_EQ(Timestamp::FromParts(kStartMs, 7).ToString(), "2026-11-22T02:15:20.123Z-00007");
  EXPECT_EQ(Timestamp{}.ToString(), "1970-01-01T00:00:00.000Z-00000");
  EXPECT_EQ(
      Timestamp::FromParts(Timestamp::kPrintablePhysicalMax, Timestamp::kLogicalMax).ToString(),
      "9999-12-31T23:59:59.999Z-65535");
  // Leap days, including the century rules (2000 is a leap year, 2100 is not).
  EXPECT_EQ(Timestamp::FromParts(951'782'400'000, 1).ToString(), "2000-02-29T00:00:00.000Z-00001");
  EXPECT_EQ(Timestamp::FromParts(1'709'251'199'999, 0).ToString(),
            "2024-02-29T23:59:59.999Z-00000");
  EXPECT_EQ(Timestamp::FromParts(4'107'542'400'000, 0).ToString(),
            "2100-03-01T00:00:00.000Z-00000");
  // Past year 9999 nothing is issued or accepted, but such bytes may still be
  // logged: the date stays right, the width grows and Parse refuses it.
  const std::string beyond =
      Timestamp::FromParts(Timestamp::kPrintablePhysicalMax + 1, 0).ToString();
  EXPECT_EQ(beyond, "10000-01-01T00:00:00.000Z-00000");
  EXPECT_FALSE(Timestamp::Parse(beyond).ok());
  EXPECT_EQ(Timestamp{~uint64_t{0}}.ToString().substr(0, 6), "10889-");
  EXPECT_EQ(NodeIdToString(0), "0000000000000000");
  EXPECT_EQ(NodeIdToString(0x3f2a00000000beefULL), "3f2a00000000beef");
  EXPECT_EQ(NodeIdToString(~uint64_t{0}), "ffffffffffffffff");
}

TEST(TimestampTest, DateAgreesWithGmtime) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_HLC_SEED", 20261122);
  SeededRandom rng(seed);
  for (int i = 0; i < 20'000; ++i) {
    const uint64_t physical = rng.Uniform(Timestamp::kPrintablePhysicalMax + 1);
    const std::time_t secs = static_cast<std::time_t>(physical / 1000);
    std::tm tm{};
    ASSERT_NE(gmtime_r(&secs, &tm), nullptr);
    char want[32];
    ASSERT_GT(std::strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm), 0u);
    const std::string got = Timestamp::FromParts(physical, 0).ToString();
    ASSERT_EQ(got.substr(0, 19), want) << "seed " << seed << " physical " << physical;
  }
}

// Random timestamps, some spread over all printable time and some crowded
// into one second or one millisecond, so every field decides some comparisons.
std::vector<Timestamp> RandomTimestamps(Random& rng, int n) {
  std::vector<Timestamp> out;
  for (int i = 0; i < n; ++i) {
    uint64_t physical = 0;
    switch (rng.Uniform(3)) {
      case 0:
        physical = rng.Uniform(Timestamp::kPrintablePhysicalMax + 1);
        break;
      case 1:
        physical = kStartMs + rng.Uniform(1000);
        break;
      default:
        physical = kStartMs;
        break;
    }
    out.push_back(Timestamp::FromParts(physical, rng.Uniform(Timestamp::kLogicalMax + 1)));
  }
  return out;
}

TEST(TimestampTest, TextRoundTripsAndSortsInTimestampOrder) {
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_HLC_SEED", 20261122);
  SeededRandom rng(seed);
  std::vector<Timestamp> stamps = RandomTimestamps(rng, 30'000);
  std::vector<std::string> texts;
  for (const Timestamp& t : stamps) {
    std::string text = t.ToString();
    ASSERT_EQ(text.size(), 30u) << text;
    const Result<Timestamp> parsed = Timestamp::Parse(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status().ToString();
    ASSERT_EQ(*parsed, t) << text;
    texts.push_back(std::move(text));
  }
  std::sort(stamps.begin(), stamps.end());
  std::sort(texts.begin(), texts.end());
  for (size_t i = 0; i < stamps.size(); ++i) {
    ASSERT_EQ(stamps[i].ToString(), texts[i]) << "seed " << seed << " rank " << i;
  }
}

TEST(TimestampTest, ParseRejectsMalformedText) {
  const char* const kBad[] = {
      "",
      "2026-11-22T02:15:20.123Z-0007",    // short
      "2026-11-22T02:15:20.123Z-000007",  // long
      " 2026-11-22T02:15:20.123Z-00007",
      "2026-11-22T02:15:20.123Z-00007 ",
      "2026-13-22T02:15:20.123Z-00007",  // month 13
      "2026-00-22T02:15:20.123Z-00007",  // month 0
      "2026-11-00T02:15:20.123Z-00007",  // day 0
      "2026-11-31T02:15:20.123Z-00007",  // November has 30 days
      "2026-12-32T02:15:20.123Z-00007",
      "2025-02-29T02:15:20.123Z-00007",  // not a leap year
      "2100-02-29T02:15:20.123Z-00007",  // a century, not a leap year
      "2026-11-22T24:15:20.123Z-00007",  // hour 24
      "2026-11-22T02:60:20.123Z-00007",  // minute 60
      "2026-11-22T02:15:60.123Z-00007",  // no leap seconds
      "2026-11-22T02:15:20.123Z-65536",  // logical above 16 bits
      "2026-11-22T02:15:20.123Z-99999",
      "1969-12-31T23:59:59.999Z-00000",  // before the epoch
      "0000-01-01T00:00:00.000Z-00000",
      "2026-11-22t02:15:20.123Z-00007",  // lower case separators
      "2026-11-22T02:15:20.123z-00007",
      "2026-11-22 02:15:20.123Z-00007",
      "2026-11-22T02:15:20,123Z-00007",
      "2026-11-22T02:15:20.123Z+00007",
      "2026-11-22T02:15:20.123+-00007",
      "2026-11-22T02:15:20.12Z-000007",  // right length, wrong field widths
      "2026-1-22T02:15:20.123Z-000007",
      "+026-11-22T02:15:20.123Z-00007",
      "2026-11-22T02:15:20.123Z--0007",
      "2026-11-22T02:15:20.1a3Z-00007",
      "2026-11-22T02:15:20.123Z-0000\xff",
      "2026-11-22T02:15:20.123Z-0000\xd9\xa1",  // Arabic-Indic digit one
      "10000-01-01T00:00:00.000Z-0000",
  };
  for (const char* bad : kBad) {
    const Result<Timestamp> r = Timestamp::Parse(bad);
    EXPECT_FALSE(r.ok()) << "accepted \"" << bad << "\"";
    if (!r.ok()) {
      EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
    }
  }
  // An embedded NUL of the right length, too.
  EXPECT_FALSE(Timestamp::Parse(std::string("2026-11-22T02:15:20.123Z-0000\0", 30)).ok());
  // The message says what is wrong with which input.
  EXPECT_EQ(Timestamp::Parse("2026-13-22T02:15:20.123Z-00007").status().message(),
            "invalid HLC timestamp \"2026-13-22T02:15:20.123Z-00007\": month out of range");
}

TEST(TimestampTest, EverySingleCharacterEditIsRejectedOrRoundTrips) {
  // Parse is the strict inverse of ToString: any text it accepts must be
  // exactly what ToString prints for the result.
  const std::string base = Timestamp::FromParts(kStartMs, 7).ToString();
  const std::string alphabet = "0123456789-:.TZtz +/\x7f";
  int accepted = 0;
  for (size_t pos = 0; pos < base.size(); ++pos) {
    for (char c : alphabet) {
      std::string edited = base;
      edited[pos] = c;
      const Result<Timestamp> r = Timestamp::Parse(edited);
      if (r.ok()) {
        ++accepted;
        EXPECT_EQ(r->ToString(), edited);
      }
    }
  }
  EXPECT_GT(accepted, 100);  // digit edits that stay in range are fine
}

TEST(VersionTest, OrdersByHlcThenOrigin) {
  const Timestamp t1 = Timestamp::FromParts(kStartMs, 7);
  const Timestamp t2 = Timestamp::FromParts(kStartMs, 8);
  EXPECT_LT((Version{t1, ~uint64_t{0}}), (Version{t2, 0}));  // hlc decides first
  EXPECT_LT((Version{t1, 1}), (Version{t1, 2}));             // then the origin
  EXPECT_EQ((Version{t1, 1}), (Version{t1, 1}));
  EXPECT_GT((Version{t2, 0}), (Version{t1, 0xffff}));
  EXPECT_EQ((Version{t1, 0x3f2a00000000beefULL}).ToString(),
            "2026-11-22T02:15:20.123Z-00007/3f2a00000000beef");

  // The text of a version sorts in version order too.
  const uint64_t seed = testing::SeedFromEnv("TIDEMAP_HLC_SEED", 20261122);
  SeededRandom rng(seed);
  std::vector<Version> versions;
  for (const Timestamp& t : RandomTimestamps(rng, 5'000)) {
    versions.push_back(Version{t, rng.Bernoulli(0.5) ? rng.Uniform(4) : rng.Next64()});
    versions.push_back(Version{t, rng.Uniform(4)});  // ties on hlc
  }
  std::vector<std::string> texts;
  for (const Version& v : versions) texts.push_back(v.ToString());
  std::sort(versions.begin(), versions.end());
  std::sort(texts.begin(), texts.end());
  for (size_t i = 0; i < versions.size(); ++i) {
    ASSERT_EQ(versions[i].ToString(), texts[i]) << "seed " << seed << " rank " << i;
  }
}

// Runs `threads` threads that each call Now() `per_thread` times; checks each
// thread saw strictly increasing values and returns all of them, sorted.
std::vector<Timestamp> ConcurrentNow(Hlc* hlc, int threads, int per_thread) {
  std::vector<std::vector<Timestamp>> seen(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (auto& out : seen) {
    workers.emplace_back([hlc, per_thread, &out] {
      out.reserve(static_cast<size_t>(per_thread));
      for (int i = 0; i < per_thread; ++i) out.push_back(hlc->Now());
    });
  }
  for (std::thread& w : workers) w.join();
  std::vector<Timestamp> all;
  for (const auto& out : seen) {
    EXPECT_TRUE(std::adjacent_find(out.begin(), out.end(), std::greater_equal<Timestamp>()) ==
                out.end())
        << "a thread saw Now() fail to increase";
    all.insert(all.end(), out.begin(), out.end());
  }
  std::sort(all.begin(), all.end());
  return all;
}

TEST(HlcTest, ConcurrentNowIsUnique) {
  SystemClock clock;
  Hlc hlc(&clock, HlcOptions{});
  const std::vector<Timestamp> all = ConcurrentNow(&hlc, 4, 50'000);
  ASSERT_EQ(all.size(), 200'000u);
  EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end()) << "duplicate timestamp";
  EXPECT_EQ(hlc.Last(), all.back());
}

TEST(HlcTest, ConcurrentNowOnFrozenClockIsContiguous) {
  // With the clock frozen every Now() is the previous result + 1, so the
  // union of all threads must be one gapless run: no duplicates, none lost.
  ManualClock clock(kStartMs);
  Hlc hlc(&clock, HlcOptions{});
  const std::vector<Timestamp> all = ConcurrentNow(&hlc, 4, 50'000);
  ASSERT_EQ(all.size(), 200'000u);
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].raw, Timestamp::FromParts(kStartMs, 0).raw + i) << "i=" << i;
  }
}

}  // namespace
}  // namespace tidemap
