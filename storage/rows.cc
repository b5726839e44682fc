// Row formats of the replica's LevelDB keyspace.
//
// Integers are big-endian fixed width unless marked varint; "lp(x)" is a
// varint length followed by the bytes of x.
//
//   record key   := 'r' lp(map) key
//   record value := flags:u8 hlc:u64 origin:u64 [expiry_ms:u64] checksum:u64 value
//       flags    := bit0 tombstone | bit1 has expiry | bit2 sealed | bits 3..7 zero
//                   (reserved: signatures); a set reserved bit is corruption
//       checksum := H(value, H(header, H(record key))), H(x, seed) = XXH3-64 of x
//                   with seed, header = every byte before the checksum;
//                   binding the key means a row moved under another key fails too
//       value    := the bytes as written, or (bit2 set: encryption at rest, never
//                   on a tombstone) key_id:u8 nonce ciphertext tag, the AEAD
//                   sealing of the bytes (storage/value_cipher.h) with associated
//                   data header || record key: map, key, version and expiry, so a
//                   value moved to another key or version fails to open even when
//                   its checksum was recomputed
//   oplog key    := 'o' last_seq:u64          (a packed row: see oplog/oplog.cc)
//   merkle key   := 'k' page:u32  ->  count:varint leaf{count}
//       page     := buckets [page * 64, page * 64 + count) (kLeavesPerPage = 64;
//                   count is 64 but in the last page of a tree of fewer leaves)
//       leaf     := digest:16 live:varint tombstones:varint
//       digest   := leaf digest hi:u64 lo:u64 (MerkleTree::EncodeDigest, see merkle/)
//       live, tombstones := the bucket's live records and tombstones
//       Written by checkpoints only (see replica/replica.cc), so a row is exact
//       as of the checkpoint seq in meta 'state', not necessarily as of now
//   index key    := 'h' key_hash:u64 lp(map) key
//                         ->  hlc:u64 origin:u64 flags:u8 [expiry_ms:u64]
//       key_hash := merkle KeyHash(map, key); one row per stored key, tombstones
//                   included, rewritten with its record in the same batch
//       flags    := as the record's (bit0 tombstone, bit1 has expiry)
//   gc key       := 'g' hlc:u64 origin:u64 lp(map) key  ->  seq:u64
//       the tombstone queue: one row per stored tombstone, in version order,
//       with the oplog seq under which it won here; written and deleted with
//       its record (a live version replacing the tombstone deletes the row),
//       so tombstone GC reads the oldest tombstones without a full scan
//   expiry row   := 'e' bucket:u64 id:u64  (packed: see storage/expiry_rows.cc)
//       the expiry index: the stored live records that have an expiry, by
//       expiry bucket, many to a row, so the expiry sweep and the GC read
//       the records due first without a full scan
//   gc watermark := 'w' bucket:u32  ->  hlc:u64 origin:u64
//       per Merkle bucket, the greatest version of a tombstone of that bucket
//       purged here (no row: none purged); written with the purge
//   meta key     := 'm' name
//       schema_version -> u64   node_id -> u64   hlc_bound -> u64 (Timestamp raw)
//       incarnation -> u64: random, non-zero, drawn when the database is
//                created and never changed: a wiped or replaced database gets
//                another one, which is how peers notice (replica/sync.cc)
//       state -> checkpoint_seq:u64: every leaf row is exact as of this seq;
//                oplog entries after it name every key changed since (rewritten
//                by each checkpoint, in the batch of the group it covers)
//       gc_watermark -> hlc:u64 origin:u64: the greatest version of a purged
//                tombstone over every bucket (absent: none purged)
//       gc_purged -> u64: tombstones (and expired records) purged so far
//       expire_notified -> u64: ms; subscribers were told of every record
//                expiring at or before it (absent: 0)
//       expiry_row_id -> u64: the id the next expiry row gets (absent: 1)
//       peer/<node id:u64> -> acked:u64 incarnation:u64 received:u64
//                (oplog/oplog.cc)
//       clear/<map> -> hlc:u64 origin:u64 done:u8 after
//                a cleared map: the version of its clear (the map's record
//                at the reserved empty key, a tombstone), whether every
//                record older than it was removed (done 1) and else the key
//                after which the removal resumes (the rest of the value;
//                empty: the map's first key); written with the clear record
//                and by each removal batch (replica/clear.cc)
#include <tidemap/storage/rows_internal.h>

#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap::rows {

namespace {

constexpr uint8_t kFlagTombstone = 1 << 0;
constexpr uint8_t kFlagExpiry = 1 << 1;
constexpr uint8_t kFlagSealed = 1 << 2;
constexpr uint8_t kKnownFlags = kFlagTombstone | kFlagExpiry | kFlagSealed;
constexpr uint8_t kIndexFlags = kFlagTombstone | kFlagExpiry;
constexpr size_t kChecksumBytes = 8;

// Chained one-shot hashes (each seeds the next): no streaming state to
// allocate on every read and write.
uint64_t RecordChecksum(std::string_view row_key, std::string_view header, std::string_view value) {
  return Hash64(value, Hash64(header, Hash64(row_key)));
}

std::string DescribeRowKey(std::string_view row_key) {
  std::string_view map, key;
  if (ParseRecordKey(row_key, &map, &key)) return DescribeKey(map, key);
  return "row " + Printable(row_key);
}

// The associated data of a sealed value: its record's header and row key.
void SealAd(std::string* ad, std::string_view header, std::string_view row_key) {
  ad->reserve(header.size() + row_key.size());
  ad->assign(header);
  ad->append(row_key);
}

// A parsed record: views into the row's bytes.
struct ParsedRecord {
  std::string_view header;  // every byte before the checksum
  std::string_view value;   // as stored (sealed when `sealed`)
  bool sealed = false;
};

// Parses and verifies a record; `parsed`, when given, receives views into `bytes`.
Result<RecordMeta> ParseRecord(std::string_view row_key, std::string_view bytes,
                               std::optional<uint64_t>* expiry, ParsedRecord* parsed) {
  std::string_view in = bytes;
  uint8_t flags = 0;
  uint64_t hlc = 0, origin = 0, checksum = 0;
  auto corrupt = [&](std::string_view why) {
    return Status::Corruption("record " + DescribeRowKey(row_key) + ": " + std::string(why));
  };
  if (!GetByte(&in, &flags) || !GetFixed64BE(&in, &hlc) || !GetFixed64BE(&in, &origin)) {
    return corrupt("truncated header");
  }
  if ((flags & ~kKnownFlags) != 0) return corrupt("unknown flags");
  std::optional<uint64_t> exp;
  if ((flags & kFlagExpiry) != 0) {
    uint64_t e = 0;
    if (!GetFixed64BE(&in, &e)) return corrupt("truncated header");
    exp = e;
  }
  const size_t header_bytes = bytes.size() - in.size();
  if (!GetFixed64BE(&in, &checksum)) return corrupt("truncated header");
  if (RecordChecksum(row_key, bytes.substr(0, header_bytes), in) != checksum) {
    return corrupt("checksum mismatch");
  }
  if ((flags & kFlagTombstone) != 0 && (!in.empty() || (flags & kFlagSealed) != 0)) {
    return corrupt("tombstone with a value");
  }
  if (expiry != nullptr) *expiry = exp;
  if (parsed != nullptr) {
    *parsed = ParsedRecord{bytes.substr(0, header_bytes), in, (flags & kFlagSealed) != 0};
  }
  return RecordMeta{Version{Timestamp{hlc}, origin}, (flags & kFlagTombstone) != 0,
                    exp.value_or(0)};
}

}  // namespace

std::string RecordMapPrefix(std::string_view map, std::string_view key_prefix) {
  std::string out;
  RecordKeyInto(&out, map, key_prefix);
  return out;
}

std::string RecordKey(std::string_view map, std::string_view key) {
  return RecordMapPrefix(map, key);
}

void RecordKeyInto(std::string* out, std::string_view map, std::string_view key) {
  out->clear();
  out->reserve(2 + map.size() + key.size());
  out->push_back(kRecordPrefix);
  PutLengthPrefixed(out, map);
  out->append(key);
}

bool ParseRecordKey(std::string_view row_key, std::string_view* map, std::string_view* key) {
  if (row_key.empty() || row_key[0] != kRecordPrefix) return false;
  row_key.remove_prefix(1);
  if (!GetLengthPrefixed(&row_key, map)) return false;
  *key = row_key;
  return true;
}

Result<RecordKeyParts> SplitRecordKey(std::string_view row_key) {
  RecordKeyParts parts;
  if (!ParseRecordKey(row_key, &parts.map, &parts.key)) {
    return Status::Corruption("malformed record key " + Printable(row_key));
  }
  return parts;
}

std::string EncodeRecord(std::string_view row_key, const RecordValue& record,
                         const ValueCipher* cipher) {
  std::string out;
  EncodeRecordInto(&out, row_key, RecordMeta{record.version, record.tombstone, 0}, record.expiry_ms,
                   record.value, cipher);
  return out;
}

void EncodeRecordInto(std::string* out, std::string_view row_key, const RecordMeta& meta,
                      std::optional<uint64_t> expiry_ms, std::string_view value,
                      const ValueCipher* cipher) {
  const bool seal = cipher != nullptr && !meta.tombstone;
  out->clear();
  out->reserve(1 + 8 + 8 + 8 + kChecksumBytes + value.size() + (seal ? cipher->overhead() : 0));
  uint8_t flags = 0;
  if (meta.tombstone) flags |= kFlagTombstone;
  if (expiry_ms.has_value()) flags |= kFlagExpiry;
  if (seal) flags |= kFlagSealed;
  out->push_back(static_cast<char>(flags));
  PutFixed64BE(out, meta.version.hlc.raw);
  PutFixed64BE(out, meta.version.origin);
  if (expiry_ms.has_value()) PutFixed64BE(out, *expiry_ms);
  if (meta.tombstone) value = std::string_view();
  if (!seal) {
    PutFixed64BE(out, RecordChecksum(row_key, *out, value));
    out->append(value);
    return;
  }
  // The sealed bytes go after a checksum placeholder, filled in once known.
  const size_t header_bytes = out->size();
  thread_local std::string ad;
  SealAd(&ad, *out, row_key);
  out->append(kChecksumBytes, '\0');
  cipher->Seal(ad, value, out);
  const std::string_view stored = std::string_view(*out).substr(header_bytes + kChecksumBytes);
  std::string checksum;
  PutFixed64BE(&checksum,
               RecordChecksum(row_key, std::string_view(*out).substr(0, header_bytes), stored));
  out->replace(header_bytes, kChecksumBytes, checksum);
}

namespace {

// Opens the sealed value of a parsed record into `*out`: Unavailable
// without a cipher, Corruption (naming the record) when it does not open.
Status OpenSealedValue(std::string_view row_key, const ParsedRecord& parsed,
                       const ValueCipher* cipher, std::string* out) {
  if (cipher == nullptr) {
    return Status::Unavailable("record " + DescribeRowKey(row_key) +
                               ": the value is encrypted at rest and no key was given");
  }
  thread_local std::string ad;
  SealAd(&ad, parsed.header, row_key);
  const Status opened = cipher->Open(ad, parsed.value, out);
  if (!opened.ok()) {
    return Status::Corruption("record " + DescribeRowKey(row_key) + ": " + opened.message());
  }
  return Status::Ok();
}

}  // namespace

Result<RecordValue> DecodeRecord(std::string_view row_key, std::string_view bytes,
                                 const ValueCipher* cipher) {
  std::optional<uint64_t> expiry;
  ParsedRecord parsed;
  auto meta = ParseRecord(row_key, bytes, &expiry, &parsed);
  if (!meta.ok()) return meta.status();
  RecordValue out;
  out.version = meta->version;
  out.tombstone = meta->tombstone;
  out.expiry_ms = expiry;
  if (!parsed.sealed) {
    out.value.assign(parsed.value);
    return out;
  }
  TIDEMAP_RETURN_IF_ERROR(OpenSealedValue(row_key, parsed, cipher, &out.value));
  return out;
}

Result<RecordMeta> DecodeRecordView(std::string_view row_key, std::string_view bytes,
                                    const ValueCipher* cipher, std::string* opened,
                                    std::string_view* value) {
  ParsedRecord parsed;
  TIDEMAP_ASSIGN_OR_RETURN(const RecordMeta meta, ParseRecord(row_key, bytes, nullptr, &parsed));
  if (!parsed.sealed) {
    *value = parsed.value;
    return meta;
  }
  TIDEMAP_RETURN_IF_ERROR(OpenSealedValue(row_key, parsed, cipher, opened));
  *value = *opened;
  return meta;
}

Result<uint8_t> RecordSealKeyId(std::string_view row_key, std::string_view bytes) {
  ParsedRecord parsed;
  TIDEMAP_RETURN_IF_ERROR(ParseRecord(row_key, bytes, nullptr, &parsed).status());
  if (!parsed.sealed) return uint8_t{0};
  const std::optional<uint8_t> id = ValueCipher::KeyIdOf(parsed.value);
  if (!id.has_value() || *id == 0) {
    return Status::Corruption("record " + DescribeRowKey(row_key) + ": sealed value has no key id");
  }
  return *id;
}

Result<RecordMeta> DecodeRecordMeta(std::string_view row_key, std::string_view bytes) {
  return ParseRecord(row_key, bytes, nullptr, nullptr);
}

std::string MerklePageKey(uint32_t page) {
  std::string out(1, kMerklePrefix);
  PutFixed32BE(&out, page);
  return out;
}

bool ParseMerklePageKey(std::string_view row_key, uint32_t* page) {
  if (row_key.size() != 5 || row_key[0] != kMerklePrefix) return false;
  *page = DecodeFixed32BE(row_key.data() + 1);
  return true;
}

std::string EncodeLeafPage(std::span<const LeafValue> leaves) {
  std::string out;
  out.reserve(1 + leaves.size() * (16 + 2 * 5));
  PutVarint64(&out, leaves.size());
  for (const LeafValue& leaf : leaves) {
    PutFixed64BE(&out, leaf.digest.hi);
    PutFixed64BE(&out, leaf.digest.lo);
    PutVarint64(&out, leaf.live);
    PutVarint64(&out, leaf.tombstones);
  }
  return out;
}

Result<std::vector<LeafValue>> DecodeLeafPage(std::string_view bytes) {
  uint64_t count = 0;
  if (!GetVarint64(&bytes, &count) || count > kLeavesPerPage) {
    return Status::Corruption("malformed Merkle page row");
  }
  std::vector<LeafValue> leaves(count);
  for (LeafValue& leaf : leaves) {
    if (!GetFixed64BE(&bytes, &leaf.digest.hi) || !GetFixed64BE(&bytes, &leaf.digest.lo) ||
        !GetVarint64(&bytes, &leaf.live) || !GetVarint64(&bytes, &leaf.tombstones)) {
      return Status::Corruption("malformed Merkle page row");
    }
  }
  if (!bytes.empty()) return Status::Corruption("malformed Merkle page row");
  return leaves;
}

std::string HashIndexPrefix(uint64_t key_hash) {
  std::string out(1, kHashIndexPrefix);
  PutFixed64BE(&out, key_hash);
  return out;
}

std::string HashIndexKey(uint64_t key_hash, std::string_view map, std::string_view key) {
  std::string out;
  HashIndexKeyInto(&out, key_hash, map, key);
  return out;
}

void HashIndexKeyInto(std::string* out, uint64_t key_hash, std::string_view map,
                      std::string_view key) {
  out->clear();
  out->reserve(1 + 8 + 1 + map.size() + key.size());
  out->push_back(kHashIndexPrefix);
  PutFixed64BE(out, key_hash);
  PutLengthPrefixed(out, map);
  out->append(key);
}

bool ParseHashIndexKey(std::string_view row_key, uint64_t* key_hash, std::string_view* map,
                       std::string_view* key) {
  if (row_key.empty() || row_key[0] != kHashIndexPrefix) return false;
  row_key.remove_prefix(1);
  if (!GetFixed64BE(&row_key, key_hash) || !GetLengthPrefixed(&row_key, map)) return false;
  *key = row_key;
  return true;
}

std::string EncodeHashIndexValue(const RecordMeta& meta) {
  std::string out;
  EncodeHashIndexValueInto(&out, meta);
  return out;
}

void EncodeHashIndexValueInto(std::string* out, const RecordMeta& meta) {
  out->clear();
  PutFixed64BE(out, meta.version.hlc.raw);
  PutFixed64BE(out, meta.version.origin);
  const uint8_t flags =
      (meta.tombstone ? kFlagTombstone : 0) | (meta.expiry_ms != 0 ? kFlagExpiry : 0);
  out->push_back(static_cast<char>(flags));
  if (meta.expiry_ms != 0) PutFixed64BE(out, meta.expiry_ms);
}

Result<RecordMeta> DecodeHashIndexValue(std::string_view bytes) {
  uint64_t hlc = 0, origin = 0, expiry = 0;
  uint8_t flags = 0;
  if (!GetFixed64BE(&bytes, &hlc) || !GetFixed64BE(&bytes, &origin) || !GetByte(&bytes, &flags) ||
      (flags & ~kIndexFlags) != 0 ||
      ((flags & kFlagExpiry) != 0 && (!GetFixed64BE(&bytes, &expiry) || expiry == 0)) ||
      !bytes.empty()) {
    return Status::Corruption("malformed key-hash index row");
  }
  return RecordMeta{Version{Timestamp{hlc}, origin}, (flags & kFlagTombstone) != 0, expiry};
}

std::string GcQueueKey(const Version& version, std::string_view map, std::string_view key) {
  std::string out(1, kGcPrefix);
  PutFixed64BE(&out, version.hlc.raw);
  PutFixed64BE(&out, version.origin);
  PutLengthPrefixed(&out, map);
  out.append(key);
  return out;
}

bool ParseGcQueueKey(std::string_view row_key, Version* version, std::string_view* map,
                     std::string_view* key) {
  if (row_key.empty() || row_key[0] != kGcPrefix) return false;
  row_key.remove_prefix(1);
  uint64_t hlc = 0, origin = 0;
  if (!GetFixed64BE(&row_key, &hlc) || !GetFixed64BE(&row_key, &origin) ||
      !GetLengthPrefixed(&row_key, map)) {
    return false;
  }
  *version = Version{Timestamp{hlc}, origin};
  *key = row_key;
  return true;
}

std::string GcWatermarkKey(uint32_t bucket) {
  std::string out(1, kGcWatermarkPrefix);
  PutFixed32BE(&out, bucket);
  return out;
}

bool ParseGcWatermarkKey(std::string_view row_key, uint32_t* bucket) {
  if (row_key.size() != 5 || row_key[0] != kGcWatermarkPrefix) return false;
  *bucket = DecodeFixed32BE(row_key.data() + 1);
  return true;
}

std::string MetaKey(std::string_view name) {
  std::string out(1, kMetaPrefix);
  out.append(name);
  return out;
}

std::string EncodeU64(uint64_t v) {
  std::string out;
  PutFixed64BE(&out, v);
  return out;
}

Result<uint64_t> DecodeU64(std::string_view bytes, std::string_view what) {
  uint64_t v = 0;
  if (bytes.size() != 8 || !GetFixed64BE(&bytes, &v)) {
    return Status::Corruption("meta " + std::string(what) + ": expected 8 bytes");
  }
  return v;
}

std::string EncodeVersion(const Version& v) {
  std::string out;
  PutFixed64BE(&out, v.hlc.raw);
  PutFixed64BE(&out, v.origin);
  return out;
}

Result<Version> DecodeVersion(std::string_view bytes, std::string_view what) {
  uint64_t hlc = 0, origin = 0;
  if (bytes.size() != 16 || !GetFixed64BE(&bytes, &hlc) || !GetFixed64BE(&bytes, &origin)) {
    return Status::Corruption("meta " + std::string(what) + ": expected 16 bytes");
  }
  return Version{Timestamp{hlc}, origin};
}

std::string ClearRowKey(std::string_view map) {
  std::string out = MetaKey(kMetaClearPrefix);
  out.append(map);
  return out;
}

bool ParseClearRowKey(std::string_view row_key, std::string_view* map) {
  const std::string prefix = MetaKey(kMetaClearPrefix);
  if (row_key.size() <= prefix.size() || row_key.substr(0, prefix.size()) != prefix) return false;
  *map = row_key.substr(prefix.size());
  return true;
}

std::string EncodeClearRow(const ClearRow& row) {
  std::string out = EncodeVersion(row.version);
  out.push_back(row.done ? '\x01' : '\x00');
  out.append(row.after);
  return out;
}

Result<ClearRow> DecodeClearRow(std::string_view bytes) {
  if (bytes.size() < 17 || static_cast<uint8_t>(bytes[16]) > 1) {
    return Status::Corruption("meta clear row: expected 17 bytes or more, done 0 or 1");
  }
  ClearRow row;
  TIDEMAP_ASSIGN_OR_RETURN(row.version, DecodeVersion(bytes.substr(0, 16), "clear version"));
  row.done = bytes[16] == 1;
  row.after.assign(bytes.substr(17));
  return row;
}

std::string DescribeKey(std::string_view map, std::string_view key) {
  return "map '" + Printable(map) + "', key '" + Printable(key) + "'";
}

}  // namespace tidemap::rows
