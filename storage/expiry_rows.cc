// Packed expiry rows. Integers are big-endian fixed width unless marked
// varint; "lp(x)" is a varint length followed by the bytes of x.
//
//   expiry row key   := 'e' bucket:u64 id:u64
//       bucket       := expiry_ms >> 10: the row's entries expire in
//                       [bucket << 10, (bucket + 1) << 10)
//       id           := unique over the database (meta 'expiry_row_id' holds
//                       the next one), so a bucket has any number of rows
//   expiry row value := format:u8 count:varint entry{count} checksum:u64
//       format       := 1
//       count        := 1..1000
//       entry        := expiry_delta:varint hlc:u64 origin:u64 seq:varint
//                       lp(map) lp(key)
//       expiry_delta := the entry's expiry_ms minus the previous entry's (the
//                       first entry's: minus bucket << 10); entries are in
//                       expiry order, every one inside the bucket
//       seq          := the oplog seq under which the record won here (0:
//                       loaded from a snapshot, nothing to wait for)
//       checksum     := XXH3-64 of every byte before it, seeded with the
//                       XXH3-64 of the row key (a row moved under another
//                       key fails too)
//   An entry names a live record with an expiry, at the version it was
//   stored with. Entries are not deleted with their record: an entry is
//   valid while the record's key-hash index row still holds that version
//   and expiry, and readers skip the others (replica/expiry_index.cc).
//
//   version 4 queue  := 'x' expiry_ms:u64 hlc:u64 origin:u64 lp(map) key -> seq:u64
//       one row per record; read only by the migration to version 5
#include <tidemap/storage/expiry_rows_internal.h>

#include <tuple>

#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap::rows {

namespace {

constexpr uint8_t kExpiryRowFormat = 1;
constexpr size_t kChecksumBytes = 8;

uint64_t RowChecksum(std::string_view row_key, std::string_view body) {
  return Hash64(body, Hash64(row_key));
}

// Decodes one entry after `prev_ms`; false when malformed.
bool GetEntry(std::string_view* in, uint64_t prev_ms, ExpiryEntry* e) {
  uint64_t delta = 0, hlc = 0, origin = 0;
  std::string_view map, key;
  if (!GetVarint64(in, &delta) || !GetFixed64BE(in, &hlc) || !GetFixed64BE(in, &origin) ||
      !GetVarint64(in, &e->seq) || !GetLengthPrefixed(in, &map) || !GetLengthPrefixed(in, &key)) {
    return false;
  }
  e->expiry_ms = prev_ms + delta;
  e->version = Version{Timestamp{hlc}, origin};
  e->map.assign(map);
  e->key.assign(key);
  return e->expiry_ms >= prev_ms;  // no wrap-around
}

}  // namespace

bool ExpiryEntryLess(const ExpiryEntry& a, const ExpiryEntry& b) {
  return std::tie(a.expiry_ms, a.version, a.map, a.key) <
         std::tie(b.expiry_ms, b.version, b.map, b.key);
}

bool SameExpiryEntry(const ExpiryEntry& a, const ExpiryEntry& b) {
  return a.expiry_ms == b.expiry_ms && a.version == b.version && a.map == b.map && a.key == b.key;
}

std::string ExpiryRowSeek(uint64_t bucket) {
  std::string out(1, kExpiryRowPrefix);
  PutFixed64BE(&out, bucket);
  return out;
}

std::string ExpiryRowKey(uint64_t bucket, uint64_t id) {
  std::string out = ExpiryRowSeek(bucket);
  PutFixed64BE(&out, id);
  return out;
}

bool ParseExpiryRowKey(std::string_view row_key, uint64_t* bucket, uint64_t* id) {
  if (row_key.size() != 17 || row_key[0] != kExpiryRowPrefix) return false;
  row_key.remove_prefix(1);
  return GetFixed64BE(&row_key, bucket) && GetFixed64BE(&row_key, id);
}

std::string EncodeExpiryRow(std::string_view row_key, uint64_t bucket,
                            std::span<const ExpiryEntryRef> entries) {
  std::string out(1, static_cast<char>(kExpiryRowFormat));
  PutVarint64(&out, entries.size());
  uint64_t prev_ms = ExpiryBucketStart(bucket);
  for (const ExpiryEntryRef& e : entries) {
    PutVarint64(&out, e.expiry_ms - prev_ms);
    PutFixed64BE(&out, e.version.hlc.raw);
    PutFixed64BE(&out, e.version.origin);
    PutVarint64(&out, e.seq);
    PutLengthPrefixed(&out, e.map);
    PutLengthPrefixed(&out, e.key);
    prev_ms = e.expiry_ms;
  }
  PutFixed64BE(&out, RowChecksum(row_key, out));
  return out;
}

Status DecodeExpiryRow(std::string_view row_key, std::string_view bytes,
                       std::vector<ExpiryEntry>* out) {
  uint64_t bucket = 0, id = 0;
  const auto corrupt = [&](std::string_view why) {
    return Status::Corruption("expiry row " + Printable(row_key) + ": " + std::string(why));
  };
  if (!ParseExpiryRowKey(row_key, &bucket, &id)) return corrupt("malformed key");
  if (bytes.size() < 1 + kChecksumBytes) return corrupt("too short");
  std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  if (DecodeFixed64BE(bytes.data() + body.size()) != RowChecksum(row_key, body)) {
    return corrupt("checksum mismatch");
  }
  uint8_t format = 0;
  uint64_t count = 0;
  if (!GetByte(&body, &format) || format != kExpiryRowFormat) return corrupt("unknown format");
  if (!GetVarint64(&body, &count) || count == 0 || count > kExpiryRowEntriesMax) {
    return corrupt("bad entry count");
  }
  uint64_t prev_ms = ExpiryBucketStart(bucket);
  for (uint64_t i = 0; i < count; ++i) {
    ExpiryEntry e;
    if (!GetEntry(&body, prev_ms, &e) || ExpiryBucketOf(e.expiry_ms) != bucket) {
      return corrupt("malformed entry " + std::to_string(i));
    }
    prev_ms = e.expiry_ms;
    out->push_back(std::move(e));
  }
  if (!body.empty()) return corrupt("trailing bytes");
  return Status::Ok();
}

std::string LegacyExpiryQueueKey(uint64_t expiry_ms, const Version& version, std::string_view map,
                                 std::string_view key) {
  std::string out(1, kExpiryPrefix);
  PutFixed64BE(&out, expiry_ms);
  PutFixed64BE(&out, version.hlc.raw);
  PutFixed64BE(&out, version.origin);
  PutLengthPrefixed(&out, map);
  out.append(key);
  return out;
}

bool ParseLegacyExpiryQueueKey(std::string_view row_key, uint64_t* expiry_ms, Version* version,
                               std::string_view* map, std::string_view* key) {
  if (row_key.empty() || row_key[0] != kExpiryPrefix) return false;
  row_key.remove_prefix(1);
  uint64_t hlc = 0, origin = 0;
  if (!GetFixed64BE(&row_key, expiry_ms) || !GetFixed64BE(&row_key, &hlc) ||
      !GetFixed64BE(&row_key, &origin) || !GetLengthPrefixed(&row_key, map)) {
    return false;
  }
  *version = Version{Timestamp{hlc}, origin};
  *key = row_key;
  return true;
}

}  // namespace tidemap::rows
