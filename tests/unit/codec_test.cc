// Proves the sync wire codec: every body type round-trips exactly, edge values
// included (empty lists, max integers, binary keys with NULs, big values);
// seeded random messages round-trip; no truncation, byte flip or hand-crafted
// hostile frame (bad tags, bad counts, bad lengths) crashes the decoder or
// gets past it unnoticed; limits are enforced, the frame size before any byte
// is read, a record count before anything is reserved, decoded record bytes
// before they are copied; the record and summary blobs reject every
// malformation. CodecSizes prints the encoded sizes the protocol design is
// judged by (run it with --gtest_filter).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/test_util.h"
#include <tidemap/base/coding.h>
#include <tidemap/base/random.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/codec_internal.h>
#include <tidemap/schemas/messages.h>

namespace tidemap {
namespace {

constexpr uint64_t kDefaultSeed = 20260514;
constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();

uint64_t Seed() { return testing::SeedFromEnv("TIDEMAP_CODEC_SEED", kDefaultSeed); }

// A short description for failure messages.
std::string Describe(const msg::Message& m) {
  return std::string(msg::BodyName(m.body)) + " seq=" + std::to_string(m.seq);
}

std::string Encode(const msg::Message& m) {
  Result<std::string> r = EncodeMessage(m);
  EXPECT_TRUE(r.ok()) << Describe(m) << ": " << r.status().ToString();
  return r.ok() ? *r : std::string();
}

void ExpectRoundTrip(const msg::Message& m) {
  SCOPED_TRACE(Describe(m));
  const std::string bytes = Encode(m);
  Result<msg::Message> back = DecodeMessage(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == m);
}

KeyedRecord Rec(std::string map, std::string key, std::string value, uint64_t hlc, uint64_t origin,
                bool tombstone = false) {
  return KeyedRecord{std::move(map), std::move(key), std::move(value),
                     Version{Timestamp{hlc}, origin}, tombstone};
}

msg::SummaryEntry Entry(uint64_t key_hash, uint64_t hlc, uint64_t origin, bool tombstone = false) {
  return msg::SummaryEntry{key_hash, Version{Timestamp{hlc}, origin}, tombstone};
}

std::string RandomBytes(Random& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.Uniform(256));
  return s;
}

// Hand-crafted record blobs (grammar at the top of schemas/codec.cc): the
// header, then records appended with BlobRecord.
std::string BlobHeader(uint64_t count, const std::vector<std::string>& maps,
                       const std::vector<uint64_t>& origins) {
  std::string b;
  PutVarint64(&b, count);
  PutVarint64(&b, maps.size());
  for (const std::string& m : maps) PutLengthPrefixed(&b, m);
  PutVarint64(&b, origins.size());
  for (uint64_t o : origins) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((o >> (8 * i)) & 0xff));
  }
  return b;
}
// Appends a record: flags, then the fields they call for (a value unless
// flags & 1; the indices only when given, which sets flags 2 and 4).
void BlobRecord(std::string* b, unsigned flags, std::optional<uint64_t> map, std::string_view key,
                std::string_view value, uint64_t hlc_field, std::optional<uint64_t> origin) {
  b->push_back(static_cast<char>(flags | (map ? 2u : 0u) | (origin ? 4u : 0u)));
  if (map) PutVarint64(b, *map);
  PutLengthPrefixed(b, key);
  if ((flags & 1) == 0) PutLengthPrefixed(b, value);
  PutVarint64(b, hlc_field);
  if (origin) PutVarint64(b, *origin);
}

Result<std::vector<KeyedRecord>> DecodeBlob(std::string_view blob,
                                            const DecodeLimits& limits = {}) {
  return codec_internal::DecodeRecords(blob, limits, "record_batch");
}

// Frames are packed on the wire; hostile ones are crafted on the unpacked
// words (Raw) and packed again (Packed).
std::string Raw(const std::string& frame) {
  Result<std::string> words = codec_internal::UnpackFrame(frame);
  EXPECT_TRUE(words.ok()) << words.status().ToString();
  return words.ok() ? *words : std::string();
}
std::string Packed(const std::string& words) { return codec_internal::PackFrame(words); }

// Frame layout helpers for hand-crafted hostile frames. Offsets are of the
// flat single-segment serialization (8 bytes of segment table first); each
// use checks what it expects to find before patching.
uint64_t WordAt(const std::string& frame, size_t word) {
  uint64_t v = 0;
  std::memcpy(&v, frame.data() + 8 + word * 8, 8);
  return v;
}
void SetWordAt(std::string* frame, size_t word, uint64_t v) {
  std::memcpy(frame->data() + 8 + word * 8, &v, 8);
}
// A Cap'n Proto list pointer's fields.
int64_t ListOffset(uint64_t ptr) {
  return static_cast<int32_t>(static_cast<uint32_t>(ptr & 0xffffffff)) >> 2;
}
uint64_t ListCount(uint64_t ptr) { return ptr >> 35; }
uint64_t ListPointer(int64_t offset, uint64_t element_size, uint64_t count) {
  return (static_cast<uint64_t>(offset << 2) & 0xffffffff) | 1 | (element_size << 32) |
         (count << 35);
}

// ---------------------------------------------------------------------------
// Round trips of every body type.

TEST(CodecTest, HelloOfIdenticalReplicasFitsInSeventyTwoBytes) {
  // Identical replicas exchange one hello each way: root, shape, incarnation,
  // last seq, GC watermark, clock, record count and the cursor held of the
  // receiver are 88 bytes of data, 128 with the framing, unpacked; packing
  // drops their zero bytes.
  const msg::Hello full{1,
                        Digest128{~0ull, ~0ull},
                        4,
                        4,
                        kMax64,
                        kMax64,
                        Version{Timestamp{kMax64}, kMax64},
                        kMax64,
                        kMax64,
                        kMax64,
                        kMax64};
  EXPECT_EQ(Raw(Encode({1, full})).size(), 128u);
  // A replica of a million records, a random root and incarnation, no GC yet.
  SeededRandom rng(Seed());
  msg::Hello real;
  real.merkle_root = Digest128{rng.Next64() | 0x0101010101010101,
                               rng.Next64() | 0x0101010101010101};  // no zero bytes
  real.tree_fanout_bits = 4;
  real.tree_depth = 4;
  real.incarnation = rng.Next64() | 0x0101010101010101;
  real.last_seq = 1'000'000;
  real.physical_ms = 1'800'000'000'000;
  real.records = 1'000'000;
  real.held_incarnation = rng.Next64() | 0x0101010101010101;
  real.held_seq = 1'000'000;
  const size_t size = Encode({1, real}).size();
  std::printf("hello of a 1M-record replica: %zu bytes\n", size);
  EXPECT_LE(size, 72u);
  ExpectRoundTrip({1, real});
}

TEST(CodecTest, HelloRoundTrips) {
  ExpectRoundTrip({1, msg::Hello{}});
  ExpectRoundTrip({kMax64, msg::Hello{kMax32, Digest128{kMax64, kMax64}, 0xffff, 0xffff, kMax64,
                                      kMax64, Version{Timestamp{kMax64}, kMax64}, kMax64, kMax64}});
  ExpectRoundTrip({0, msg::Hello{1, Digest128{1, 2}, 4, 4, 0x1234, 77, Version{Timestamp{5}, 6}}});
}

TEST(CodecTest, RecordBatchRoundTrips) {
  ExpectRoundTrip({1, msg::RecordBatch{}});
  ExpectRoundTrip({2, msg::RecordBatch{kMax64, kMax64, {}}});
  msg::RecordBatch b{5, 9, {}};
  b.records.push_back(Rec("", "", "", 0, 0));  // all empty
  b.records.push_back(
      Rec("users", std::string("a\0b\0", 4), std::string("\0\0\0", 3), kMax64, kMax64));
  b.records.push_back(Rec(std::string(255, 'm'), std::string(4096, '\xff'),
                          std::string(1 << 20, 'v'), 12345, 1));  // 1 MiB value
  b.records.push_back(Rec("m", "deleted", "", 77, 3, /*tombstone=*/true));
  ExpectRoundTrip({3, b});

  // Many maps and origins (indices of two varint bytes), maps and origins
  // coming back, hlc going down and wrapping around, empty keys and values.
  msg::RecordBatch many{1, 2000, {}};
  for (uint64_t i = 0; i < 2000; ++i) {
    const uint64_t hlc = i % 7 == 0 ? kMax64 - i : (i % 5 == 0 ? i : (i * 0x9e3779b97f4a7c15));
    many.records.push_back(Rec("map" + std::to_string((i * 31) % 300), "k" + std::to_string(i),
                               i % 3 == 0 || i % 11 == 0 ? "" : std::string(i % 200, 'v'), hlc,
                               (i * 17) % 257 == 0 ? 0 : kMax64 - (i * 17) % 257, i % 11 == 0));
  }
  ExpectRoundTrip({4, many});
  // Only tombstones; one record; the same map and origin throughout.
  ExpectRoundTrip(
      {5, msg::RecordBatch{1,
                           3,
                           {Rec("m", "a", "", 1, 9, true), Rec("m", "b", "", 0, 9, true),
                            Rec("m", "c", "", kMax64, 9, true)}}});
  ExpectRoundTrip({6, msg::RecordBatch{1, 1, {Rec("m", "k", "v", kMax64, kMax64)}}});
}

TEST(CodecTest, SmallBodiesRoundTrip) {
  ExpectRoundTrip({1, msg::BatchAck{}});
  ExpectRoundTrip({kMax64, msg::BatchAck{kMax64}});
  ExpectRoundTrip({1, msg::BatchRefused{}});
  ExpectRoundTrip({2, msg::BatchRefused{kMax64, "peer 3f2a…: clock 94 s ahead, limit 60 s"}});
  ExpectRoundTrip({3, msg::BatchRefused{7, std::string(100000, 'r')}});
  ExpectRoundTrip({1, msg::DiffEnd{}});
  ExpectRoundTrip({kMax64, msg::DiffEnd{kMax64}});
  ExpectRoundTrip({1, msg::Goodbye{}});
  ExpectRoundTrip({2, msg::Goodbye{"peer 3f2a…: its state predates our GC watermark"}});
}

TEST(CodecTest, OriginRecordsRoundTrip) {
  ExpectRoundTrip({1, msg::OriginRecords{}});
  ExpectRoundTrip({2, msg::OriginRecords{kMax64, {}, false}});
  ExpectRoundTrip({3, msg::OriginRecords{7,
                                         {Rec("m", "k1", "value one", 5, 7),
                                          Rec("m", std::string("k\0y", 3), "", 9, 7, true)},
                                         true}});
}

TEST(CodecTest, TreeNodesRoundTrip) {
  ExpectRoundTrip({1, msg::TreeNodes{}});
  ExpectRoundTrip({1, msg::TreeNodes{kMax64, kMax32, {}, {}, false}});
  msg::TreeNodes t{9, 2, {0, 7, kMax32}, {}, true};
  for (uint64_t i = 0; i < 3 * 16; ++i) t.child_digests.push_back(i == 5 ? kMax64 : i * 0x9e37);
  ExpectRoundTrip({2, t});
  t.last = false;
  t.child_digests.resize(3);  // fanout 1 is odd but well-formed
  ExpectRoundTrip({3, t});
}

TEST(CodecTest, BucketSummariesRoundTrip) {
  ExpectRoundTrip({1, msg::BucketSummaries{}});
  // Buckets without entries: counts of zero, no blob.
  ExpectRoundTrip({1, msg::BucketSummaries{3, {1, 2, kMax32}, {0, 0, 0}, {}, false}});
  msg::BucketSummaries s{kMax64, {4, 5, 6, 9}, {2, 0, 3, 1}, {}, true};
  s.entries = {Entry(0, 0, 0),
               Entry(kMax64, kMax64, kMax64, true),  // wraps around
               Entry(5, Timestamp::FromParts(1, 0).raw, 1),
               Entry(4, Timestamp::FromParts(Timestamp::kPhysicalMax, 1).raw, 2),  // unsorted
               Entry(4, 1, 2, true),                                               // duplicate hash
               Entry(kMax64 - 1, 0xffff, 0)};
  ExpectRoundTrip({2, s});
  // Many distinct origins: a wide origin index.
  msg::BucketSummaries many{1, {0}, {300}, {}, true};
  for (uint64_t i = 0; i < 300; ++i) many.entries.push_back(Entry(i * 1000, i << 16, i * 7919));
  ExpectRoundTrip({3, many});
}

TEST(CodecTest, DiffRecordsRoundTrip) {
  ExpectRoundTrip({1, msg::DiffRecords{}});
  msg::DiffRecords d{kMax64, {}, {0, kMax64, 42}, false};
  ExpectRoundTrip({2, d});
  d.records.push_back(Rec("m", std::string(1, '\0'), "value", 100, 200));
  d.records.push_back(Rec("m", "gone", "", kMax64, 0, true));
  d.requests.clear();
  ExpectRoundTrip({3, d});
}

TEST(CodecTest, DecodesFromUnalignedBytes) {
  msg::Message m{7, msg::RecordBatch{1, 2, {Rec("m", "k", "v", 3, 4)}}};
  const std::string bytes = Encode(m);
  std::string shifted = "x" + bytes;
  Result<msg::Message> back = DecodeMessage(std::string_view(shifted).substr(1));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == m);
}

// ---------------------------------------------------------------------------
// Random messages.

uint64_t EdgeOr(Random& rng, uint64_t random) {
  switch (rng.Uniform(8)) {
    case 0:
      return 0;
    case 1:
      return kMax64;
    case 2:
      return rng.Uniform(300);
    default:
      return random;
  }
}

std::vector<KeyedRecord> RandomRecords(Random& rng) {
  std::vector<KeyedRecord> records(rng.Uniform(12));
  for (KeyedRecord& r : records) {
    r.map = RandomBytes(rng, rng.Uniform(8));
    r.key = RandomBytes(rng, rng.Bernoulli(0.1) ? 4096 : rng.Uniform(24));
    r.tombstone = rng.Bernoulli(0.2);
    if (!r.tombstone) r.value = RandomBytes(rng, rng.Bernoulli(0.05) ? 70000 : rng.Uniform(200));
    r.version = Version{Timestamp{EdgeOr(rng, rng.Next64())}, EdgeOr(rng, rng.Next64())};
  }
  return records;
}

msg::Message RandomMessage(Random& rng) {
  msg::Message m;
  m.seq = EdgeOr(rng, rng.Next64());
  switch (rng.Uniform(10)) {
    case 0:
      m.body = msg::Hello{static_cast<uint32_t>(EdgeOr(rng, rng.Next64())),
                          Digest128{rng.Next64(), rng.Next64()},
                          static_cast<uint32_t>(rng.Uniform(9)),
                          static_cast<uint32_t>(rng.Uniform(9)),
                          EdgeOr(rng, rng.Next64()),
                          EdgeOr(rng, rng.Next64()),
                          Version{Timestamp{EdgeOr(rng, rng.Next64())}, EdgeOr(rng, rng.Next64())}};
      break;
    case 8:
      m.body =
          msg::OriginRecords{EdgeOr(rng, rng.Next64()), RandomRecords(rng), rng.Bernoulli(0.5)};
      break;
    case 9:
      m.body = msg::Goodbye{RandomBytes(rng, rng.Uniform(100))};
      break;
    case 1:
      m.body = msg::RecordBatch{EdgeOr(rng, rng.Next64()), EdgeOr(rng, rng.Next64()),
                                RandomRecords(rng)};
      break;
    case 2:
      m.body = msg::BatchAck{EdgeOr(rng, rng.Next64())};
      break;
    case 3:
      m.body = msg::BatchRefused{EdgeOr(rng, rng.Next64()), RandomBytes(rng, rng.Uniform(100))};
      break;
    case 4: {
      msg::TreeNodes t;
      t.diff_id = EdgeOr(rng, rng.Next64());
      t.level = static_cast<uint32_t>(rng.Uniform(8));
      t.last = rng.Bernoulli(0.5);
      t.parents.resize(rng.Uniform(10));
      for (uint32_t& p : t.parents) p = static_cast<uint32_t>(rng.Next64());
      t.child_digests.resize(t.parents.size() * (1 + rng.Uniform(16)));
      for (uint64_t& d : t.child_digests) d = EdgeOr(rng, rng.Next64());
      m.body = std::move(t);
      break;
    }
    case 5: {
      msg::BucketSummaries s;
      s.diff_id = EdgeOr(rng, rng.Next64());
      s.last = rng.Bernoulli(0.5);
      s.buckets.resize(rng.Uniform(8));
      const uint64_t origins[] = {rng.Next64(), rng.Next64(), EdgeOr(rng, rng.Next64())};
      const bool clustered = rng.Bernoulli(0.5);
      const uint64_t base_ms = rng.Uniform(Timestamp::kPhysicalMax);
      for (uint32_t& b : s.buckets) {
        b = static_cast<uint32_t>(rng.Uniform(65536));
        s.counts.push_back(static_cast<uint32_t>(rng.Bernoulli(0.2) ? 0 : rng.Uniform(20)));
        std::vector<msg::SummaryEntry> bucket(s.counts.back());
        for (msg::SummaryEntry& e : bucket) {
          e.key_hash = clustered ? (uint64_t{b} << 48) | rng.Uniform(uint64_t{1} << 48)
                                 : EdgeOr(rng, rng.Next64());
          const uint64_t hlc =
              clustered ? Timestamp::FromParts(
                              std::min(base_ms + rng.Uniform(10'000'000), Timestamp::kPhysicalMax),
                              rng.Bernoulli(0.8) ? 0 : rng.Uniform(70000))
                              .raw
                        : EdgeOr(rng, rng.Next64());
          e.version = Version{Timestamp{hlc}, origins[rng.Uniform(3)]};
          e.tombstone = rng.Bernoulli(0.1);
        }
        if (clustered) {
          std::sort(bucket.begin(), bucket.end(),
                    [](const auto& x, const auto& y) { return x.key_hash < y.key_hash; });
        }
        s.entries.insert(s.entries.end(), bucket.begin(), bucket.end());
      }
      m.body = std::move(s);
      break;
    }
    case 6: {
      msg::DiffRecords d{EdgeOr(rng, rng.Next64()), RandomRecords(rng), {}, rng.Bernoulli(0.5)};
      d.requests.resize(rng.Uniform(20));
      for (uint64_t& r : d.requests) r = EdgeOr(rng, rng.Next64());
      m.body = std::move(d);
      break;
    }
    default:
      m.body = msg::DiffEnd{EdgeOr(rng, rng.Next64())};
      break;
  }
  return m;
}

TEST(CodecTest, RandomMessagesRoundTrip) {
  const uint64_t seed = Seed();
  SeededRandom rng(seed);
  const uint64_t iterations = testing::IntFromEnv("TIDEMAP_CODEC_ITERATIONS", 3000);
  for (uint64_t i = 0; i < iterations; ++i) {
    const msg::Message m = RandomMessage(rng);
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(i));
    ExpectRoundTrip(m);
    if (::testing::Test::HasFailure()) break;
  }
}

// ---------------------------------------------------------------------------
// Hostile bytes.

// One valid frame of every body type, small enough to try every truncation.
std::vector<std::string> SampleFrames() {
  std::vector<msg::Message> messages = {
      {1, msg::Hello{1, Digest128{3, 4}, 4, 4, 5, 6, Version{Timestamp{7}, 8}}},
      {2,
       msg::RecordBatch{1, 3, {Rec("m", "k1", "value one", 5, 6), Rec("m", "k2", "", 7, 8, true)}}},
      {3, msg::BatchAck{3}},
      {4, msg::BatchRefused{3, "clock ahead"}},
      {5, msg::TreeNodes{1, 1, {0, 3}, {1, 2, 3, 4, 5, 6, 7, 8}, true}},
      {6, msg::BucketSummaries{1,
                               {10, 11},
                               {2, 1},
                               {Entry(10, 1 << 20, 1), Entry(12, 5 << 16, 2, true),
                                Entry(99, (7 << 16) | 3, 1)},
                               false}},
      {7, msg::DiffRecords{1, {Rec("m", "k", "v", 1, 2)}, {77, 78}, true}},
      {8, msg::DiffEnd{1}},
      {9, msg::OriginRecords{6, {Rec("m", "k", "v", 1, 6)}, true}},
      {10, msg::Goodbye{"re-bootstrap"}},
  };
  std::vector<std::string> frames;
  for (const msg::Message& m : messages) frames.push_back(Encode(m));
  return frames;
}

// A decode that succeeds must give a message that re-encodes and decodes to itself.
void ExpectStableIfDecoded(std::string_view bytes) {
  Result<msg::Message> m = DecodeMessage(bytes);
  if (!m.ok()) {
    EXPECT_FALSE(m.status().message().empty());
    return;
  }
  Result<std::string> again = EncodeMessage(*m);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  Result<msg::Message> m2 = DecodeMessage(*again);
  ASSERT_TRUE(m2.ok()) << m2.status().ToString();
  EXPECT_TRUE(*m2 == *m);
}

TEST(CodecTest, EveryTruncationIsAnError) {
  for (const std::string& frame : SampleFrames()) {
    for (size_t n = 0; n < frame.size(); ++n) {
      Result<msg::Message> m = DecodeMessage(std::string_view(frame).substr(0, n));
      EXPECT_FALSE(m.ok()) << "a " << n << "-byte prefix of a " << frame.size()
                           << "-byte frame decoded";
    }
  }
}

TEST(CodecTest, RandomByteFlipsNeverCrash) {
  const uint64_t seed = Seed();
  SeededRandom rng(seed);
  const uint64_t per_frame = testing::IntFromEnv("TIDEMAP_CODEC_FLIPS", 3000);
  size_t decoded = 0, total = 0;
  for (const std::string& frame : SampleFrames()) {
    for (uint64_t i = 0; i < per_frame; ++i) {
      std::string bytes = frame;
      const uint64_t flips = 1 + rng.Uniform(4);
      for (uint64_t f = 0; f < flips; ++f) {
        bytes[rng.Uniform(bytes.size())] ^= static_cast<char>(1 + rng.Uniform(255));
      }
      SCOPED_TRACE("seed " + std::to_string(seed) + " frame " + std::to_string(total));
      ExpectStableIfDecoded(bytes);
      decoded += DecodeMessage(bytes).ok() ? 1 : 0;
      ++total;
    }
  }
  std::printf("byte flips: %zu of %zu mutated frames still decoded\n", decoded, total);
}

TEST(CodecTest, RejectsEmptyMisalignedAndTrailingBytes) {
  Result<msg::Message> m = DecodeMessage("");
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument()) << m.status().ToString();

  const std::string frame = Encode({1, msg::BatchAck{1}});
  m = DecodeMessage(frame + "1234");
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsCorruption());
  EXPECT_NE(m.status().message().find("4 bytes after the message"), std::string::npos)
      << m.status().ToString();

  m = DecodeMessage(frame + std::string(16, '\0'));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("16 bytes after the message"), std::string::npos)
      << m.status().ToString();

  // A segment table alone, claiming a segment that is not there.
  m = DecodeMessage(Packed(std::string("\0\0\0\0\x10\0\0\0", 8)));
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsCorruption()) << m.status().ToString();
}

TEST(CodecTest, FrameThatWouldUnpackPastTheLimitIsRefusedBeforeUnpacking) {
  // 2 packed bytes stand for 256 zero words: a table claiming one segment of
  // 2^22 words (32 MiB) and zero runs for all of it is ~32 KB packed.
  std::string words("\0\0\0\0\0\0\x40\0", 8);
  words.append(size_t{4} << 20, '\0');  // the first 4 MiB of it: enough to show
  const std::string packed = Packed(words);
  ASSERT_LT(packed.size(), size_t{64} << 10);
  DecodeLimits limits;
  limits.frame_bytes_max = size_t{16} << 20;
  Result<msg::Message> m = DecodeMessage(packed, limits);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument()) << m.status().ToString();
  EXPECT_NE(m.status().message().find("unpacks to 33554440 bytes, over frame_bytes_max 16777216"),
            std::string::npos)
      << m.status().ToString();
  // Too many segments.
  m = DecodeMessage(Packed(std::string("\xff\xff\0\0\x01\0\0\0", 8)));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("65536 segments, over 512"), std::string::npos)
      << m.status().ToString();
}

TEST(CodecTest, OversizedFrameIsRejectedBeforeAnyByteIsRead) {
  // The frame lives in memory that cannot be read: any copy or parse before
  // the size check would fault. The view is misaligned too, so the
  // aligning copy would be the first thing to run if the check came later.
  DecodeLimits limits;
  const size_t size = limits.frame_bytes_max + 8;
  void* region = mmap(nullptr, size + 8, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(region, MAP_FAILED);
  Result<msg::Message> m = DecodeMessage(std::string_view(static_cast<char*>(region) + 1, size));
  munmap(region, size + 8);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("over frame_bytes_max"), std::string::npos)
      << m.status().ToString();

  // And a small limit on a real frame.
  limits.frame_bytes_max = 64;
  const std::string frame = Encode({1, msg::BatchRefused{1, std::string(100, 'x')}});
  m = DecodeMessage(frame, limits);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument()) << m.status().ToString();
}

TEST(CodecTest, UnknownBodyTypeAndNullBodyAreRejected) {
  std::string frame = Raw(Encode({5, msg::DiffEnd{9}}));
  // Message: root pointer (word 0), seq (word 1), union tag (word 2, low 16
  // bits), body pointer (word 3).
  ASSERT_EQ(WordAt(frame, 1), 5u);
  ASSERT_EQ(WordAt(frame, 2) & 0xffff, 7u);  // diffEnd is the eighth member
  std::string unknown = frame;
  SetWordAt(&unknown, 2, 99);
  Result<msg::Message> m = DecodeMessage(Packed(unknown));
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("unknown body type 99"), std::string::npos)
      << m.status().ToString();

  std::string null_body = frame;
  SetWordAt(&null_body, 3, 0);
  m = DecodeMessage(Packed(null_body));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("diff_end: the body pointer is null"), std::string::npos)
      << m.status().ToString();
}

TEST(CodecTest, ProtocolRulesAreEnforcedOnDecode) {
  // (A tombstone with a value cannot be written in the record blob: see
  // RecordBlobTombstoneHasNoValue.)
  // Child digests not a whole fanout: TreeNodes (words 4-7), parents pointer at word 6.
  {
    std::string frame =
        Raw(Encode({1, msg::TreeNodes{1, 0, {0, 1}, {1, 2, 3, 4, 5, 6, 7, 8}, true}}));
    const uint64_t parents = WordAt(frame, 6);
    ASSERT_EQ(ListCount(parents), 2u);
    SetWordAt(&frame, 6, ListPointer(ListOffset(parents), 4 /* four bytes */, 3));
    Result<msg::Message> m = DecodeMessage(Packed(frame));
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("8 child digests are not a whole fanout for 3 parents"),
              std::string::npos)
        << m.status().ToString();
  }
  // Bucket counts that do not add up to the entries: find the counts list by
  // the bucket number before it.
  {
    std::string frame = Raw(
        Encode({1, msg::BucketSummaries{1, {0x12345678}, {2}, {Entry(1, 1, 1), Entry(2, 2, 2)}}}));
    const size_t at = frame.find("\x78\x56\x34\x12");
    ASSERT_NE(at, std::string::npos);
    ASSERT_EQ(frame[at + 8], 2);
    frame[at + 8] = 3;
    Result<msg::Message> m = DecodeMessage(Packed(frame));
    ASSERT_FALSE(m.ok());
    EXPECT_TRUE(m.status().IsInvalidArgument());
    EXPECT_NE(m.status().message().find("counts add up to 3 but there are 2 entries"),
              std::string::npos)
        << m.status().ToString();
  }
}

TEST(CodecTest, EncodeRefusesWhatDecodeWouldRefuse) {
  Result<std::string> r =
      EncodeMessage({1, msg::RecordBatch{1, 1, {Rec("m", "k", "v", 1, 1, true)}}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::DiffRecords{1, {Rec("m", "k", "v", 1, 1, true)}, {}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::TreeNodes{1, 0, {0, 1}, {1, 2, 3}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::TreeNodes{1, 0, {}, {1}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::TreeNodes{1, 0, {0, 1}, {}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::BucketSummaries{1, {1}, {2}, {Entry(1, 1, 1)}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
  r = EncodeMessage({1, msg::BucketSummaries{1, {1, 2}, {1}, {Entry(1, 1, 1)}, true}});
  EXPECT_TRUE(!r.ok() && r.status().IsInvalidArgument());
}

TEST(CodecTest, LimitsAreEnforced) {
  DecodeLimits limits;
  limits.records_max = 10;
  limits.list_items_max = 100;

  msg::RecordBatch batch{1, 11, {}};
  for (int i = 0; i < 11; ++i)
    batch.records.push_back(Rec("m", "k" + std::to_string(i), "v", 1, 1));
  Result<msg::Message> m = DecodeMessage(Encode({1, batch}), limits);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("11 records, over records_max 10"), std::string::npos)
      << m.status().ToString();
  batch.records.pop_back();
  EXPECT_TRUE(DecodeMessage(Encode({1, batch}), limits).ok());

  msg::DiffRecords diff{1, batch.records, {}, true};
  diff.records.push_back(batch.records[0]);
  m = DecodeMessage(Encode({1, diff}), limits);
  EXPECT_TRUE(!m.ok() && m.status().IsInvalidArgument()) << m.status().ToString();
  diff.records.pop_back();
  diff.requests.assign(101, 5);
  m = DecodeMessage(Encode({1, diff}), limits);
  EXPECT_TRUE(!m.ok() && m.status().IsInvalidArgument()) << m.status().ToString();

  msg::TreeNodes tree{1, 1, std::vector<uint32_t>(7), std::vector<uint64_t>(7 * 16), true};
  m = DecodeMessage(Encode({1, tree}), limits);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("112 child digests, over list_items_max 100"),
            std::string::npos)
      << m.status().ToString();

  msg::BucketSummaries sums{1, {1}, {101}, std::vector<msg::SummaryEntry>(101), true};
  m = DecodeMessage(Encode({1, sums}), limits);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("101 entries, over list_items_max 100"), std::string::npos)
      << m.status().ToString();

  // Traversal and nesting limits reach Cap'n Proto.
  DecodeLimits tight;
  tight.traversal_words_max = 64;
  msg::Message big{1, msg::BatchRefused{1, std::string(1000, 'x')}};
  m = DecodeMessage(Encode(big), tight);
  EXPECT_TRUE(!m.ok() && m.status().IsCorruption()) << m.status().ToString();
  DecodeLimits shallow;
  shallow.nesting_max = 1;
  m = DecodeMessage(Encode({1, batch}), shallow);
  EXPECT_TRUE(!m.ok() && m.status().IsCorruption()) << m.status().ToString();
}

TEST(CodecTest, SharedMapNamesCannotAmplifyTheFrame) {
  // 2000 records of one 64 KiB map name: the name crosses the wire once (a
  // ~76 KB frame) but would decode to 128 MiB of map names.
  // record_bytes_max must stop it, before the copies that would cross it.
  constexpr size_t kRecords = 2000;
  const std::string map(64 << 10, 'm');
  msg::RecordBatch batch{1, kRecords, {}};
  for (size_t i = 0; i < kRecords; ++i) batch.records.push_back(Rec(map, "k", "", i, 1, true));
  const std::string frame = Encode({1, batch});
  EXPECT_LT(frame.size(), map.size() + kRecords * 8);
  Result<msg::Message> m = DecodeMessage(frame);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("over record_bytes_max 67108864"), std::string::npos)
      << m.status().ToString();
  std::printf("shared-map frame of %zu bytes refused: %s\n", frame.size(),
              m.status().ToString().c_str());

  // The limit counts map, key and value bytes of every record, exactly.
  msg::RecordBatch small{
      1,
      3,
      {Rec("mm", "kkk", "vvvv", 1, 1), Rec("mm", "k", "", 2, 1, true), Rec("m", "", "v", 3, 2)}};
  const std::string small_frame = Encode({1, small});
  DecodeLimits limits;
  limits.record_bytes_max = 9 + 3 + 2;
  EXPECT_TRUE(DecodeMessage(small_frame, limits).ok());
  limits.record_bytes_max = 9 + 3 + 2 - 1;
  m = DecodeMessage(small_frame, limits);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("14 bytes of map names, keys and values, over "
                                      "record_bytes_max 13"),
            std::string::npos)
      << m.status().ToString();
}

// ---------------------------------------------------------------------------
// The record blob.

TEST(CodecTest, RecordBlobDecodesHandCraftedBytes) {
  // Proves the test's own blob writer against the grammar before the
  // malformation tests lean on it.
  std::string b = BlobHeader(3, {"m", "n"}, {7, 8});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1000, std::nullopt);  // map 0, origin 0
  BlobRecord(&b, 1, 1, "t", "", 3, 1);                            // tombstone, hlc 1000 - 2
  BlobRecord(&b, 0, 0, "", "", 4, std::nullopt);                  // hlc 998 + 2, origin 1
  Result<std::vector<KeyedRecord>> r = DecodeBlob(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::vector<KeyedRecord> expected = {
      Rec("m", "k", "v", 1000, 7), Rec("n", "t", "", 998, 8, true), Rec("m", "", "", 1000, 8)};
  EXPECT_TRUE(*r == expected);
  Result<std::string> encoded = codec_internal::EncodeRecords(expected, "record_batch");
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(ToHex(*encoded), ToHex(b)) << "the encoder writes the same bytes";
  EXPECT_TRUE(DecodeBlob("")->empty());
  EXPECT_TRUE(codec_internal::EncodeRecords({}, "record_batch")->empty());
}

TEST(CodecTest, RecordBlobRejectsMalformations) {
  const std::vector<KeyedRecord> records = {
      Rec("users", "alice", "{\"age\":3}", Timestamp::FromParts(5000, 0).raw, 7),
      Rec("users", "bob", "", Timestamp::FromParts(5000, 1).raw, 8, true),
      Rec("groups", std::string(200, 'g'), std::string(300, 'x'), Timestamp::FromParts(4000, 0).raw,
          7),
  };
  Result<std::string> blob = codec_internal::EncodeRecords(records, "record_batch");
  ASSERT_TRUE(blob.ok());
  Result<std::vector<KeyedRecord>> back = DecodeBlob(*blob);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == records);

  // Every truncation fails (the empty prefix is the valid empty blob).
  for (size_t n = 1; n < blob->size(); ++n) {
    Result<std::vector<KeyedRecord>> r = DecodeBlob(std::string_view(*blob).substr(0, n));
    EXPECT_TRUE(!r.ok() && r.status().IsCorruption()) << n;
  }
  // Trailing bytes.
  Result<std::vector<KeyedRecord>> r = DecodeBlob(*blob + '\0');
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("1 bytes after the last record"), std::string::npos)
      << r.status().ToString();

  auto expect_corrupt = [](const std::string& b, const std::string& why) {
    Result<std::vector<KeyedRecord>> d = DecodeBlob(b);
    ASSERT_FALSE(d.ok()) << why;
    EXPECT_TRUE(d.status().IsCorruption()) << d.status().ToString();
    EXPECT_NE(d.status().message().find(why), std::string::npos) << d.status().ToString();
  };
  std::string b;
  // Header: zero records, bad table sizes, truncated tables.
  expect_corrupt(std::string(1, '\0'), "a non-empty blob of zero records");
  b = BlobHeader(1, {}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "0 maps for 1 records");
  b = BlobHeader(1, {"a", "b"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "2 maps for 1 records");
  b = BlobHeader(1, {"m"}, {});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "0 origins for 1 records");
  b = BlobHeader(1, {"m"}, {1, 2});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "2 origins for 1 records");
  b = BlobHeader(2, {"m"}, {1});  // then a map name claiming 100 bytes
  b[2] = 100;
  expect_corrupt(b, "map table truncated");
  b = BlobHeader(3, {"a", "b", "c"}, {});
  b.pop_back();  // n_origins
  expect_corrupt(b + '\x02' + std::string(15, 'o'), "origin table truncated");
  b = BlobHeader(100000, {"m"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "100000 records cannot fit in 6 bytes");

  // Records: unknown flags, indices out of range, lengths past the end.
  b = BlobHeader(1, {"m"}, {1});
  BlobRecord(&b, 8, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "record 0: unknown flag bits");
  b = BlobHeader(1, {"m"}, {1});
  BlobRecord(&b, 0x80, std::nullopt, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "record 0: unknown flag bits");
  b = BlobHeader(2, {"m", "n"}, {1});
  BlobRecord(&b, 0, 1, "k", "v", 1, std::nullopt);
  BlobRecord(&b, 0, 2, "k", "v", 1, std::nullopt);
  expect_corrupt(b, "record 1: map index out of range");
  b = BlobHeader(2, {"m"}, {1, 2});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, 1);
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, kMax64);
  expect_corrupt(b, "record 1: origin index out of range");
  b = BlobHeader(1, {"m"}, {1});
  b += '\0';
  PutVarint64(&b, 50);  // a key length past the end
  b += "short";
  expect_corrupt(b, "record 0: key truncated");
  b = BlobHeader(1, {"m"}, {1});
  b += '\0';
  PutVarint64(&b, kMax64);  // a length that would wrap any unchecked sum
  b += "short";
  expect_corrupt(b, "record 0: key truncated");
  b = BlobHeader(1, {"m"}, {1});
  b += '\0';
  PutLengthPrefixed(&b, "k");
  PutVarint64(&b, 6);  // a value length one past the end
  b += "value";
  expect_corrupt(b, "record 0: value truncated");
  b = BlobHeader(1, {"m"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  b.back() = '\x80';  // an unterminated hlc varint
  expect_corrupt(b, "record 0: bad hlc");
  b = BlobHeader(1, {"m"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  b.pop_back();
  b += std::string(10, '\xff') + '\x01';  // a varint of more than 64 bits
  expect_corrupt(b, "record 0: bad hlc");
}

TEST(CodecTest, RecordBlobCountIsCheckedBeforeAnythingIsReserved) {
  // A blob of a few bytes claiming more records than records_max: refused as
  // over the limit, before the claim is compared with the bytes or reserved.
  std::string b = BlobHeader(uint64_t{1} << 40, {"m"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  Result<std::vector<KeyedRecord>> r = DecodeBlob(b);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("1099511627776 records, over records_max 100000"),
            std::string::npos)
      << r.status().ToString();
  DecodeLimits limits;
  limits.records_max = 2;
  b = BlobHeader(3, {"m"}, {1});
  for (int i = 0; i < 3; ++i) BlobRecord(&b, 0, std::nullopt, "k", "v", 1, std::nullopt);
  r = DecodeBlob(b, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("3 records, over records_max 2"), std::string::npos)
      << r.status().ToString();
  limits.records_max = 3;
  EXPECT_TRUE(DecodeBlob(b, limits).ok());
}

TEST(CodecTest, RecordBlobTombstoneHasNoValue) {
  // A tombstone's value is absent from the grammar, so no bytes decode to a
  // tombstone with a value. Setting the tombstone flag on a live record makes
  // its value length read as its hlc and shifts the rest: the blob is refused.
  std::string b = BlobHeader(1, {"m"}, {1});
  BlobRecord(&b, 0, std::nullopt, "k", "value", 1, std::nullopt);
  const size_t flags_at = b.size() - 1 - 2 - 6 - 1;
  ASSERT_EQ(b[flags_at], '\0');
  b[flags_at] = 1;
  Result<std::vector<KeyedRecord>> r = DecodeBlob(b);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST(CodecTest, RecordBlobFlipsNeverCrashOrBreakTheRules) {
  std::vector<KeyedRecord> records;
  for (uint64_t i = 0; i < 12; ++i) {
    records.push_back(Rec(i % 3 == 0 ? "a" : "bb", "key" + std::to_string(i),
                          i % 4 == 1 ? "" : std::string(i, 'v'), 1000 + i * 3, 7 + i % 2,
                          i % 4 == 1));
  }
  Result<std::string> blob = codec_internal::EncodeRecords(records, "diff_records");
  ASSERT_TRUE(blob.ok());
  SeededRandom rng(Seed());
  size_t decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string b = *blob;
    const uint64_t flips = 1 + rng.Uniform(3);
    for (uint64_t f = 0; f < flips; ++f) {
      b[rng.Uniform(b.size())] ^= static_cast<char>(1 + rng.Uniform(255));
    }
    Result<std::vector<KeyedRecord>> r = DecodeBlob(b);
    if (!r.ok()) {
      EXPECT_TRUE(r.status().IsCorruption() || r.status().IsInvalidArgument());
      continue;
    }
    ++decoded;
    // Output bounded by the input: at most one record per 3 bytes, copied
    // bytes of keys and values within the blob.
    EXPECT_LE(r->size() * 3, b.size());
    size_t key_value_bytes = 0;
    for (const KeyedRecord& rec : *r) {
      EXPECT_FALSE(rec.tombstone && !rec.value.empty());
      key_value_bytes += rec.key.size() + rec.value.size();
    }
    EXPECT_LE(key_value_bytes, b.size());
    Result<std::string> again = codec_internal::EncodeRecords(*r, "diff_records");
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(*DecodeBlob(*again) == *r);
  }
  std::printf("record blob flips: %zu of 20000 mutated blobs still decoded\n", decoded);
}

TEST(CodecTest, HostileRecordBlobInAFrame) {
  // The blob inside a real frame: a key length past the blob's end, and a
  // count over records_max, patched in place.
  const msg::Message m{1, msg::RecordBatch{1, 1, {Rec("m", "key", "value", 1, 1)}}};
  const std::string frame = Raw(Encode(m));
  Result<std::string> blob =
      codec_internal::EncodeRecords(std::get<msg::RecordBatch>(m.body).records, "record_batch");
  ASSERT_TRUE(blob.ok());
  const size_t at = frame.find(*blob);
  ASSERT_NE(at, std::string::npos);
  // count 1, 1 map "m", 1 origin (8 bytes), flags, then the key length.
  const size_t key_len_at = at + 1 + 1 + 2 + 1 + 8 + 1;
  ASSERT_EQ(frame[key_len_at], 3);
  std::string bad = frame;
  bad[key_len_at] = 100;
  Result<msg::Message> r = DecodeMessage(Packed(bad));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("record_batch: malformed records: record 0: key truncated"),
            std::string::npos)
      << r.status().ToString();

  bad = frame;
  ASSERT_EQ(bad[at], 1);
  bad[at] = 0x7f;  // 127 records
  DecodeLimits limits;
  limits.records_max = 126;
  r = DecodeMessage(Packed(bad), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("127 records, over records_max 126"), std::string::npos)
      << r.status().ToString();
  limits.records_max = 127;
  r = DecodeMessage(Packed(bad), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("127 records cannot fit"), std::string::npos)
      << r.status().ToString();
}

// ---------------------------------------------------------------------------
// The summary blob.

TEST(CodecTest, SummaryBlobRejectsMalformations) {
  const std::vector<uint32_t> counts = {2, 0, 2};
  const std::vector<msg::SummaryEntry> entries = {
      Entry(100, Timestamp::FromParts(5000, 0).raw, 7),
      Entry(130, Timestamp::FromParts(5100, 3).raw, 8),
      Entry(900, Timestamp::FromParts(4000, 0).raw, 7, true),
      Entry(901, Timestamp::FromParts(4001, 0).raw, 9),
  };
  Result<std::string> blob = codec_internal::EncodeSummaryEntries(counts, entries);
  ASSERT_TRUE(blob.ok());
  const DecodeLimits limits;
  auto decode = [&](std::string_view b, const std::vector<uint32_t>& c = {2, 0, 2}) {
    return codec_internal::DecodeSummaryEntries(b, c, limits);
  };
  Result<std::vector<msg::SummaryEntry>> back = decode(*blob);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == entries);

  // Every truncation fails.
  for (size_t n = 0; n < blob->size(); ++n) {
    EXPECT_FALSE(decode(std::string_view(*blob).substr(0, n)).ok()) << n;
  }
  // Trailing bytes, or padding bits set.
  EXPECT_TRUE(decode(*blob + '\0').status().IsCorruption());
  std::string padded = *blob;
  padded.back() = static_cast<char>(padded.back() | 0x80);
  EXPECT_TRUE(decode(padded).status().IsCorruption()) << decode(padded).status().ToString();
  // Counts that do not match the blob.
  EXPECT_TRUE(decode(*blob, {2, 1, 2}).status().IsInvalidArgument());
  EXPECT_FALSE(decode("", {1}).ok());

  // Header fields out of range. Layout: count, n_origins, 3 x 8 bytes, base, widths.
  ASSERT_EQ((*blob)[0], 4);
  ASSERT_EQ((*blob)[1], 3);
  const size_t base_at = 2 + 3 * 8;
  std::string bad = *blob;
  bad[1] = 0;  // no origins
  EXPECT_TRUE(decode(bad).status().IsCorruption());
  bad = *blob;
  bad[1] = 5;  // more origins than entries
  EXPECT_TRUE(decode(bad).status().IsCorruption());
  std::string varint_base;
  for (size_t i = base_at; static_cast<uint8_t>((*blob)[i]) & 0x80; ++i) varint_base += (*blob)[i];
  const size_t widths_at = base_at + varint_base.size() + 1;
  for (size_t w = 0; w < 4; ++w) {
    bad = *blob;
    bad[widths_at + w] = 65;
    EXPECT_TRUE(decode(bad).status().IsCorruption()) << w;
  }
  // A physical base past kPhysicalMax.
  std::string huge_base = blob->substr(0, base_at);
  PutVarint64(&huge_base, Timestamp::kPhysicalMax + 1);
  huge_base += blob->substr(widths_at);
  EXPECT_TRUE(decode(huge_base).status().IsCorruption()) << decode(huge_base).status().ToString();
  // More entries than the bits could hold.
  bad = *blob;
  bad[0] = 100;
  EXPECT_TRUE(decode(bad, {100}).status().IsCorruption());

  // Random flips never crash; what decodes has the right count.
  SeededRandom rng(Seed());
  for (int i = 0; i < 20000; ++i) {
    std::string b = *blob;
    b[rng.Uniform(b.size())] ^= static_cast<char>(1 + rng.Uniform(255));
    Result<std::vector<msg::SummaryEntry>> r = decode(b);
    if (r.ok()) {
      EXPECT_EQ(r->size(), 4u);
    }
  }
}

TEST(CodecTest, SummaryBlobOriginIndexOutOfRange) {
  // Three origins need two bits; index 3 is out of range. Entries of one
  // bucket, all widths zero but origin: each entry is 2 + 1 bits.
  const std::vector<uint32_t> counts = {3};
  const std::vector<msg::SummaryEntry> entries = {Entry(0, 0, 10), Entry(0, 0, 11),
                                                  Entry(0, 0, 12)};
  Result<std::string> blob = codec_internal::EncodeSummaryEntries(counts, entries);
  ASSERT_TRUE(blob.ok());
  ASSERT_EQ(blob->size(), 2 + 24 + 1 + 4 + 2u);
  // Bits: entry 0 = origin 0 (00) tomb 0, entry 1 = origin 1 (10) tomb 0 ...
  std::string bad = *blob;
  bad[bad.size() - 2] = static_cast<char>(bad[bad.size() - 2] | 0x3);  // entry 0 origin = 3
  Result<std::vector<msg::SummaryEntry>> r =
      codec_internal::DecodeSummaryEntries(bad, counts, DecodeLimits{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("origin index 3 of 3"), std::string::npos)
      << r.status().ToString();
}

// ---------------------------------------------------------------------------
// Sizes: what the design is judged by. Prints a report; the expectations
// guard against regressions.

// 1000 buckets (of the default 65,536-bucket tree) x 15 entries, key hashes
// sorted within a bucket, hlc within three hours, 3 origins, some logical
// counters and tombstones.
msg::BucketSummaries RealisticSummary(Random& rng) {
  msg::BucketSummaries s{1, {}, {}, {}, true};
  const uint64_t now_ms = 1'780'000'000'000;
  const uint64_t origins[] = {rng.Next64(), rng.Next64(), rng.Next64()};
  std::vector<uint32_t> buckets;
  while (buckets.size() < 1000) {
    const auto b = static_cast<uint32_t>(rng.Uniform(65536));
    if (std::find(buckets.begin(), buckets.end(), b) == buckets.end()) buckets.push_back(b);
  }
  std::sort(buckets.begin(), buckets.end());
  for (uint32_t b : buckets) {
    s.buckets.push_back(b);
    s.counts.push_back(15);
    std::vector<msg::SummaryEntry> bucket(15);
    for (msg::SummaryEntry& e : bucket) {
      e.key_hash = (uint64_t{b} << 48) | rng.Uniform(uint64_t{1} << 48);
      const uint64_t ms = now_ms - rng.Uniform(3 * 3600 * 1000);
      e.version = Version{Timestamp::FromParts(ms, rng.Bernoulli(0.9) ? 0 : rng.Uniform(8)),
                          origins[rng.Uniform(3)]};
      e.tombstone = rng.Bernoulli(0.05);
    }
    std::sort(bucket.begin(), bucket.end(),
              [](const auto& x, const auto& y) { return x.key_hash < y.key_hash; });
    s.entries.insert(s.entries.end(), bucket.begin(), bucket.end());
  }
  return s;
}

TEST(CodecSizes, Report) {
  SeededRandom rng(Seed());

  // Bucket summaries.
  const msg::BucketSummaries summary = RealisticSummary(rng);
  const std::string summary_frame = Encode({1, summary});
  Result<std::string> blob = codec_internal::EncodeSummaryEntries(summary.counts, summary.entries);
  ASSERT_TRUE(blob.ok());
  const double n_entries = static_cast<double>(summary.entries.size());
  const double per_entry = static_cast<double>(summary_frame.size()) / n_entries;
  std::printf(
      "bucket_summaries: 1000 buckets x 15 entries: frame %zu bytes = %.2f bytes/entry "
      "(blob alone %.2f, buckets+counts %.2f); unpacked %zu\n",
      summary_frame.size(), per_entry, static_cast<double>(blob->size()) / n_entries,
      static_cast<double>(summary_frame.size() - blob->size()) / n_entries,
      Raw(summary_frame).size());
  EXPECT_LT(per_entry, 11.0);

  // Record batches. A record's own bytes are map + key + value + 16 (its
  // version); the sync benchmark's catch-up must stay within 1.2x of them.
  // Sizes are of whole frames, Cap'n Proto framing included.
  const auto report_records = [](const char* what, const std::vector<KeyedRecord>& records,
                                 const std::string& frame) {
    double own = 0;
    for (const KeyedRecord& r : records) {
      own += static_cast<double>(r.map.size() + r.key.size() + r.value.size() + 16);
    }
    const double n = static_cast<double>(records.size());
    const double size = static_cast<double>(frame.size());
    std::printf(
        "%s: frame %zu bytes = %.3fx the records' own bytes; %+.1f bytes/record beyond "
        "map+key+value+16 (%+.1f beyond map+key+value); unpacked %zu bytes\n",
        what, frame.size(), size / own, (size - own) / n, (size - own + 16 * n) / n,
        Raw(frame).size());
    return size / own;
  };

  // The benchmark's newest-writes catch-up: map "m", 16-byte keys, 15-byte
  // values, one origin, hlc rising by small steps (the logical counter within
  // a millisecond, the next millisecond one time in ten).
  msg::RecordBatch catch_up{1, 1000, {}};
  uint64_t ms = 1'780'000'000'000, logical = 0;
  for (int i = 0; i < 1000; ++i) {
    if (rng.Bernoulli(0.1)) {
      ++ms;
      logical = 0;
    } else {
      ++logical;
    }
    char key[17];
    std::snprintf(key, sizeof(key), "k%015d", i);
    catch_up.records.push_back(KeyedRecord{"m", key, "value-" + std::string(key + 7),
                                           Version{Timestamp::FromParts(ms, logical), 0xa}, false});
  }
  ASSERT_EQ(catch_up.records[0].value.size(), 15u);
  const double catch_up_ratio = report_records(
      "record_batch: 1000 records, map 1 B + key 16 B + value 15 B, 1 origin, hlc steps",
      catch_up.records, Encode({1, catch_up}));
  EXPECT_LE(catch_up_ratio, 1.2);

  // 16-byte random keys, 100-byte random values, a new millisecond each.
  msg::RecordBatch batch{1, 1000, {}};
  for (int i = 0; i < 1000; ++i) {
    batch.records.push_back(KeyedRecord{
        "users", RandomBytes(rng, 16), RandomBytes(rng, 100),
        Version{Timestamp::FromParts(1'780'000'000'000 + i, 0), 0x1234567890abcdef}, false});
  }
  const double batch_ratio = report_records(
      "record_batch: 1000 records, map 5 B + key 16 B + value 100 B random, 1 origin, 1 ms steps",
      batch.records, Encode({1, batch}));
  EXPECT_LT(batch_ratio, 1.0);

  // A tree diff's transfer: records in key order, hlc anywhere within three
  // hours, 3 origins, some tombstones.
  msg::DiffRecords diff{1, {}, {}, true};
  const uint64_t diff_origins[] = {rng.Next64(), rng.Next64(), rng.Next64()};
  for (int i = 0; i < 1000; ++i) {
    char key[17];
    std::snprintf(key, sizeof(key), "k%015d", i * 7);
    const bool tombstone = rng.Bernoulli(0.05);
    diff.records.push_back(
        KeyedRecord{"m", key, tombstone ? "" : RandomBytes(rng, 15),
                    Version{Timestamp::FromParts(1'780'000'000'000 - rng.Uniform(3 * 3600 * 1000),
                                                 rng.Bernoulli(0.9) ? 0 : rng.Uniform(8)),
                            diff_origins[rng.Uniform(3)]},
                    tombstone});
  }
  const double diff_ratio = report_records(
      "diff_records: 1000 records, map 1 B + key 16 B + value 15 B, 3 origins, hlc within 3 h",
      diff.records, Encode({1, diff}));
  EXPECT_LE(diff_ratio, 1.2);

  // Tree nodes: 4096 parents x 16 digests.
  msg::TreeNodes tree{1, 3, std::vector<uint32_t>(4096), std::vector<uint64_t>(4096 * 16), true};
  for (uint32_t i = 0; i < 4096; ++i) tree.parents[i] = i * 3;
  for (uint64_t& d : tree.child_digests) d = rng.Next64();
  const std::string tree_frame = Encode({1, tree});
  const size_t tree_unpacked = Raw(tree_frame).size();
  std::printf(
      "tree_nodes: 4096 parents x 16 digests: frame %zu bytes (digests alone %zu); unpacked %zu "
      "bytes (packing saved %.1f%%)\n",
      tree_frame.size(), tree.child_digests.size() * 8, tree_unpacked,
      100.0 * (1.0 - static_cast<double>(tree_frame.size()) / static_cast<double>(tree_unpacked)));
  EXPECT_LT(tree_frame.size(), 4096 * 16 * 8 + 4096 * 4 + 128);

  // Small messages.
  std::printf("batch_ack %zu bytes, diff_end %zu bytes, hello %zu bytes\n",
              Encode({1, msg::BatchAck{7}}).size(), Encode({1, msg::DiffEnd{7}}).size(),
              Encode({1, msg::Hello{}}).size());
}

}  // namespace
}  // namespace tidemap
