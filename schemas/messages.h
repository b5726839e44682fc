// The sync protocol's messages as plain C++ values: what the sans-I/O sync
// core (replica/sync.h) consumes and produces. schemas/codec.h turns them into
// Cap'n Proto frames and back (schemas/sync.capnp); byte counts of the sync
// benchmark are of those encoded frames.
//
// One session runs over one connection and carries both directions. Every
// message of a session direction has the next `seq` (1, 2, ...); a gap, a
// repeat or a reordering closes the session, and a new one starts from the
// persisted cursors. So a lost, duplicated or reordered message never
// corrupts state: at worst it costs a reconnect.
#ifndef TIDEMAP_SCHEMAS_MESSAGES_H_
#define TIDEMAP_SCHEMAS_MESSAGES_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/hlc/hlc.h>

namespace tidemap {

// The sync protocol's version, sent in Hello (the handshake before it has
// its own, net::kHandshakeVersion). 2: records may carry an expiry
// (per-record TTL, KeyedRecord::expiry_ms), which a version 1 peer would
// drop and so keep the record forever; peers of another version are refused.
inline constexpr uint32_t kSyncProtocolVersion = 2;
// The first version with per-record TTL.
inline constexpr uint32_t kSyncProtocolVersionTtl = 2;

// One key's version in full, with the map and key it belongs to (tombstones
// included): as a replica reads it from its store, and as it crosses between
// replicas.
struct KeyedRecord {
  std::string map;
  std::string key;
  std::string value;  // empty for a tombstone
  Version version;
  bool tombstone = false;
  // Per-record TTL: the absolute expiry the writer computed (ms since the
  // Unix epoch, HLC physical time), carried with the version; 0: never
  // expires. Always 0 for a tombstone.
  uint64_t expiry_ms = 0;

  friend bool operator==(const KeyedRecord&, const KeyedRecord&) = default;
};

namespace msg {

// First message of each side. Who sent it is known from the authenticated
// connection, so it carries only what the receiver acts on.
struct Hello {
  uint32_t protocol_version = kSyncProtocolVersion;
  Digest128 merkle_root;          // equal roots: nothing to repair
  uint32_t tree_fanout_bits = 0;  // both sides must use the same tree shape (< 2^16)
  uint32_t tree_depth = 0;        // (< 2^16)
  // The sender's database incarnation (random, never 0 from a replica) and
  // its highest oplog seq: a receiver that stored another incarnation for
  // this node, or acknowledged a higher seq of it, knows its database was
  // wiped, replaced or restored from a backup.
  uint64_t incarnation = 0;
  uint64_t last_seq = 0;
  // The sender's tombstone GC watermark (zero: nothing purged).
  Version gc_watermark;
  // The sender's clock (ms since the Unix epoch) when it made the hello: the
  // receiver's estimate of their clock offset, for status (0: not given).
  uint64_t physical_ms = 0;
  // The sender's records (live and tombstones): the receiver's estimate of how
  // far a bootstrap has got, for status.
  uint64_t records = 0;
  // What the sender holds of the receiver's oplog: the receiver's
  // incarnation its cursor is about (0: none) and the receiver's highest seq
  // it acknowledged. A receiver whose database holds less lost writes.
  uint64_t held_incarnation = 0;
  uint64_t held_seq = 0;
  friend bool operator==(const Hello&, const Hello&) = default;
};

// Oplog tail streaming: the sender's changes with seq in [first_seq, last_seq]
// (rows that were superseded, or originated at the receiver, are left out, so
// `records` may hold fewer entries than the range).
struct RecordBatch {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  std::vector<KeyedRecord> records;
  friend bool operator==(const RecordBatch&, const RecordBatch&) = default;
};

// The receiver stored every record of the batch ending at last_seq.
struct BatchAck {
  uint64_t last_seq = 0;
  friend bool operator==(const BatchAck&, const BatchAck&) = default;
};

// The receiver refused the batch (e.g. a clock too far ahead); the sender
// keeps its data and retries later. `reason` is shown in status.
// `quota_exceeded`: the receiver is out of storage (its quota reached or its
// disk full) and applies nothing from any peer until space is freed.
struct BatchRefused {
  uint64_t last_seq = 0;
  std::string reason;
  bool quota_exceeded = false;
  friend bool operator==(const BatchRefused&, const BatchRefused&) = default;
};

// Tree diff, one descent step: for each parent node at `level`, the 64-bit
// digests (the low half of each 128-bit node digest) of its `fanout`
// children, in order. diff_id 0 is never used. `last` is false on all but the
// final chunk of a step.
struct TreeNodes {
  uint64_t diff_id = 0;
  uint32_t level = 0;
  std::vector<uint32_t> parents;
  std::vector<uint64_t> child_digests;  // parents.size() * fanout entries
  bool last = true;
  friend bool operator==(const TreeNodes&, const TreeNodes&) = default;
};

// One entry of a bucket summary: a stored key's hash and version.
struct SummaryEntry {
  uint64_t key_hash = 0;
  Version version;
  bool tombstone = false;
  friend bool operator==(const SummaryEntry&, const SummaryEntry&) = default;
};

// Tree diff, bottom: the sender's (key_hash, version) entries of each listed
// bucket. `counts[i]` entries belong to `buckets[i]`, in key_hash order.
struct BucketSummaries {
  uint64_t diff_id = 0;
  std::vector<uint32_t> buckets;
  std::vector<uint32_t> counts;
  std::vector<SummaryEntry> entries;
  bool last = true;
  friend bool operator==(const BucketSummaries&, const BucketSummaries&) = default;
};

// Tree diff, transfer: records the other side lacks or holds older, and the
// key hashes the sender wants in return (on the last chunks of a step, after
// every record; the receiver gathers them until `last`).
struct DiffRecords {
  uint64_t diff_id = 0;
  std::vector<KeyedRecord> records;
  std::vector<uint64_t> requests;
  bool last = true;
  friend bool operator==(const DiffRecords&, const DiffRecords&) = default;
};

// Tree diff, end: the sender applied everything it received in this diff and
// owes nothing more. After it both sides are repaired as of the diff's start.
struct DiffEnd {
  uint64_t diff_id = 0;
  friend bool operator==(const DiffEnd&, const DiffEnd&) = default;
};

// Resync after a database change: the side that found the other's database
// changed (another incarnation, or back in time) sends every record it holds
// whose version's origin is `origin`, the changed node; that node applies
// them, then answers with every record it holds of its own origin. A node that
// lost its database may issue a version again that its former self issued,
// with other bytes, which no tree diff sees (the digests cover versions, not
// values); both sides then hold both and the tie rule picks one. `last` is
// false on all but the final chunk of each direction.
struct OriginRecords {
  uint64_t origin = 0;
  std::vector<KeyedRecord> records;
  bool last = true;
  friend bool operator==(const OriginRecords&, const OriginRecords&) = default;
};

// The sender closes the session and says why (e.g. the receiver's state
// predates the sender's GC watermark). The receiver closes it too, with
// `reason` as its error.
struct Goodbye {
  std::string reason;
  friend bool operator==(const Goodbye&, const Goodbye&) = default;
};

using Body = std::variant<Hello, RecordBatch, BatchAck, BatchRefused, TreeNodes, BucketSummaries,
                          DiffRecords, DiffEnd, OriginRecords, Goodbye>;

struct Message {
  uint64_t seq = 0;  // per session and direction, from 1
  Body body;
  friend bool operator==(const Message&, const Message&) = default;
};

// "hello", "record_batch", ... for logs and errors.
const char* BodyName(const Body& body);

}  // namespace msg
}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_MESSAGES_H_
