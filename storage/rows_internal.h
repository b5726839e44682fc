// Row keys and the record codec of the replica's LevelDB keyspace.
//
// The grammar of every row lives at the top of storage/rows.cc, where the rows
// are encoded. Other components that own a family (oplog/) encode their row
// values themselves but take their key prefix from here, so the families stay
// apart in one place.
#ifndef TIDEMAP_STORAGE_ROWS_INTERNAL_H_
#define TIDEMAP_STORAGE_ROWS_INTERNAL_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/hash.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>

namespace tidemap {
class ValueCipher;  // storage/value_cipher.h
}  // namespace tidemap

namespace tidemap::rows {

// One-byte family prefixes.
inline constexpr char kRecordPrefix = 'r';
inline constexpr char kOplogPrefix = 'o';
inline constexpr char kMerklePrefix = 'k';
inline constexpr char kHashIndexPrefix = 'h';
inline constexpr char kMetaPrefix = 'm';
inline constexpr char kGcPrefix = 'g';
inline constexpr char kGcWatermarkPrefix = 'w';
// The version 4 expiry queue (one row per record); a version 4 database is
// migrated to the packed rows of storage/expiry_rows_internal.h at open.
inline constexpr char kExpiryPrefix = 'x';

// The schema version this build writes and reads. 3: peer rows carry the
// peer's incarnation and received seq, the tombstone queue, the incarnation
// and GC meta rows. 4: packed oplog rows (one row per run of up to 256
// consecutive seqs of one commit, keyed by its last seq; oplog/oplog.cc) and
// Merkle leaves persisted 64 to a page row, so a version 3 database is refused.
// 5: the expiry index in packed rows by expiry bucket ('e',
// storage/expiry_rows.cc) instead of one 'x' row per record; a version 4
// database is migrated at open (replica/expiry_migration.cc).
inline constexpr uint64_t kSchemaVersion = 5;
// The one older version Open migrates instead of refusing.
inline constexpr uint64_t kSchemaVersionMigrated = 4;

// ---- records ----

// The key of a record row: prefix, map name, key. All keys of one map are
// contiguous and sorted by key bytes.
std::string RecordKey(std::string_view map, std::string_view key);
// Same, into `*out` (replacing its contents), for a write path that reuses a buffer.
void RecordKeyInto(std::string* out, std::string_view map, std::string_view key);
// The common prefix of every record row of `map` (whose keys start with `key_prefix`).
std::string RecordMapPrefix(std::string_view map, std::string_view key_prefix = {});
// Splits a record row key; false when it is not one.
bool ParseRecordKey(std::string_view row_key, std::string_view* map, std::string_view* key);
// A record row key's map and key (views into the row key).
struct RecordKeyParts {
  std::string_view map;
  std::string_view key;
};
// Splits a record row key read from the store; Corruption ("malformed record
// key ...", with the bytes) when it is not one.
Result<RecordKeyParts> SplitRecordKey(std::string_view row_key);

// What the replica stores about one key. `value` is empty for tombstones.
struct RecordValue {
  Version version;
  bool tombstone = false;
  // Per-record TTL: the absolute expiry (ms since the Unix epoch, HLC
  // physical time) the writer computed; nullopt: the record never expires.
  std::optional<uint64_t> expiry_ms;
  std::string value;
};

// The metadata of a record, without its value. `expiry_ms` is 0 when the
// record never expires (a writer never computes an expiry of 0).
struct RecordMeta {
  Version version;
  bool tombstone = false;
  uint64_t expiry_ms = 0;
};

// With a `cipher`, the value of a live record is sealed (encryption at rest);
// a tombstone has no value and is never sealed.
std::string EncodeRecord(std::string_view row_key, const RecordValue& record,
                         const ValueCipher* cipher = nullptr);
// Same, into `*out` (replacing its contents), from views.
void EncodeRecordInto(std::string* out, std::string_view row_key, const RecordMeta& meta,
                      std::optional<uint64_t> expiry_ms, std::string_view value,
                      const ValueCipher* cipher = nullptr);
// Verifies the checksum (bound to `row_key`, so a row copied under another key fails too)
// and opens a sealed value with `cipher`. Corruption names the map and key;
// a value that fails to open (tampered, moved to another key or version) is
// Corruption too. A sealed value without a `cipher` is Unavailable.
Result<RecordValue> DecodeRecord(std::string_view row_key, std::string_view bytes,
                                 const ValueCipher* cipher = nullptr);
// Same checks as DecodeRecord, without copying: `*value` views the stored
// value in `bytes`, or, when it is sealed, `*opened` (replaced by the value
// opened with `cipher`). The meta's expiry_ms is 0 when there is none.
Result<RecordMeta> DecodeRecordView(std::string_view row_key, std::string_view bytes,
                                    const ValueCipher* cipher, std::string* opened,
                                    std::string_view* value);
// The key id a record's value is sealed under (storage/value_cipher.h); 0
// when it is stored in the clear (a tombstone, or a replica without
// encryption). Verifies the checksum, opens nothing.
Result<uint8_t> RecordSealKeyId(std::string_view row_key, std::string_view bytes);
// Same check, without copying the value out.
Result<RecordMeta> DecodeRecordMeta(std::string_view row_key, std::string_view bytes);

// ---- Merkle leaves and the key-hash index ----

struct LeafValue {
  Digest128 digest;         // XOR of the item digests of the bucket's keys
  uint64_t live = 0;        // live records in the bucket
  uint64_t tombstones = 0;  // tombstones in the bucket
};

// Merkle leaves are persisted a page at a time: page p holds the digests and
// counts of buckets [p * kLeavesPerPage, (p + 1) * kLeavesPerPage), as of the
// last checkpoint (the seq in the meta state row). A checkpoint after random
// writes then inserts a thousand rows instead of every one of 65,536 leaves.
inline constexpr uint32_t kLeavesPerPage = 64;
// The page of leaf `bucket`; the pages of a tree of `leaf_count` leaves; and
// how many leaves page `page` of such a tree holds (kLeavesPerPage but in a
// last, partial page).
constexpr uint32_t LeafPageOf(uint32_t bucket) { return bucket / kLeavesPerPage; }
constexpr uint32_t LeafPageCount(uint32_t leaf_count) {
  return (leaf_count + kLeavesPerPage - 1) / kLeavesPerPage;
}
constexpr uint32_t LeavesInPage(uint32_t page, uint32_t leaf_count) {
  return std::min(kLeavesPerPage, leaf_count - page * kLeavesPerPage);
}
std::string MerklePageKey(uint32_t page);
// Splits a Merkle page row key; false when it is not one.
bool ParseMerklePageKey(std::string_view row_key, uint32_t* page);
// The leaves of one page, first bucket first (at most kLeavesPerPage).
std::string EncodeLeafPage(std::span<const LeafValue> leaves);
Result<std::vector<LeafValue>> DecodeLeafPage(std::string_view bytes);

// The key-hash index lists every stored key by KeyHash(map, key), so that a
// Merkle bucket (a contiguous key-hash range) is one range scan.
std::string HashIndexKey(uint64_t key_hash, std::string_view map, std::string_view key);
void HashIndexKeyInto(std::string* out, uint64_t key_hash, std::string_view map,
                      std::string_view key);
std::string HashIndexPrefix(uint64_t key_hash);
bool ParseHashIndexKey(std::string_view row_key, uint64_t* key_hash, std::string_view* map,
                       std::string_view* key);
std::string EncodeHashIndexValue(const RecordMeta& meta);
void EncodeHashIndexValueInto(std::string* out, const RecordMeta& meta);
Result<RecordMeta> DecodeHashIndexValue(std::string_view bytes);

// ---- the tombstone queue (tombstone GC) ----

// The queue row of the tombstone `version` of (map, key): rows sort by version.
std::string GcQueueKey(const Version& version, std::string_view map, std::string_view key);
// Splits a queue row key; false when it is not one.
bool ParseGcQueueKey(std::string_view row_key, Version* version, std::string_view* map,
                     std::string_view* key);

// The row of Merkle bucket `bucket`'s GC watermark (the greatest version of
// a tombstone of that bucket purged here); a bucket without one has none.
std::string GcWatermarkKey(uint32_t bucket);
bool ParseGcWatermarkKey(std::string_view row_key, uint32_t* bucket);

// ---- meta ----

std::string MetaKey(std::string_view name);
inline constexpr std::string_view kMetaSchemaVersion = "schema_version";
inline constexpr std::string_view kMetaNodeId = "node_id";
inline constexpr std::string_view kMetaHlcBound = "hlc_bound";
inline constexpr std::string_view kMetaState = "state";
inline constexpr std::string_view kMetaPeerPrefix = "peer/";
inline constexpr std::string_view kMetaIncarnation = "incarnation";
inline constexpr std::string_view kMetaGcWatermark = "gc_watermark";
inline constexpr std::string_view kMetaGcPurged = "gc_purged";
inline constexpr std::string_view kMetaExpireNotified = "expire_notified";
inline constexpr std::string_view kMetaExpiryRowId = "expiry_row_id";
inline constexpr std::string_view kMetaClearPrefix = "clear/";

// ---- map clears ----

// A map's clear (Replica::ClearMap) is its record at the reserved empty key
// (a tombstone whose version is the clear's); this meta row lists it, so
// Open finds every cleared map without a scan, with how far the removal of
// the records older than the clear got.
struct ClearRow {
  Version version;    // the clear's version
  bool done = false;  // every record older than it is removed
  std::string after;  // removal resumes after this key of the map (empty: at the start)
};
// The meta row key of `map`'s clear: MetaKey(kMetaClearPrefix + map).
std::string ClearRowKey(std::string_view map);
// Splits a clear row key; false when it is not one.
bool ParseClearRowKey(std::string_view row_key, std::string_view* map);
std::string EncodeClearRow(const ClearRow& row);
Result<ClearRow> DecodeClearRow(std::string_view bytes);

std::string EncodeU64(uint64_t v);
Result<uint64_t> DecodeU64(std::string_view bytes, std::string_view what);
std::string EncodeVersion(const Version& v);
Result<Version> DecodeVersion(std::string_view bytes, std::string_view what);

// "map 'orders', key 'k1'" for messages.
std::string DescribeKey(std::string_view map, std::string_view key);

}  // namespace tidemap::rows

#endif  // TIDEMAP_STORAGE_ROWS_INTERNAL_H_
