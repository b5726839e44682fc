// The expiry index's packed rows: the live records that have an expiry,
// grouped by expiry bucket (kExpiryBucketMs of expiries), many to a row.
//
// The grammar lives at the top of storage/expiry_rows.cc. A row is written
// once and then only deleted or replaced whole (replica/expiry_index.cc);
// its entries are not kept exact: an entry whose record was overwritten,
// deleted or purged stays until a purge rewrites its row, and two rows may
// hold the same entry. Readers check each entry against the record's
// current state (replica/expiry_index_internal.h).
#ifndef TIDEMAP_STORAGE_EXPIRY_ROWS_INTERNAL_H_
#define TIDEMAP_STORAGE_EXPIRY_ROWS_INTERNAL_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>

namespace tidemap::rows {

// The family of the packed expiry rows. (The version 4 expiry queue, one
// row per record, used kExpiryPrefix 'x'; only the migration reads it.)
inline constexpr char kExpiryRowPrefix = 'e';

// An expiry bucket spans 2^kExpiryBucketShift ms of expiries.
inline constexpr uint32_t kExpiryBucketShift = 10;
inline constexpr uint64_t kExpiryBucketMs = uint64_t{1} << kExpiryBucketShift;
constexpr uint64_t ExpiryBucketOf(uint64_t expiry_ms) { return expiry_ms >> kExpiryBucketShift; }
constexpr uint64_t ExpiryBucketStart(uint64_t bucket) { return bucket << kExpiryBucketShift; }

// A row holds at most this many entries, and is cut after the entry that
// takes its encoded size to kExpiryRowBytesMax or past it.
inline constexpr size_t kExpiryRowEntriesMax = 1'000;
inline constexpr size_t kExpiryRowBytesMax = size_t{256} << 10;

// One live record with an expiry: the version and expiry it was stored
// with, and the oplog seq under which it won here (a purge waits for every
// peer to acknowledge it).
struct ExpiryEntry {
  uint64_t expiry_ms = 0;
  Version version;
  uint64_t seq = 0;
  std::string map, key;
};
// The same, with views (into an arena or a row being encoded).
struct ExpiryEntryRef {
  uint64_t expiry_ms = 0;
  Version version;
  uint64_t seq = 0;
  std::string_view map, key;
};
inline ExpiryEntryRef RefOf(const ExpiryEntry& e) {
  return ExpiryEntryRef{e.expiry_ms, e.version, e.seq, e.map, e.key};
}

// Entries order by expiry, then version, map and key (equal entries are
// adjacent once sorted, so readers dedupe them).
bool ExpiryEntryLess(const ExpiryEntry& a, const ExpiryEntry& b);
bool SameExpiryEntry(const ExpiryEntry& a, const ExpiryEntry& b);

// The key of row `id` of `bucket`. Ids are unique over the database (the
// expiry index draws them), so rows of one bucket never collide.
std::string ExpiryRowKey(uint64_t bucket, uint64_t id);
// The first row key of `bucket` (rows of later buckets follow it).
std::string ExpiryRowSeek(uint64_t bucket);
// Splits a row key; false when it is not one.
bool ParseExpiryRowKey(std::string_view row_key, uint64_t* bucket, uint64_t* id);

// Encodes the entries of one row. REQUIRES: every entry is in `bucket`, in
// expiry order, at most kExpiryRowEntriesMax of them.
std::string EncodeExpiryRow(std::string_view row_key, uint64_t bucket,
                            std::span<const ExpiryEntryRef> entries);
// Decodes a row, appending its entries to `*out`; Corruption (naming the
// row) for a bad checksum, a malformed entry or one outside the bucket.
Status DecodeExpiryRow(std::string_view row_key, std::string_view bytes,
                       std::vector<ExpiryEntry>* out);

// The version 4 expiry queue row key ('x' expiry_ms hlc origin lp(map) key
// -> seq), for the migration to version 5 and its test only.
std::string LegacyExpiryQueueKey(uint64_t expiry_ms, const Version& version, std::string_view map,
                                 std::string_view key);
bool ParseLegacyExpiryQueueKey(std::string_view row_key, uint64_t* expiry_ms, Version* version,
                               std::string_view* map, std::string_view* key);

}  // namespace tidemap::rows

#endif  // TIDEMAP_STORAGE_EXPIRY_ROWS_INTERNAL_H_
