// Proves the base helpers: Status/Result plumbing, the byte codecs round-trip
// and reject truncated input, seeded randomness replays, hashing is stable,
// the huge page allocator aligns its large blocks, the radix sort sorts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include <tidemap/base/coding.h>
#include <tidemap/base/crypto.h>
#include <tidemap/base/hash.h>
#include <tidemap/base/huge_page_allocator.h>
#include <tidemap/base/radix_sort.h>
#include <tidemap/base/random.h>
#include <tidemap/base/status.h>

namespace tidemap {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status Quarter(int x, int* out) {
  TIDEMAP_ASSIGN_OR_RETURN(int half, Half(x));
  TIDEMAP_ASSIGN_OR_RETURN(*out, Half(half));
  return Status::Ok();
}

TEST(StatusTest, ResultAndMacros) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(s.ToString(), "invalid_argument: odd: 3");
  EXPECT_EQ(s.WithContext("quarter").message(), "quarter: odd: 3");
}

TEST(CodingTest, FixedAndVarintRoundTrip) {
  std::string buf;
  PutFixed64BE(&buf, 0x0102030405060708ULL);
  PutVarint64(&buf, 300);
  PutVarint64(&buf, ~uint64_t{0});
  PutLengthPrefixed(&buf, "hello");
  EXPECT_EQ(buf.substr(0, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));

  std::string_view in = buf;
  uint64_t a = 0, b = 0, c = 0;
  std::string_view s;
  ASSERT_TRUE(GetFixed64BE(&in, &a));
  ASSERT_TRUE(GetVarint64(&in, &b));
  ASSERT_TRUE(GetVarint64(&in, &c));
  ASSERT_TRUE(GetLengthPrefixed(&in, &s));
  EXPECT_EQ(a, 0x0102030405060708ULL);
  EXPECT_EQ(b, 300u);
  EXPECT_EQ(c, ~uint64_t{0});
  EXPECT_EQ(s, "hello");
  EXPECT_TRUE(in.empty());
}

TEST(CodingTest, RejectsTruncatedAndOverlongInput) {
  std::string buf;
  PutLengthPrefixed(&buf, "hello");
  for (size_t cut = 0; cut < buf.size(); ++cut) {
    std::string_view in(buf.data(), cut);
    std::string_view s;
    EXPECT_FALSE(GetLengthPrefixed(&in, &s)) << "cut=" << cut;
  }
  std::string overlong(11, '\xff');  // 11 continuation bytes cannot be a 64-bit varint
  std::string_view in = overlong;
  uint64_t v = 0;
  EXPECT_FALSE(GetVarint64(&in, &v));
}

TEST(CodingTest, HexAndPrintable) {
  std::string bytes;
  EXPECT_TRUE(FromHex("00ff10Ab", &bytes));
  EXPECT_EQ(ToHex(bytes), "00ff10ab");
  EXPECT_FALSE(FromHex("0g", &bytes));
  EXPECT_FALSE(FromHex("abc", &bytes));
  EXPECT_EQ(Printable(std::string("a\x01z", 3)), "a\\x01z");
}

TEST(CodingTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x8c\x8a"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

TEST(RandomTest, SameSeedSameSequence) {
  SeededRandom a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.Next64();
    EXPECT_EQ(x, b.Next64());
    differs |= (x != c.Next64());
  }
  EXPECT_TRUE(differs);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(a.Uniform(7), 7u);
}

TEST(RandomTest, ZipfFavoursLowRanks) {
  SeededRandom rng(1);
  ZipfSampler zipf(1000, 0.99);
  int low = 0;
  for (int i = 0; i < 10000; ++i) low += zipf.Sample(rng) < 10 ? 1 : 0;
  EXPECT_GT(low, 2500);  // ~39% expected under theta 0.99; uniform would give 1%
}

TEST(HashTest, StableAndXorCombines) {
  EXPECT_EQ(Hash64("abc"), Hash64("abc"));
  EXPECT_NE(Hash64("abc"), Hash64("abd"));
  Digest128 a = Hash128("a"), b = Hash128("b");
  EXPECT_EQ((a ^ b) ^ b, a);
  EXPECT_EQ(a.ToHex().size(), 32u);
}

TEST(CryptoTest, SignVerifyAndKeyText) {
  crypto::PublicKey pk;
  std::string sk;
  ASSERT_TRUE(crypto::GenerateSigningKeyPair(&pk, &sk).ok());
  std::string sig;
  ASSERT_TRUE(crypto::Sign(sk, "transcript", &sig).ok());
  EXPECT_TRUE(crypto::Verify(pk, "transcript", sig));
  EXPECT_FALSE(crypto::Verify(pk, "transcripT", sig));
  const std::string text = crypto::PublicKeyToText(pk);
  auto parsed = crypto::PublicKeyFromText(text);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, pk);
  EXPECT_FALSE(crypto::PublicKeyFromText("xyz").ok());
  crypto::PublicKey derived;
  ASSERT_TRUE(crypto::PublicKeyFromSecret(sk, &derived).ok());
  EXPECT_EQ(derived, pk);
}

TEST(CryptoTest, Base64RoundTrip) {
  const std::string bytes("\x00\xff binary \x01", 11);
  EXPECT_EQ(crypto::Base64Encode("hi!"), "aGkh");
  auto back = crypto::Base64Decode(crypto::Base64Encode(bytes));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bytes);
  EXPECT_FALSE(crypto::Base64Decode("a*==").ok());
}

// Blocks of at least a huge page are aligned to one; smaller ones are plain
// heap blocks; either way a vector keeps its elements through growth.
TEST(HugePageAllocatorTest, AlignsLargeBlocksAndKeepsContents) {
  HugePageAllocator<uint64_t> alloc;
  const size_t large = kHugePageBytes / sizeof(uint64_t) + 1;
  uint64_t* p = alloc.allocate(large);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kHugePageBytes, 0u);
  p[0] = 1;
  p[large - 1] = 2;
  alloc.deallocate(p, large);
  uint64_t* small = alloc.allocate(3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % alignof(uint64_t), 0u);
  alloc.deallocate(small, 3);

  std::vector<uint64_t, HugePageAllocator<uint64_t>> v;
  for (uint64_t i = 0; i < 2 * large; ++i) v.push_back(i * 7);
  for (uint64_t i = 0; i < 2 * large; ++i) ASSERT_EQ(v[i], i * 7);
}

// The radix sort gives std::sort's order: spread keys, keys sharing their
// high bytes (deeper levels), equal keys (ties by the comparator), and
// ranges around the small-range cut-over.
TEST(RadixSortTest, SortsAsStdSortDoes) {
  SeededRandom rnd(7);
  for (size_t n : {size_t{0}, size_t{1}, size_t{64}, size_t{65}, size_t{1000}, size_t{100000}}) {
    std::vector<std::pair<uint64_t, uint32_t>> v(n);
    for (size_t i = 0; i < n; ++i) {
      uint64_t key = rnd.Next64();
      if (i % 3 == 1) key = (key & 0xffff) | (uint64_t{0xab} << 56);  // shared high bytes
      if (i % 5 == 2) key = 42;                                       // ties
      v[i] = {key, static_cast<uint32_t>(rnd.Next64())};
    }
    auto expected = v;
    std::sort(expected.begin(), expected.end());
    RadixSortByKey(
        v.data(), v.data() + v.size(), [](const auto& e) { return e.first; },
        [](const auto& a, const auto& b) { return a < b; });
    ASSERT_EQ(v, expected) << n;
  }
}

}  // namespace
}  // namespace tidemap
