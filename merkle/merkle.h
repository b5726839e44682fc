// Merkle anti-entropy: a fixed-shape digest tree over key metadata, and the
// pure diff logic the sync protocol is built on. No I/O, no clocks, no locks.
//
// Every record (live or tombstone) contributes one 128-bit item digest of its
// metadata (map, key, hlc, origin, tombstone), never of its value. Items fall
// into buckets by the top bits of a 64-bit hash of (map, key), so a bucket is a
// contiguous range of key-hash space. The tree is a complete F-ary tree whose
// leaves are the buckets; every node's digest is the XOR of the item digests
// beneath it. XOR makes a write O(depth): adding and removing an item are the
// same operation, and replacing a version XORs (old ^ new) along one path.
//
// Two replicas that hold the same set of (map, key, version, tombstone) have
// equal trees whatever the order of their writes. Diffing descends only where
// node digests differ (DifferingChildren), then compares the differing
// buckets' (key_hash, version, tombstone) lists (DiffBucket).
//
// XOR combination is linear, so it resists accidents, not adversaries: a
// trusted peer is assumed (the transport authenticates peers; see net/handshake.h).
//
// Format contract: ItemDigest, KeyHash, BucketOf and EncodeDigest fix bytes that
// are persisted (leaf rows) and compared across replicas (roots, node digests).
// Changing any of them needs a storage schema version and protocol version bump;
// merkle_test pins known answers so such a change cannot go unnoticed.
#ifndef TIDEMAP_MERKLE_MERKLE_H_
#define TIDEMAP_MERKLE_MERKLE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>

namespace tidemap {

// ---------------------------------------------------------------------------
// Item digests and key hashes.

// The digest of one record's metadata: Hash128 (XXH3-128, fixed seed) of
//   varint(len(map)) map varint(len(key)) key hlc:fixed64BE origin:fixed64BE tombstone:byte
// The encoding is injective, so two replicas agree on the digest iff they agree
// on (map, key, version, tombstone), up to a 128-bit hash collision. Allocates only when map and
// key together exceed ~200 bytes.
Digest128 ItemDigest(std::string_view map, std::string_view key, const Version& version,
                     bool tombstone);

// The 64-bit hash that places (map, key) in the tree and orders bucket
// summaries: Hash64 (XXH3-64, a seed distinct from ItemDigest's) of
//   varint(len(map)) map varint(len(key)) key
// Allocates only when map and key together exceed ~200 bytes.
uint64_t KeyHash(std::string_view map, std::string_view key);

// ---------------------------------------------------------------------------
// Tree shape.

// A complete tree with fanout 2^fanout_bits and `depth` levels below the root:
// (2^fanout_bits)^depth leaves (buckets). The default has fanout 16 and
// 65,536 buckets (~1.1 MB of digests). Both replicas of a sync must use the
// same shape; the handshake compares it.
struct TreeShape {
  // Limits on a shape, so that memory stays bounded and a node's child list
  // fits a message. Memory is 16 B per node: at kLeafBitsMax, 256 MiB of leaves
  // plus the inner nodes (up to as much again with fanout 2). Shapes beyond
  // ~2^20 buckets only pay off for replicas of hundreds of millions of keys.
  static constexpr uint32_t kFanoutBitsMax = 8;  // fanout <= 256
  static constexpr uint32_t kLeafBitsMax = 24;   // <= 16,777,216 buckets

  uint32_t fanout_bits = 4;
  uint32_t depth = 4;

  uint32_t fanout() const { return uint32_t{1} << fanout_bits; }
  // log2 of the bucket count; the number of key-hash bits that pick a bucket.
  uint32_t leaf_bits() const { return fanout_bits * depth; }

  friend bool operator==(const TreeShape&, const TreeShape&) = default;
};

// OK, or InvalidArgument naming the shape and the broken limit:
// 1 <= fanout_bits <= kFanoutBitsMax, 1 <= depth, fanout_bits * depth <= kLeafBitsMax.
Status ValidateShape(const TreeShape& shape);

// The bucket of a key hash: its top shape.leaf_bits() bits. Buckets are
// therefore contiguous, ascending ranges of key-hash space, and an index keyed
// by big-endian key hash enumerates one bucket with one range scan.
// REQUIRES: ValidateShape(shape).ok().
inline uint32_t BucketOf(uint64_t key_hash, const TreeShape& shape) {
  return static_cast<uint32_t>(key_hash >> (64 - shape.leaf_bits()));
}

// ---------------------------------------------------------------------------
// The tree.

// A node is addressed by (level, index): level 0 is the root (index 0); level
// L holds fanout^L nodes, indexed left to right; level depth holds the leaves,
// whose index is the bucket. The children of (L, i) are (L+1, i*fanout + c)
// for c in [0, fanout).
//
// All node digests live in one flat array, levels stored contiguously from the
// root (a heap with fanout F). Copyable and movable; not thread-safe (the
// replica's owner thread holds it).
class MerkleTree {
 public:
  // The default shape, all digests zero (the tree of an empty replica).
  MerkleTree();

  // A zero tree of `shape`, or the InvalidArgument of ValidateShape.
  static Result<MerkleTree> Create(const TreeShape& shape);

  const TreeShape& shape() const { return shape_; }
  uint32_t fanout() const { return shape_.fanout(); }
  uint32_t depth() const { return shape_.depth; }
  uint32_t leaf_count() const { return leaf_count_; }
  // Nodes at `level`: fanout^level. REQUIRES: level <= depth().
  uint32_t NodesAt(uint32_t level) const;
  // Bytes held by the digest array: 16 * (all nodes, leaves included).
  size_t MemoryBytes() const { return nodes_.size() * sizeof(Digest128); }

  // The bucket of a key hash under this tree's shape.
  uint32_t BucketOf(uint64_t key_hash) const { return tidemap::BucketOf(key_hash, shape_); }

  // XORs `delta` into leaf `bucket` and every ancestor: O(depth).
  //   insert an item:        Apply(bucket, item)
  //   remove an item:        Apply(bucket, item)
  //   replace old with new:  Apply(bucket, old_item ^ new_item)
  // To persist a leaf before applying (write batch first, memory after a
  // successful commit), the new leaf is Leaf(bucket) ^ delta.
  // REQUIRES: bucket < leaf_count() (it comes from BucketOf, not from a peer).
  void Apply(uint32_t bucket, const Digest128& delta);

  // The digest of the whole replica. Two replicas have converged iff roots are equal.
  Digest128 Root() const;
  // REQUIRES: IsValidNode(level, index).
  Digest128 Node(uint32_t level, uint32_t index) const;
  // REQUIRES: bucket < leaf_count().
  Digest128 Leaf(uint32_t bucket) const;
  // All leaves in bucket order (for persistence and scrub). Valid until the tree changes.
  std::span<const Digest128> Leaves() const;

  // Whether (level, index) names a node / an inner node (one with children) of
  // this shape. Addresses from a peer must pass these before the calls below.
  bool IsValidNode(uint32_t level, uint32_t index) const;
  bool IsInnerNode(uint32_t level, uint32_t index) const;

  // ---- Restore from persisted leaves.
  // The replica persists changed leaves (EncodeDigest, plus counts) at each
  // checkpoint and reloads them at open: LoadLeaf for each row (and for each
  // bucket it recomputes from the oplog tail), then RecomputeInner once.
  // Between the first LoadLeaf and RecomputeInner the inner nodes are stale;
  // reading one (Root, Node above the leaves, Children, DifferingChildren,
  // operator==) is a bug and fails a CHECK. Apply and Leaf stay valid.

  // Sets one leaf. InvalidArgument when bucket >= leaf_count() (the bucket
  // number came from a stored row, which may be corrupt).
  Status LoadLeaf(uint32_t bucket, const Digest128& digest);
  // Replaces every leaf and recomputes the inner nodes. InvalidArgument
  // (and no change) unless leaves.size() == leaf_count().
  Status SetLeaves(std::span<const Digest128> leaves);
  // Recomputes every inner node from the leaves: O(node count), ~0.1 ms by default.
  void RecomputeInner();
  // Zeroes every node.
  void Clear();

  // 16 bytes: hi then lo, each big-endian (the byte form of Digest128::ToHex()).
  static void EncodeDigest(const Digest128& digest, std::string* dst);
  // Consumes 16 bytes from the front of *in; false (and *in untouched) when fewer remain.
  static bool DecodeDigest(std::string_view* in, Digest128* digest);

  // ---- Diff helpers for the sync protocol (pure).

  // The digests of the children of inner node (level, index), in child order.
  // REQUIRES: IsInnerNode(level, index).
  std::vector<Digest128> Children(uint32_t level, uint32_t index) const;

  // Compares the children of inner node (level, index) with the peer's digests
  // of the same children (as its Children() returned them) and returns the
  // indices, AT LEVEL level+1, of the children that differ, ascending: each is
  // the next node to descend into (or a bucket when level+1 == depth()).
  // InvalidArgument when (level, index) is not an inner node or
  // remote_children.size() != fanout() (both arrive from a peer).
  Result<std::vector<uint32_t>> DifferingChildren(uint32_t level, uint32_t index,
                                                  std::span<const Digest128> remote_children) const;

  // The inclusive key-hash range [lo, hi] covered by node (level, index): the
  // root covers [0, 2^64-1], a leaf covers exactly the key hashes of its bucket.
  // The nodes of one level tile the 64-bit space in index order.
  // REQUIRES: IsValidNode(level, index).
  std::pair<uint64_t, uint64_t> KeyHashRange(uint32_t level, uint32_t index) const;

  // Same shape and every node equal. REQUIRES: neither has stale inner nodes.
  friend bool operator==(const MerkleTree& a, const MerkleTree& b);

 private:
  explicit MerkleTree(const TreeShape& shape);  // REQUIRES: shape is valid

  size_t Offset(uint32_t level) const { return level_offset_[level]; }
  void CheckInnerFresh() const;

  TreeShape shape_;
  uint32_t leaf_count_ = 0;
  std::vector<size_t> level_offset_;  // depth+1 entries: index of (level, 0) in nodes_
  std::vector<Digest128> nodes_;      // all levels, root first
  bool inner_stale_ = false;          // a LoadLeaf happened since the last RecomputeInner
};

// ---------------------------------------------------------------------------
// Bucket summaries.

// One record in a bucket summary: what a replica holds for one key, without
// the key itself. Summaries are sorted by key_hash.
struct SummaryEntry {
  uint64_t key_hash = 0;
  Version version;
  bool tombstone = false;

  friend bool operator==(const SummaryEntry&, const SummaryEntry&) = default;
};

// What to do after comparing one range of key-hash space on both sides: key
// hashes whose records (all records of the local side with that key hash) must
// be sent to the peer, and key hashes whose records must be requested from it.
// Both lists ascend; a hash may appear in both (see DiffBucket).
struct BucketDiff {
  std::vector<uint64_t> send;
  std::vector<uint64_t> request;

  // "send=1,2 request=3" (decimal; "-" for an empty list). For tests and logs.
  std::string ToString() const;
  friend bool operator==(const BucketDiff&, const BucketDiff&) = default;
};

// Compares the summaries that the local and the remote side hold for the same
// key-hash range (usually one bucket, but any node's KeyHashRange works: a
// merge does not care). Each list must be sorted by key_hash, non-decreasing.
// For each key hash h, with L and R the local and remote entries for h:
//   - L empty (local lacks)                          -> request h
//   - R empty (remote lacks)                         -> send h
//   - one entry each, local version greater          -> send h
//   - one entry each, remote version greater         -> request h
//   - one entry each, equal version and tombstone    -> nothing (in sync)
//   - one entry each, equal version, tombstone flags
//     differ (no honest peer does this)               -> send AND request h, so the
//     replica's deterministic LWW tie rule settles it on both sides
//   - several entries on a side: distinct keys whose 64-bit hashes collide
//     (~N^2/2^65: about 3e-8 at N = 1M keys). Entries cannot be paired without
//     their keys, so: nothing if L and R hold the same (version, tombstone)
//     multiset, else send AND request h. Exchanging all records of h both ways
//     is always correct, since LWW apply is idempotent; it merely costs a few
//     redundant records.
// InvalidArgument (naming the side) when a list is not sorted by key_hash; the
// remote list comes from a peer. Entries outside the compared range are the
// caller's to reject (compare with KeyHashRange) before calling.
Result<BucketDiff> DiffBucket(std::span<const SummaryEntry> local,
                              std::span<const SummaryEntry> remote);

}  // namespace tidemap

#endif  // TIDEMAP_MERKLE_MERKLE_H_
