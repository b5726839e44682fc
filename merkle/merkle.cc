#include <tidemap/merkle/merkle.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <tuple>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>

namespace tidemap {
namespace {

// Distinct seeds keep the two hash domains independent even though both
// encodings start with the same (map, key) bytes. Part of the format contract
// (see merkle.h): changing either changes every persisted leaf and every root.
constexpr uint64_t kItemDigestSeed = 0x746d2d6974656d31;  // "tm-item1"
constexpr uint64_t kKeyHashSeed = 0x746d2d6b65796831;     // "tm-keyh1"

constexpr size_t kVarint64BytesMax = 10;
// Encodings up to this size are built on the stack; ItemDigest runs once per
// write and per scrubbed key, so the common case must not allocate.
constexpr size_t kInlineEncodingBytes = 256;

// Encoders over a caller-provided buffer known to be large enough. They pass
// the cursor by value: a Writer object would be reloaded after every byte
// store (a char store may alias it), which made ItemDigest ~1.5x slower.
char* WriteVarint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

char* WriteLengthPrefixed(char* p, std::string_view b) {
  p = WriteVarint(p, b.size());
  if (!b.empty()) std::memcpy(p, b.data(), b.size());
  return p + b.size();
}

char* WriteFixed64BE(char* p, uint64_t v) {
  unsigned char be[8];
  for (int i = 0; i < 8; ++i) be[i] = static_cast<unsigned char>(v >> (56 - 8 * i));
  std::memcpy(p, be, 8);
  return p + 8;
}

// varint(len(map)) map varint(len(key)) key: a prefix-free, hence injective, pair encoding.
char* WriteMapKey(char* p, std::string_view map, std::string_view key) {
  return WriteLengthPrefixed(WriteLengthPrefixed(p, map), key);
}

constexpr size_t MapKeyBytesMax(std::string_view map, std::string_view key) {
  return 2 * kVarint64BytesMax + map.size() + key.size();
}

constexpr size_t kItemSuffixBytes = 8 + 8 + 1;  // hlc, origin, tombstone

// Encodes into `buf` (MapKeyBytesMax + kItemSuffixBytes long) and hashes.
Digest128 ItemDigestIn(char* buf, std::string_view map, std::string_view key,
                       const Version& version, bool tombstone) {
  char* p = WriteMapKey(buf, map, key);
  p = WriteFixed64BE(p, version.hlc.raw);
  p = WriteFixed64BE(p, version.origin);
  *p++ = tombstone ? 1 : 0;
  return Hash128(std::string_view(buf, static_cast<size_t>(p - buf)), kItemDigestSeed);
}

uint64_t KeyHashIn(char* buf, std::string_view map, std::string_view key) {
  const char* end = WriteMapKey(buf, map, key);
  return Hash64(std::string_view(buf, static_cast<size_t>(end - buf)), kKeyHashSeed);
}

}  // namespace

Digest128 ItemDigest(std::string_view map, std::string_view key, const Version& version,
                     bool tombstone) {
  const size_t size_max = MapKeyBytesMax(map, key) + kItemSuffixBytes;
  if (size_max <= kInlineEncodingBytes) {
    std::array<char, kInlineEncodingBytes> buf;
    return ItemDigestIn(buf.data(), map, key, version, tombstone);
  }
  std::string buf(size_max, '\0');
  return ItemDigestIn(buf.data(), map, key, version, tombstone);
}

uint64_t KeyHash(std::string_view map, std::string_view key) {
  const size_t size_max = MapKeyBytesMax(map, key);
  if (size_max <= kInlineEncodingBytes) {
    std::array<char, kInlineEncodingBytes> buf;
    return KeyHashIn(buf.data(), map, key);
  }
  std::string buf(size_max, '\0');
  return KeyHashIn(buf.data(), map, key);
}

Status ValidateShape(const TreeShape& shape) {
  const std::string what = "merkle tree shape fanout_bits=" + std::to_string(shape.fanout_bits) +
                           " depth=" + std::to_string(shape.depth) + ": ";
  if (shape.fanout_bits < 1 || shape.fanout_bits > TreeShape::kFanoutBitsMax) {
    return Status::InvalidArgument(what + "fanout_bits must be in [1, " +
                                   std::to_string(TreeShape::kFanoutBitsMax) + "]");
  }
  if (shape.depth < 1) return Status::InvalidArgument(what + "depth must be at least 1");
  // Checked by division so that a huge depth cannot overflow the product.
  if (shape.depth > TreeShape::kLeafBitsMax / shape.fanout_bits) {
    return Status::InvalidArgument(what + "fanout_bits * depth exceeds " +
                                   std::to_string(TreeShape::kLeafBitsMax) + " (at most 2^" +
                                   std::to_string(TreeShape::kLeafBitsMax) + " buckets)");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// MerkleTree

MerkleTree::MerkleTree() : MerkleTree(TreeShape{}) {}

MerkleTree::MerkleTree(const TreeShape& shape) : shape_(shape) {
  TIDEMAP_CHECK(ValidateShape(shape).ok());
  leaf_count_ = uint32_t{1} << shape.leaf_bits();
  level_offset_.resize(shape.depth + 1);
  size_t total = 0;
  for (uint32_t level = 0; level <= shape.depth; ++level) {
    level_offset_[level] = total;
    total += NodesAt(level);
  }
  nodes_.assign(total, Digest128{});
}

Result<MerkleTree> MerkleTree::Create(const TreeShape& shape) {
  TIDEMAP_RETURN_IF_ERROR(ValidateShape(shape));
  return MerkleTree(shape);
}

uint32_t MerkleTree::NodesAt(uint32_t level) const {
  TIDEMAP_CHECK(level <= shape_.depth);
  return uint32_t{1} << (shape_.fanout_bits * level);
}

bool MerkleTree::IsValidNode(uint32_t level, uint32_t index) const {
  return level <= shape_.depth && index < NodesAt(level);
}

bool MerkleTree::IsInnerNode(uint32_t level, uint32_t index) const {
  return level < shape_.depth && index < NodesAt(level);
}

void MerkleTree::CheckInnerFresh() const {
  TIDEMAP_CHECK_MSG(!inner_stale_, "MerkleTree: LoadLeaf without RecomputeInner before a read");
}

void MerkleTree::Apply(uint32_t bucket, const Digest128& delta) {
  TIDEMAP_CHECK(bucket < leaf_count_);
  uint32_t index = bucket;
  for (uint32_t level = shape_.depth + 1; level-- > 0;) {
    nodes_[Offset(level) + index] ^= delta;
    index >>= shape_.fanout_bits;
  }
}

Digest128 MerkleTree::Root() const {
  CheckInnerFresh();
  return nodes_[0];
}

Digest128 MerkleTree::Node(uint32_t level, uint32_t index) const {
  TIDEMAP_CHECK(IsValidNode(level, index));
  if (level < shape_.depth) CheckInnerFresh();
  return nodes_[Offset(level) + index];
}

Digest128 MerkleTree::Leaf(uint32_t bucket) const {
  TIDEMAP_CHECK(bucket < leaf_count_);
  return nodes_[Offset(shape_.depth) + bucket];
}

std::span<const Digest128> MerkleTree::Leaves() const {
  return std::span<const Digest128>(nodes_).subspan(Offset(shape_.depth), leaf_count_);
}

Status MerkleTree::LoadLeaf(uint32_t bucket, const Digest128& digest) {
  if (bucket >= leaf_count_) {
    return Status::InvalidArgument("merkle leaf " + std::to_string(bucket) +
                                   " out of range: the tree has " + std::to_string(leaf_count_) +
                                   " buckets");
  }
  nodes_[Offset(shape_.depth) + bucket] = digest;
  inner_stale_ = true;
  return Status::Ok();
}

Status MerkleTree::SetLeaves(std::span<const Digest128> leaves) {
  if (leaves.size() != leaf_count_) {
    return Status::InvalidArgument("merkle leaves: got " + std::to_string(leaves.size()) +
                                   ", the tree has " + std::to_string(leaf_count_) + " buckets");
  }
  std::copy(leaves.begin(), leaves.end(),
            nodes_.begin() + static_cast<std::ptrdiff_t>(Offset(shape_.depth)));
  RecomputeInner();
  return Status::Ok();
}

void MerkleTree::RecomputeInner() {
  const uint32_t fanout = shape_.fanout();
  for (uint32_t level = shape_.depth; level-- > 0;) {
    const size_t parent_base = Offset(level);
    const size_t child_base = Offset(level + 1);
    const uint32_t count = NodesAt(level);
    for (uint32_t i = 0; i < count; ++i) {
      Digest128 sum;
      const size_t first = child_base + size_t{i} * fanout;
      for (uint32_t c = 0; c < fanout; ++c) sum ^= nodes_[first + c];
      nodes_[parent_base + i] = sum;
    }
  }
  inner_stale_ = false;
}

void MerkleTree::Clear() {
  std::fill(nodes_.begin(), nodes_.end(), Digest128{});
  inner_stale_ = false;
}

void MerkleTree::EncodeDigest(const Digest128& digest, std::string* dst) {
  PutFixed64BE(dst, digest.hi);
  PutFixed64BE(dst, digest.lo);
}

bool MerkleTree::DecodeDigest(std::string_view* in, Digest128* digest) {
  if (in->size() < 16) return false;
  digest->hi = DecodeFixed64BE(in->data());
  digest->lo = DecodeFixed64BE(in->data() + 8);
  in->remove_prefix(16);
  return true;
}

std::vector<Digest128> MerkleTree::Children(uint32_t level, uint32_t index) const {
  TIDEMAP_CHECK(IsInnerNode(level, index));
  if (level + 1 < shape_.depth) CheckInnerFresh();
  const size_t first = Offset(level + 1) + size_t{index} * fanout();
  return std::vector<Digest128>(nodes_.begin() + static_cast<std::ptrdiff_t>(first),
                                nodes_.begin() + static_cast<std::ptrdiff_t>(first + fanout()));
}

Result<std::vector<uint32_t>> MerkleTree::DifferingChildren(
    uint32_t level, uint32_t index, std::span<const Digest128> remote_children) const {
  if (!IsInnerNode(level, index)) {
    return Status::InvalidArgument("merkle node (" + std::to_string(level) + ", " +
                                   std::to_string(index) + ") is not an inner node of a depth-" +
                                   std::to_string(shape_.depth) + " tree");
  }
  const uint32_t fanout = shape_.fanout();
  if (remote_children.size() != fanout) {
    return Status::InvalidArgument("merkle node (" + std::to_string(level) + ", " +
                                   std::to_string(index) + "): peer sent " +
                                   std::to_string(remote_children.size()) +
                                   " child digests, fanout is " + std::to_string(fanout));
  }
  if (level + 1 < shape_.depth) CheckInnerFresh();
  std::vector<uint32_t> differing;
  const uint32_t first_child = index * fanout;
  const size_t first = Offset(level + 1) + first_child;
  for (uint32_t c = 0; c < fanout; ++c) {
    if (nodes_[first + c] != remote_children[c]) differing.push_back(first_child + c);
  }
  return differing;
}

std::pair<uint64_t, uint64_t> MerkleTree::KeyHashRange(uint32_t level, uint32_t index) const {
  TIDEMAP_CHECK(IsValidNode(level, index));
  const uint32_t level_bits = shape_.fanout_bits * level;
  if (level_bits == 0) return {0, std::numeric_limits<uint64_t>::max()};
  const uint32_t shift = 64 - level_bits;  // level_bits <= kLeafBitsMax, so shift >= 40
  const uint64_t lo = uint64_t{index} << shift;
  return {lo, lo | ((uint64_t{1} << shift) - 1)};
}

bool operator==(const MerkleTree& a, const MerkleTree& b) {
  a.CheckInnerFresh();
  b.CheckInnerFresh();
  return a.shape_ == b.shape_ && a.nodes_ == b.nodes_;
}

// ---------------------------------------------------------------------------
// Bucket summaries

std::string BucketDiff::ToString() const {
  auto list = [](const std::vector<uint64_t>& v) {
    if (v.empty()) return std::string("-");
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ',';
      out += std::to_string(v[i]);
    }
    return out;
  };
  return "send=" + list(send) + " request=" + list(request);
}

namespace {

Status CheckSorted(std::span<const SummaryEntry> entries, const char* side) {
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].key_hash < entries[i - 1].key_hash) {
      return Status::InvalidArgument(std::string("bucket summary (") + side +
                                     "): not sorted by key_hash at entry " + std::to_string(i));
    }
  }
  return Status::Ok();
}

// The end of the run of entries sharing entries[begin].key_hash.
size_t GroupEnd(std::span<const SummaryEntry> entries, size_t begin) {
  size_t end = begin + 1;
  while (end < entries.size() && entries[end].key_hash == entries[begin].key_hash) ++end;
  return end;
}

// Whether two runs hold the same (version, tombstone) multiset. Runs longer
// than one only arise from 64-bit key-hash collisions, so sorting copies is fine.
bool SameMultiset(std::span<const SummaryEntry> a, std::span<const SummaryEntry> b) {
  if (a.size() != b.size()) return false;
  using Item = std::tuple<uint64_t, uint64_t, bool>;
  auto items = [](std::span<const SummaryEntry> run) {
    std::vector<Item> out;
    out.reserve(run.size());
    for (const SummaryEntry& e : run)
      out.emplace_back(e.version.hlc.raw, e.version.origin, e.tombstone);
    std::sort(out.begin(), out.end());
    return out;
  };
  return items(a) == items(b);
}

}  // namespace

Result<BucketDiff> DiffBucket(std::span<const SummaryEntry> local,
                              std::span<const SummaryEntry> remote) {
  TIDEMAP_RETURN_IF_ERROR(CheckSorted(local, "local"));
  TIDEMAP_RETURN_IF_ERROR(CheckSorted(remote, "remote"));
  BucketDiff diff;
  size_t i = 0;
  size_t j = 0;
  while (i < local.size() || j < remote.size()) {
    if (j == remote.size() || (i < local.size() && local[i].key_hash < remote[j].key_hash)) {
      diff.send.push_back(local[i].key_hash);  // remote lacks it
      i = GroupEnd(local, i);
      continue;
    }
    if (i == local.size() || remote[j].key_hash < local[i].key_hash) {
      diff.request.push_back(remote[j].key_hash);  // local lacks it
      j = GroupEnd(remote, j);
      continue;
    }
    const uint64_t h = local[i].key_hash;
    const size_t i_end = GroupEnd(local, i);
    const size_t j_end = GroupEnd(remote, j);
    if (i_end - i == 1 && j_end - j == 1) {
      const SummaryEntry& l = local[i];
      const SummaryEntry& r = remote[j];
      if (l.version > r.version) {
        diff.send.push_back(h);
      } else if (l.version < r.version) {
        diff.request.push_back(h);
      } else if (l.tombstone != r.tombstone) {
        diff.send.push_back(h);
        diff.request.push_back(h);
      }
    } else if (!SameMultiset(local.subspan(i, i_end - i), remote.subspan(j, j_end - j))) {
      diff.send.push_back(h);
      diff.request.push_back(h);
    }
    i = i_end;
    j = j_end;
  }
  return diff;
}

}  // namespace tidemap
