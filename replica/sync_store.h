// SyncStore: everything the sync core (SyncSession, replica/sync.h) needs of
// the replica it synchronizes, and nothing more, in the way negentropy's
// StorageBase serves its protocol object. The session reads and writes its
// replica only through this interface: Replica implements it
// (replica/replica.h), and a test may implement it over anything.
//
// The operations fall into five groups: what the store is (Info, Snapshot,
// counts, GC watermarks), what it keeps about a peer (LoadPeer and the
// Save/Replace calls), reads of the oplog and of records, the Merkle tree's
// inner nodes and bucket summaries, and merging a peer's records.
//
// Thread-safety: as the implementation's (Replica's may be called from any
// thread). Lifetime: the store must outlive every session that uses it.
#ifndef TIDEMAP_REPLICA_SYNC_STORE_H_
#define TIDEMAP_REPLICA_SYNC_STORE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/schemas/messages.h>

namespace tidemap {

struct ApplyResult {
  size_t applied = 0;  // won and stored
  size_t ignored = 0;  // older than, or equal to, what we hold
  // Records for keys this replica does not hold, at or below the GC
  // watermark of their Merkle bucket. Tombstones: not stored, a purge here
  // already stands for them.
  size_t below_watermark_tombstones = 0;
  // Live versions: the old version of a key deleted and purged here (or a
  // write that arrived later than the GC horizon allows): the sender's state
  // predates the watermark. Never resurrected; what is stored instead
  // depends on StaleRecords.
  size_t stale = 0;
  std::string first_stale;        // "map 'm', key 'k' at <version>" when stale > 0
  Version first_stale_watermark;  // the watermark that record was at or below
};

// What applying a stale live record (see ApplyResult::stale) stores.
enum class StaleRecords {
  // Stores a tombstone at the bucket's watermark instead: the purged delete,
  // restored. It is newer than the stale version, so it flows back to the
  // sender (and whoever else holds that version) like any delete, and is
  // purged again later. The cluster converges on the key being deleted.
  kRedelete,
  // Stores nothing; the caller refuses the sender (SyncOptions::refuse_stale_peers).
  kDrop,
};

// What never changes while the store is open.
struct SyncStoreInfo {
  uint64_t node_id = 0;      // this node's id
  uint64_t incarnation = 0;  // this database's, drawn when it was created (non-zero)
  // The Merkle tree's shape: 2^tree_fanout_bits children per inner node,
  // tree_depth levels below the root.
  uint32_t tree_fanout_bits = 0;
  uint32_t tree_depth = 0;
  // The most records one ApplyPeerRecords call may carry (more is Refused).
  size_t apply_records_max = 0;
};

// The store's state as a session's Hello describes it.
struct SyncSnapshot {
  // Read before merkle_root, so the root covers at least every oplog row up
  // to it.
  uint64_t last_seq = 0;
  uint64_t pruned_through = 0;  // every oplog seq at or below this is gone (0: none)
  Digest128 merkle_root;
  Version gc_watermark;  // the greatest purged tombstone version (zero: none)
  uint64_t records = 0;  // stored keys, tombstones included
};

// Which stored records one ScanRecords pass returns.
struct RecordScan {
  // Set: the records whose version's origin is this node id. Unset: the
  // records whose KeyHash(map, key) is one of `key_hashes` (ascending; the
  // span must stay valid for the whole scan).
  std::optional<uint64_t> origin;
  std::span<const uint64_t> key_hashes;
};

class SyncStore {
 public:
  virtual ~SyncStore() = default;

  // ---- what the store is ----

  virtual SyncStoreInfo Info() const = 0;
  virtual Result<SyncSnapshot> Snapshot() const = 0;
  // The highest oplog seq assigned so far (cheap; no I/O).
  virtual uint64_t LastSeq() const = 0;
  // Stored keys, tombstones included (cheap; no I/O).
  virtual uint64_t KeyCount() const = 0;
  // The GC watermark of the Merkle bucket of `key_hash` (KeyHash(map, key)),
  // or with nullopt the greatest over every bucket; zero when none was purged.
  virtual Version GcWatermark(std::optional<uint64_t> key_hash) const = 0;

  // ---- what the store keeps about a peer (a node id) ----

  // The stored state of `peer`; nullopt when there was none, and the peer is
  // then registered at cursor 0 (the oplog keeps its rows for it from now on).
  virtual Result<std::optional<PeerState>> LoadPeer(uint64_t peer) = 0;
  // The peer acknowledged our oplog up to `seq` (registering it if unknown).
  // Forward only: a lower value is ignored; the other fields are kept.
  virtual Status SavePeerAcked(uint64_t peer, uint64_t seq) = 0;
  // We acknowledged the peer's oplog up to `seq`. Forward only, like
  // SavePeerAcked; NotFound for a peer never registered.
  virtual Status SavePeerReceived(uint64_t peer, uint64_t seq) = 0;
  // Replaces the whole state of `peer` (registering it if unknown), cursors
  // included even when they move back.
  virtual Status ReplacePeer(uint64_t peer, const PeerState& state) = 0;
  // The peer's Hello says it acknowledged our oplog up to `held_seq` of our
  // incarnation `held_incarnation` (0: it holds nothing of ours), and ours
  // announced `announced_last_seq`. A seq above what this database could
  // have sent it means we lost writes it holds (replica/lost_writes.cc): that
  // is counted and kept for the log, and when the peer cannot see it itself
  // (held_seq <= announced_last_seq: the seqs were issued again) the store
  // takes a new incarnation and returns Corruption, which ends the session;
  // the next one then repairs and resyncs this node. OK otherwise.
  virtual Status CheckHeldByPeer(uint64_t peer, uint64_t held_incarnation, uint64_t held_seq,
                                 uint64_t announced_last_seq) = 0;

  // ---- reads ----

  // The oplog entries with seq > after_seq, at most `entries_max`, in seq
  // order. After a prune the first may be above after_seq + 1.
  virtual Result<std::vector<OplogEntry>> ReadOplog(uint64_t after_seq,
                                                    size_t entries_max) const = 0;
  // The stored record of (map, key), tombstones included; nullopt when
  // absent. Corruption (naming the key) when its bytes fail their check.
  virtual Result<std::optional<KeyedRecord>> ReadRecord(std::string_view map,
                                                        std::string_view key) const = 0;
  // The stored records (tombstones included) whose KeyHash is one of
  // `key_hashes` (ascending, no repeats), appended to `out` in that order,
  // stopping after the first hash whose records bring the bytes appended
  // (map, key and value sizes) to `bytes_max` or more. Returns how many of
  // `key_hashes` were done (all their records appended). A lookup per hash.
  virtual Result<size_t> RecordsByKeyHash(std::span<const uint64_t> key_hashes, size_t bytes_max,
                                          std::vector<KeyedRecord>* out) const = 0;
  // The stored records (tombstones included) that `scan` selects, in (map,
  // key) order, appended to `out` a page at a time: the pass resumes after
  // `*cursor` (empty: from the start), stops once the page holds about
  // `page_bytes` of records, and leaves in `*cursor` where to resume.
  // Returns true when the pass reached the end. One pass reads every record:
  // for a diff that owes the peer a large share of the keys, or the rare
  // resync of an origin's records.
  virtual Result<bool> ScanRecords(const RecordScan& scan, std::string* cursor, size_t page_bytes,
                                   std::vector<KeyedRecord>* out) const = 0;

  // ---- the Merkle tree ----

  // For each parent node at `level`, the low 64 bits of its children's
  // digests, appended to `out`. InvalidArgument when a parent is not an
  // inner node.
  virtual Status MerkleChildDigests(uint32_t level, const std::vector<uint32_t>& parents,
                                    std::vector<uint64_t>* out) const = 0;
  // The (key hash, version) entries of each of `buckets` (ascending), in
  // key-hash order, appended to `entries`; `counts` gets one count per bucket.
  virtual Status BucketSummaries(const std::vector<uint32_t>& buckets,
                                 std::vector<msg::SummaryEntry>* entries,
                                 std::vector<uint32_t>* counts) const = 0;

  // ---- merging a peer's records ----

  // OK when `remote` is within the store's max_clock_offset of its clock;
  // else Refused, naming `peer` and the offset.
  virtual Status CheckClockOffset(Timestamp remote, std::string_view peer) const = 0;
  // Merges `records` received from `peer` by LWW (Replica::ApplyRemote).
  // Refused, with nothing changed, when any is beyond the clock offset or
  // they are more than Info().apply_records_max. `stale` says what a stale
  // live record stores (see ApplyResult).
  virtual Result<ApplyResult> ApplyPeerRecords(std::span<const KeyedRecord> records, uint64_t peer,
                                               StaleRecords stale) = 0;
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_SYNC_STORE_H_
