// The sync protocol's wire codec: msg::Message <-> a packed Cap'n Proto
// message of schemas/sync.capnp.
//
// Frame payload: the standard Cap'n Proto serialization (segment table, then
// the segments) with Cap'n Proto's packing (capnp::writePackedMessage).
// Encoding sizes the first segment from the message so that almost every
// frame is one segment (8 bytes of table, no far pointers). Packing saves
// little on the bulk of a sync (records are a blob, digests and summaries
// are random: 0-3%, tests/unit/codec_test.cc, CodecSizes.Report, prints the
// numbers) but nearly halves the small control messages, whose fixed-width
// fields are mostly zero bytes: a Hello (all that two replicas with equal
// trees exchange) packs from 112 bytes to about 60. Unpacking is bounded before it
// allocates: 2 packed bytes can stand for 256 zero words, so the segment
// table's sizes are read first and their total, unpacked, must be within
// frame_bytes_max too.
//
// Decoding never trusts the peer: the frame size is checked before anything
// is copied; Cap'n Proto reads through FlatArrayMessageReader with explicit
// traversal and nesting limits; every list length, and every count and length
// inside a blob, is checked against DecodeLimits and against the bytes left
// before a vector is reserved or bytes are copied; every protocol rule the
// codec can see is checked; Cap'n Proto's kj::Exception is caught here and
// returned as a Status.
//
// Record blob (RecordBatch.records, DiffRecords.records, OriginRecords.records)
// -----------------------------------------------------------------------------
// Records are nearly all the bytes of a catch-up. As a List(Record) (a struct
// of 3 data words and 3 Data pointers, each byte string padded to a word) a
// small record cost ~55 bytes beyond its own map+key+value+16 (its version).
// The blob shares map names and origins across the message and delta-codes
// the hlc. It is empty when there are no records; otherwise:
//
//   blob    := count:varint
//              n_maps:varint (len:varint byte{len}){n_maps}
//              n_origins:varint origin:fixed64le{n_origins}
//              record{count}
//   record  := flags:u8
//              [map_index:varint]                        if flags & 2
//              key_len:varint byte{key_len}
//              [value_len:varint byte{value_len}]        unless flags & 1
//              hlc:varint
//              [origin_index:varint]                     if flags & 4
//   nothing follows the last record.
//
//   flags          bit 0: tombstone; no value follows, so a tombstone with a
//                  value cannot be written. Bit 1: a map index follows. Bit 2:
//                  an origin index follows. Bits 3-7 are zero.
//   map table      the distinct map names in order of first use,
//                  1 <= n_maps <= count.
//   origin table   the distinct origins in order of first use,
//                  1 <= n_origins <= count.
//   map_index      into the map table; when absent, the previous record's
//                  (0 for the first record). The encoder writes it only when it
//                  changes, so records of one map pay nothing for it.
//   origin_index   likewise, into the origin table.
//   hlc            the first record's Timestamp.raw; after it, the zigzag
//                  encoding of (hlc - the previous record's hlc) taken modulo
//                  2^64 as a signed 64-bit value. A batch in oplog order has
//                  hlc rising by small steps: 1 byte a record within a
//                  millisecond, 3 across one. Any order still round-trips.
//
// varint is LEB128 (base/coding.h); zigzag maps 0, -1, 1, -2 ... to 0, 1, 2,
// 3 .... A record takes at least 3 bytes (flags, key_len, hlc), so a count the
// bytes cannot hold is refused before anything is reserved (records_max is
// checked before that). Keys and values are copied out of the blob and so are
// bounded by it, but a map name is copied into every record that uses it:
// DecodeLimits::record_bytes_max bounds the bytes of map, key and value of all
// records together, checked before each record is copied. The decoded message
// is thus bounded by records_max records of at most record_bytes_max bytes.
//
// Sizes of whole frames (CodecSizes.Report), against the records' own bytes,
// map + key + value + 16 (the version): 1000 records of map "m", 16-byte keys,
// 15-byte values, one origin, hlc rising by small steps (the sync benchmark's
// catch-up) take 35.3 bytes a record, 0.74x their own 48 bytes (3.3 bytes
// beyond map+key+value; a List(Record) took 88, 1.83x). With a 5-byte map,
// 16-byte keys, 100-byte random values and a new millisecond each: 0.89x
// (1.1 beyond map+key+value, was 55.1). Records in key order with hlc
// anywhere within three hours and three origins (a diff's transfer): 0.85x.
//
// Expiry blob (RecordBatch.expiries, DiffRecords.expiries, OriginRecords.expiries)
// ---------------------------------------------------------------------------------
// Per-record TTL: the expiries of the records of the message's record blob
// that have one, in a field of its own so that the record blob's grammar
// stays as it was and a message without TTL'd records pays only a null
// pointer. Empty (null) when no record has an expiry; otherwise:
//
//   blob   := entry{1..count}
//   entry  := gap:varint expiry_ms:varint
//
//   gap        the record's index minus (the previous entry's index + 1), the
//              first entry's previous index taken as -1: indices strictly rise
//              and stay below the record count.
//   expiry_ms  non-zero, ms since the Unix epoch; a tombstone has none.
//
// A TTL'd record costs 7 to 8 bytes more (a gap of 1 byte, an expiry of 6).
//
// BucketSummaries.entries blob
// ----------------------------
// Summary entries dominate the bytes of a tree diff, so they get their own
// bit-packed encoding rather than a List(struct) (which would cost 32 bytes an
// entry). The blob is empty when there are no entries; otherwise:
//
//   blob        := count:varint n_origins:varint origin:fixed64le{n_origins}
//                  phys_base:varint
//                  first_kh_bits:u8 kh_bits:u8 phys_bits:u8 logical_bits:u8
//                  entry{count} padding
//   entry       := kh_delta:(first_kh_bits | kh_bits)
//                  phys_offset:phys_bits
//                  [has_logical:1 [logical:logical_bits]]   only if logical_bits > 0
//                  origin_index:origin_bits
//                  tombstone:1
//   padding     := zero bits up to the next byte boundary; nothing follows
//
// varint is LEB128 (base/coding.h). Bit fields are written least significant
// bit first, filling each byte from its least significant bit.
//
//   count          entries in the blob; must equal the sum of `counts`.
//   origin table   the distinct origins in order of first use, 1 <= n_origins
//                  <= count; origin_bits is the bit width of n_origins - 1
//                  (0 when there is one origin, 2 for up to four).
//   kh_delta       key_hash minus the previous entry's key_hash, modulo 2^64
//                  (the first entry's previous is 0). The first entry of each
//                  bucket (buckets taken from `counts`, skipping zeros) uses
//                  first_kh_bits, the others kh_bits: within a bucket the hashes
//                  are sorted and share the bucket's top bits, so their deltas
//                  are small, while the jump to the next listed bucket is large.
//   hlc            Timestamp::FromParts(phys_base + phys_offset, logical), with
//                  logical 0 when absent. Versions of one summary are usually
//                  hours apart at most, so phys_offset takes ~24 bits instead of
//                  64, and most logical counters are 0 and cost one bit or none.
//   widths         first_kh_bits, kh_bits <= 64, phys_bits <= 48,
//                  logical_bits <= 16; phys_base + phys_offset <= kPhysicalMax.
//
// The encoder picks each width as the widest value it has to write, so a
// field costs what its largest value needs. Realistic summaries (1000 buckets
// of 15 entries, hlc within hours, 3 origins) take 9.5 bytes an entry in the
// blob, 10.0 in the whole frame (a List(struct) would take 32).
#include <tidemap/schemas/codec.h>

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tidemap/base/coding.h>
#include <tidemap/base/overloaded.h>
#include <tidemap/schemas/codec_internal.h>
#include <tidemap/schemas/record_blob_internal.h>
#include <tidemap/schemas/record_blob_reader.h>
#include <tidemap/schemas/record_blob_writer.h>
#include <tidemap/schemas/snapshot.h>
#include <tidemap/schemas/sync.capnp.h>

namespace tidemap {

namespace {

std::string Str(size_t n) { return std::to_string(n); }

// Cap'n Proto can address at most 2^29 - 1 list elements and bytes per list.
constexpr size_t kCapnpListMax = (size_t{1} << 29) - 1;

// ---------------------------------------------------------------------------
// Bit streams for the summary blob.

unsigned BitWidth(uint64_t v) { return static_cast<unsigned>(std::bit_width(v)); }

class BitWriter {
 public:
  explicit BitWriter(std::string* out) : out_(out) {}

  // Appends the low `width` bits of `v`. REQUIRES: v < 2^width.
  void Put(uint64_t v, unsigned width) {
    while (width > 0) {
      if (free_ == 0) {
        out_->push_back('\0');
        free_ = 8;
      }
      const unsigned take = std::min(free_, width);
      const auto chunk = static_cast<unsigned>(v & ((uint64_t{1} << take) - 1));
      const auto byte = static_cast<unsigned>(static_cast<uint8_t>(out_->back()));
      out_->back() = static_cast<char>(byte | (chunk << (8 - free_)));
      v >>= take;  // take <= 8
      width -= take;
      free_ -= take;
    }
  }

 private:
  std::string* out_;
  unsigned free_ = 0;  // unused bits in out_->back()
};

class BitReader {
 public:
  explicit BitReader(std::string_view bytes) : bytes_(bytes) {}

  uint64_t bits_left() const { return uint64_t{bytes_.size()} * 8 - pos_; }

  // Reads `width` <= 64 bits; false when fewer are left.
  bool Get(unsigned width, uint64_t* v) {
    if (width > bits_left()) return false;
    uint64_t result = 0;
    unsigned got = 0;
    while (got < width) {
      const auto byte = static_cast<unsigned>(static_cast<uint8_t>(bytes_[pos_ / 8]));
      const auto offset = static_cast<unsigned>(pos_ % 8);
      const unsigned take = std::min(8 - offset, width - got);
      const uint64_t chunk = (byte >> offset) & ((1u << take) - 1);
      result |= chunk << got;
      got += take;
      pos_ += take;
    }
    *v = result;
    return true;
  }

  // True when only zero padding bits of the last byte are left.
  bool AtCleanEnd() const {
    if (bits_left() >= 8) return false;
    if (pos_ % 8 == 0) return true;
    const auto last = static_cast<unsigned>(static_cast<uint8_t>(bytes_.back()));
    return (last >> (pos_ % 8)) == 0;
  }

 private:
  std::string_view bytes_;
  uint64_t pos_ = 0;  // in bits
};

void PutFixed64LE(std::string* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    dst->push_back(static_cast<char>(v & 0xff));
    v >>= 8;
  }
}

// Walks the entries of a summary bucket by bucket: Next() says whether the
// next entry opens a bucket. REQUIRES: the counts add up to the entries walked.
class BucketWalk {
 public:
  explicit BucketWalk(const std::vector<uint32_t>& counts) : counts_(counts) {}
  bool NextIsFirst() {
    if (left_ == 0) {
      while (counts_[next_] == 0) ++next_;
      left_ = counts_[next_++];
      --left_;
      return true;
    }
    --left_;
    return false;
  }

 private:
  const std::vector<uint32_t>& counts_;
  size_t next_ = 0;
  uint64_t left_ = 0;
};

uint64_t SumCounts(const std::vector<uint32_t>& counts) {
  uint64_t sum = 0;
  for (uint32_t c : counts) sum += c;
  return sum;
}

// ---------------------------------------------------------------------------
// Encoding.

capnp::Data::Reader AsData(std::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

size_t Words(size_t bytes) { return (bytes + 7) / 8; }

// An upper bound of the words of the expiry blob of `records`.
size_t ExpiryWords(const std::vector<KeyedRecord>& records) {
  size_t n = 0;
  for (const KeyedRecord& r : records) n += r.expiry_ms != 0 ? 1 : 0;
  return Words(n * 20);
}

// An upper bound of the message's size, so the first segment holds it all.
// `blob_bytes` is the size of the body's blob (BodyBlob), encoded beforehand.
size_t EstimateWords(const msg::Message& m, size_t blob_bytes) {
  const size_t blob = Words(blob_bytes);
  const size_t body = std::visit(
      Overloaded{
          [](const msg::Hello&) -> size_t { return 11; },
          [&](const msg::RecordBatch& b) -> size_t { return 4 + blob + ExpiryWords(b.records); },
          [](const msg::BatchAck&) -> size_t { return 1; },
          [](const msg::BatchRefused& b) -> size_t { return 3 + Words(b.reason.size() + 1); },
          [](const msg::TreeNodes& t) -> size_t {
            return 4 + Words(t.parents.size() * 4) + t.child_digests.size();
          },
          [&](const msg::BucketSummaries& s) -> size_t {
            return 5 + 2 * Words(s.buckets.size() * 4) + blob;
          },
          [&](const msg::DiffRecords& d) -> size_t {
            return 5 + blob + ExpiryWords(d.records) + d.requests.size();
          },
          [](const msg::DiffEnd&) -> size_t { return 1; },
          [&](const msg::OriginRecords& o) -> size_t { return 4 + blob + ExpiryWords(o.records); },
          [](const msg::Goodbye& g) -> size_t { return 1 + Words(g.reason.size() + 1); },
      },
      m.body);
  return 1 + 3 + body + 8;  // root pointer, Message, body, slack
}

Status CheckTreeShape(size_t parents, size_t children) {
  if (parents == 0 ? children != 0 : (children < parents || children % parents != 0)) {
    return Status::InvalidArgument("tree_nodes: " + Str(children) +
                                   " child digests are not a whole fanout for " + Str(parents) +
                                   " parents");
  }
  return Status::Ok();
}

Status CheckSummaryCounts(size_t buckets, size_t counts) {
  if (buckets != counts) {
    return Status::InvalidArgument("bucket_summaries: " + Str(buckets) + " buckets but " +
                                   Str(counts) + " counts");
  }
  return Status::Ok();
}

// The Data blob of a body that has one (records, summary entries), encoded
// before the message so that EstimateWords can size the first segment for it;
// empty for the other bodies. InvalidArgument when the body breaks a rule of
// its blob (RecordBlobWriter::Add, CheckSummaryCounts, EncodeSummaryEntries).
Result<std::string> BodyBlob(const msg::Body& body) {
  Result<std::string> blob = std::visit(
      Overloaded{
          [](const msg::RecordBatch& b) {
            return codec_internal::EncodeRecords(b.records, "record_batch");
          },
          [](const msg::BucketSummaries& s) -> Result<std::string> {
            TIDEMAP_RETURN_IF_ERROR(CheckSummaryCounts(s.buckets.size(), s.counts.size()));
            return codec_internal::EncodeSummaryEntries(s.counts, s.entries);
          },
          [](const msg::DiffRecords& d) {
            return codec_internal::EncodeRecords(d.records, "diff_records");
          },
          [](const msg::OriginRecords& o) {
            return codec_internal::EncodeRecords(o.records, "origin_records");
          },
          [](const auto&) { return Result<std::string>(std::string()); },
      },
      body);
  if (blob.ok() && blob->size() > kCapnpListMax) {
    return Status::InvalidArgument(std::string(msg::BodyName(body)) + ": a blob of " +
                                   Str(blob->size()) +
                                   " bytes, over Cap'n Proto's limit of 2^29 - 1");
  }
  return blob;
}

// One Build per body type: fills `body` (the message's union) from it, with
// `blob` as its packed records or entries where it has some.
using BodyBuilder = wire::Message::Body::Builder;

Status Build(const msg::Hello& h, std::string_view /*blob*/, BodyBuilder body) {
  if (h.tree_fanout_bits > 0xffff || h.tree_depth > 0xffff) {
    return Status::InvalidArgument("hello: tree shape out of range");
  }
  auto b = body.initHello();
  b.setProtocolVersion(h.protocol_version);
  b.setTreeFanoutBits(static_cast<uint16_t>(h.tree_fanout_bits));
  b.setTreeDepth(static_cast<uint16_t>(h.tree_depth));
  b.setMerkleRootLo(h.merkle_root.lo);
  b.setMerkleRootHi(h.merkle_root.hi);
  b.setIncarnation(h.incarnation);
  b.setLastSeq(h.last_seq);
  b.setGcWatermarkHlc(h.gc_watermark.hlc.raw);
  b.setGcWatermarkOrigin(h.gc_watermark.origin);
  b.setPhysicalMs(h.physical_ms);
  b.setRecords(h.records);
  b.setHeldIncarnation(h.held_incarnation);
  b.setHeldSeq(h.held_seq);
  return Status::Ok();
}

Status Build(const msg::RecordBatch& rb, std::string_view blob, BodyBuilder body) {
  auto b = body.initRecordBatch();
  b.setFirstSeq(rb.first_seq);
  b.setLastSeq(rb.last_seq);
  // An empty blob stays a null pointer, which reads back as empty.
  if (!blob.empty()) b.setRecords(AsData(blob));
  const std::string expiries = codec_internal::EncodeExpiries(rb.records);
  if (!expiries.empty()) b.setExpiries(AsData(expiries));
  return Status::Ok();
}

Status Build(const msg::BatchAck& a, std::string_view /*blob*/, BodyBuilder body) {
  body.initBatchAck().setLastSeq(a.last_seq);
  return Status::Ok();
}

Status Build(const msg::BatchRefused& r, std::string_view /*blob*/, BodyBuilder body) {
  auto b = body.initBatchRefused();
  b.setLastSeq(r.last_seq);
  b.setReason(capnp::Text::Reader(r.reason.data(), r.reason.size()));
  b.setQuotaExceeded(r.quota_exceeded);
  return Status::Ok();
}

Status Build(const msg::TreeNodes& t, std::string_view /*blob*/, BodyBuilder body) {
  TIDEMAP_RETURN_IF_ERROR(CheckTreeShape(t.parents.size(), t.child_digests.size()));
  auto b = body.initTreeNodes();
  b.setDiffId(t.diff_id);
  b.setLevel(t.level);
  b.setLast(t.last);
  auto parents = b.initParents(static_cast<unsigned>(t.parents.size()));
  for (unsigned i = 0; i < t.parents.size(); ++i) parents.set(i, t.parents[i]);
  auto children = b.initChildDigests(static_cast<unsigned>(t.child_digests.size()));
  for (unsigned i = 0; i < t.child_digests.size(); ++i) children.set(i, t.child_digests[i]);
  return Status::Ok();
}

Status Build(const msg::BucketSummaries& s, std::string_view blob, BodyBuilder body) {
  auto b = body.initBucketSummaries();
  b.setDiffId(s.diff_id);
  b.setLast(s.last);
  auto buckets = b.initBuckets(static_cast<unsigned>(s.buckets.size()));
  auto counts = b.initCounts(static_cast<unsigned>(s.counts.size()));
  for (unsigned i = 0; i < s.buckets.size(); ++i) {
    buckets.set(i, s.buckets[i]);
    counts.set(i, s.counts[i]);
  }
  if (!blob.empty()) b.setEntries(AsData(blob));
  return Status::Ok();
}

Status Build(const msg::DiffRecords& d, std::string_view blob, BodyBuilder body) {
  auto b = body.initDiffRecords();
  b.setDiffId(d.diff_id);
  b.setLast(d.last);
  if (!blob.empty()) b.setRecords(AsData(blob));
  const std::string expiries = codec_internal::EncodeExpiries(d.records);
  if (!expiries.empty()) b.setExpiries(AsData(expiries));
  auto requests = b.initRequests(static_cast<unsigned>(d.requests.size()));
  for (unsigned i = 0; i < d.requests.size(); ++i) requests.set(i, d.requests[i]);
  return Status::Ok();
}

Status Build(const msg::DiffEnd& e, std::string_view /*blob*/, BodyBuilder body) {
  body.initDiffEnd().setDiffId(e.diff_id);
  return Status::Ok();
}

Status Build(const msg::OriginRecords& o, std::string_view blob, BodyBuilder body) {
  auto b = body.initOriginRecords();
  b.setOrigin(o.origin);
  b.setLast(o.last);
  if (!blob.empty()) b.setRecords(AsData(blob));
  const std::string expiries = codec_internal::EncodeExpiries(o.records);
  if (!expiries.empty()) b.setExpiries(AsData(expiries));
  return Status::Ok();
}

Status Build(const msg::Goodbye& g, std::string_view /*blob*/, BodyBuilder body) {
  body.initGoodbye().setReason(capnp::Text::Reader(g.reason.data(), g.reason.size()));
  return Status::Ok();
}

Status BuildMessage(const msg::Message& m, std::string_view blob, wire::Message::Builder root) {
  root.setSeq(m.seq);
  BodyBuilder body = root.getBody();
  return std::visit([&](const auto& b) { return Build(b, blob, body); }, m.body);
}

Status CheckCapnpListSizes(const msg::Message& m) {
  size_t largest = std::visit(Overloaded{
                                  [](const msg::BatchRefused& r) { return r.reason.size() + 1; },
                                  [](const msg::Goodbye& g) { return g.reason.size() + 1; },
                                  [](const msg::TreeNodes& t) {
                                    return std::max(t.parents.size(), t.child_digests.size());
                                  },
                                  // Blobs are checked by BodyBlob.
                                  [](const msg::BucketSummaries& s) { return s.buckets.size(); },
                                  [](const msg::DiffRecords& d) { return d.requests.size(); },
                                  [](const auto&) { return size_t{0}; },
                              },
                              m.body);
  if (largest > kCapnpListMax) {
    return Status::InvalidArgument(std::string(msg::BodyName(m.body)) +
                                   ": a list or byte string of " + Str(largest) +
                                   " items, over Cap'n Proto's limit of 2^29 - 1");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Decoding.

std::string_view AsView(capnp::Data::Reader d) {
  return std::string_view(reinterpret_cast<const char*>(d.begin()), d.size());
}

Status OverLimit(const char* body, const char* what, size_t n, size_t limit,
                 const char* limit_name) {
  return Status::InvalidArgument(std::string(body) + ": " + Str(n) + " " + what + ", over " +
                                 limit_name + " " + Str(limit));
}

template <class T, class ListReader>
Status ReadList(ListReader list, const DecodeLimits& limits, const char* body, const char* what,
                std::vector<T>* out) {
  if (list.size() > limits.list_items_max) {
    return OverLimit(body, what, list.size(), limits.list_items_max, "list_items_max");
  }
  out->reserve(list.size());
  for (unsigned i = 0; i < list.size(); ++i) out->push_back(list[i]);
  return Status::Ok();
}

Status MissingBody(const char* body) {
  return Status::InvalidArgument(std::string(body) + ": the body pointer is null");
}

msg::Hello ReadHello(wire::Hello::Reader b) {
  msg::Hello h;
  h.protocol_version = b.getProtocolVersion();
  h.merkle_root = Digest128{b.getMerkleRootLo(), b.getMerkleRootHi()};
  h.tree_fanout_bits = b.getTreeFanoutBits();
  h.tree_depth = b.getTreeDepth();
  h.incarnation = b.getIncarnation();
  h.last_seq = b.getLastSeq();
  h.gc_watermark = Version{Timestamp{b.getGcWatermarkHlc()}, b.getGcWatermarkOrigin()};
  h.physical_ms = b.getPhysicalMs();
  h.records = b.getRecords();
  h.held_incarnation = b.getHeldIncarnation();
  h.held_seq = b.getHeldSeq();
  return h;
}

Result<msg::RecordBatch> ReadRecordBatch(wire::RecordBatch::Reader b, const DecodeLimits& limits) {
  msg::RecordBatch rb;
  rb.first_seq = b.getFirstSeq();
  rb.last_seq = b.getLastSeq();
  TIDEMAP_ASSIGN_OR_RETURN(
      rb.records, codec_internal::DecodeRecords(AsView(b.getRecords()), limits, "record_batch"));
  TIDEMAP_RETURN_IF_ERROR(
      codec_internal::DecodeExpiries(AsView(b.getExpiries()), "record_batch", &rb.records));
  return rb;
}

Result<msg::TreeNodes> ReadTreeNodes(wire::TreeNodes::Reader b, const DecodeLimits& limits) {
  msg::TreeNodes t;
  t.diff_id = b.getDiffId();
  t.level = b.getLevel();
  t.last = b.getLast();
  auto parents = b.getParents();
  auto children = b.getChildDigests();
  TIDEMAP_RETURN_IF_ERROR(ReadList<uint32_t>(parents, limits, "tree_nodes", "parents", &t.parents));
  TIDEMAP_RETURN_IF_ERROR(
      ReadList<uint64_t>(children, limits, "tree_nodes", "child digests", &t.child_digests));
  TIDEMAP_RETURN_IF_ERROR(CheckTreeShape(t.parents.size(), t.child_digests.size()));
  return t;
}

Result<msg::BucketSummaries> ReadBucketSummaries(wire::BucketSummaries::Reader b,
                                                 const DecodeLimits& limits) {
  msg::BucketSummaries s;
  s.diff_id = b.getDiffId();
  s.last = b.getLast();
  TIDEMAP_RETURN_IF_ERROR(
      ReadList<uint32_t>(b.getBuckets(), limits, "bucket_summaries", "buckets", &s.buckets));
  TIDEMAP_RETURN_IF_ERROR(
      ReadList<uint32_t>(b.getCounts(), limits, "bucket_summaries", "counts", &s.counts));
  TIDEMAP_RETURN_IF_ERROR(CheckSummaryCounts(s.buckets.size(), s.counts.size()));
  TIDEMAP_ASSIGN_OR_RETURN(
      s.entries, codec_internal::DecodeSummaryEntries(AsView(b.getEntries()), s.counts, limits));
  return s;
}

Result<msg::DiffRecords> ReadDiffRecords(wire::DiffRecords::Reader b, const DecodeLimits& limits) {
  msg::DiffRecords d;
  d.diff_id = b.getDiffId();
  d.last = b.getLast();
  TIDEMAP_ASSIGN_OR_RETURN(
      d.records, codec_internal::DecodeRecords(AsView(b.getRecords()), limits, "diff_records"));
  TIDEMAP_RETURN_IF_ERROR(
      codec_internal::DecodeExpiries(AsView(b.getExpiries()), "diff_records", &d.records));
  TIDEMAP_RETURN_IF_ERROR(
      ReadList<uint64_t>(b.getRequests(), limits, "diff_records", "requests", &d.requests));
  return d;
}

Result<msg::OriginRecords> ReadOriginRecords(wire::OriginRecords::Reader b,
                                             const DecodeLimits& limits) {
  msg::OriginRecords o;
  o.origin = b.getOrigin();
  o.last = b.getLast();
  TIDEMAP_ASSIGN_OR_RETURN(
      o.records, codec_internal::DecodeRecords(AsView(b.getRecords()), limits, "origin_records"));
  TIDEMAP_RETURN_IF_ERROR(
      codec_internal::DecodeExpiries(AsView(b.getExpiries()), "origin_records", &o.records));
  return o;
}

std::string ReadText(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// A Result<T> of one body type as a Result<msg::Body>.
template <typename T>
Result<msg::Body> AsBody(Result<T> r) {
  if (!r.ok()) return r.status();
  return msg::Body(std::move(*r));
}

// The body of `body`, whose pointer for its kind was checked to be set.
Result<msg::Body> ReadBody(wire::Message::Body::Reader body, const DecodeLimits& limits) {
  using B = wire::Message::Body;
  switch (body.which()) {
    case B::HELLO:
      return msg::Body(ReadHello(body.getHello()));
    case B::RECORD_BATCH:
      return AsBody(ReadRecordBatch(body.getRecordBatch(), limits));
    case B::BATCH_ACK:
      return msg::Body(msg::BatchAck{body.getBatchAck().getLastSeq()});
    case B::BATCH_REFUSED: {
      auto b = body.getBatchRefused();
      return msg::Body(
          msg::BatchRefused{b.getLastSeq(), ReadText(b.getReason()), b.getQuotaExceeded()});
    }
    case B::TREE_NODES:
      return AsBody(ReadTreeNodes(body.getTreeNodes(), limits));
    case B::BUCKET_SUMMARIES:
      return AsBody(ReadBucketSummaries(body.getBucketSummaries(), limits));
    case B::DIFF_RECORDS:
      return AsBody(ReadDiffRecords(body.getDiffRecords(), limits));
    case B::DIFF_END:
      return msg::Body(msg::DiffEnd{body.getDiffEnd().getDiffId()});
    case B::ORIGIN_RECORDS:
      return AsBody(ReadOriginRecords(body.getOriginRecords(), limits));
    case B::GOODBYE:
      return msg::Body(msg::Goodbye{ReadText(body.getGoodbye().getReason())});
  }
  return Status::Internal("ReadBody: unchecked body type");
}

// A body kind we know: its name and whether its pointer is set.
struct BodyKind {
  const char* name;
  bool present;
};

// nullopt for a body kind we do not know.
std::optional<BodyKind> KindOf(wire::Message::Body::Reader body) {
  using B = wire::Message::Body;
  switch (body.which()) {
    case B::HELLO:
      return BodyKind{"hello", body.hasHello()};
    case B::RECORD_BATCH:
      return BodyKind{"record_batch", body.hasRecordBatch()};
    case B::BATCH_ACK:
      return BodyKind{"batch_ack", body.hasBatchAck()};
    case B::BATCH_REFUSED:
      return BodyKind{"batch_refused", body.hasBatchRefused()};
    case B::TREE_NODES:
      return BodyKind{"tree_nodes", body.hasTreeNodes()};
    case B::BUCKET_SUMMARIES:
      return BodyKind{"bucket_summaries", body.hasBucketSummaries()};
    case B::DIFF_RECORDS:
      return BodyKind{"diff_records", body.hasDiffRecords()};
    case B::DIFF_END:
      return BodyKind{"diff_end", body.hasDiffEnd()};
    case B::ORIGIN_RECORDS:
      return BodyKind{"origin_records", body.hasOriginRecords()};
    case B::GOODBYE:
      return BodyKind{"goodbye", body.hasGoodbye()};
  }
  return std::nullopt;
}

Result<msg::Message> ReadMessage(wire::Message::Reader root, const DecodeLimits& limits) {
  msg::Message m;
  m.seq = root.getSeq();
  auto body = root.getBody();
  const std::optional<BodyKind> kind = KindOf(body);
  if (!kind.has_value()) {
    // A newer peer's body type, or garbage: either way not ours to guess at.
    return Status::InvalidArgument("unknown body type " +
                                   std::to_string(static_cast<unsigned>(body.which())));
  }
  if (!kind->present) return MissingBody(kind->name);
  TIDEMAP_ASSIGN_OR_RETURN(m.body, ReadBody(body, limits));
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------
// Packed frames (see the top of this file).

namespace {

// The words `packed` unpacks to (segment table and segments), or an error
// when they would exceed limits.frame_bytes_max or the input is malformed.
// Reads as Cap'n Proto's own packed reader does (the packed stream wants the
// reads in that order): the table's first word, the rest of the table, then
// every segment; the sizes are checked before the segments are allocated.
Result<kj::Array<capnp::word>> Unpack(std::string_view packed, const DecodeLimits& limits) {
  constexpr uint32_t kSegmentsMax = 512;
  kj::ArrayInputStream in(
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(packed.data()), packed.size()));
  capnp::_::PackedInputStream unpacker(in);
  auto size_at = [](const capnp::word* words, size_t i) {  // the i-th 4-byte LE field
    const auto* p = reinterpret_cast<const unsigned char*>(words) + 4 * i;
    return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  };
  capnp::word first;
  unpacker.read(&first, sizeof(first));
  const uint64_t segments = uint64_t{size_at(&first, 0)} + 1;
  if (segments > kSegmentsMax) {
    return Status::InvalidArgument("sync frame: " + Str(segments) + " segments, over " +
                                   Str(kSegmentsMax));
  }
  const size_t table_words = segments / 2 + 1;  // (1 + segments) 4-byte fields, word-padded
  kj::Array<capnp::word> table = kj::heapArray<capnp::word>(table_words);
  // capnp::word is not copy-assignable under clang (its copy operations are
  // deleted there), so words move as bytes.
  std::memcpy(table.begin(), &first, sizeof(first));
  if (table_words > 1) unpacker.read(&table[1], (table_words - 1) * sizeof(capnp::word));
  uint64_t total = table_words;
  for (uint64_t i = 0; i < segments; ++i) total += size_at(table.begin(), 1 + i);
  if (total * sizeof(capnp::word) > limits.frame_bytes_max) {
    return Status::InvalidArgument("sync frame: unpacks to " + Str(total * sizeof(capnp::word)) +
                                   " bytes, over frame_bytes_max " + Str(limits.frame_bytes_max));
  }
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(total);
  std::memcpy(words.begin(), table.begin(), table_words * sizeof(capnp::word));
  if (total > table_words) {
    unpacker.read(words.begin() + table_words, (total - table_words) * sizeof(capnp::word));
  }
  if (in.tryGetReadBuffer().size() != 0) {
    return Status::Corruption("sync frame: " + Str(in.tryGetReadBuffer().size()) +
                              " bytes after the message");
  }
  return words;
}

}  // namespace

// ---------------------------------------------------------------------------
// Record blob and summary entry blob (grammars at the top of this file).

namespace codec_internal {

Result<std::string> EncodeRecords(const std::vector<KeyedRecord>& records, const char* body) {
  RecordBlobWriter writer;
  for (const KeyedRecord& r : records) {
    TIDEMAP_RETURN_IF_ERROR(writer.Add(
        SnapshotRecordView{r.map, r.key, r.value, r.version, r.tombstone, r.expiry_ms}, body));
  }
  writer.Finish();
  std::string out;
  out.reserve(writer.head().size() + writer.body().size());
  out.append(writer.head()).append(writer.body());
  return out;
}

std::string EncodeExpiries(const std::vector<KeyedRecord>& records) {
  std::string out;
  uint64_t next = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].expiry_ms != 0) {
      record_blob::PutExpiryEntry(&out, i, records[i].expiry_ms, &next);
    }
  }
  return out;
}

Status DecodeExpiries(std::string_view blob, const char* body, std::vector<KeyedRecord>* records) {
  record_blob::ExpiryCursor expiry(blob, records->size(), body);
  TIDEMAP_RETURN_IF_ERROR(expiry.Advance());
  while (expiry.index() < records->size()) {
    KeyedRecord& r = (*records)[expiry.index()];
    if (r.tombstone) return expiry.Malformed("a tombstone with an expiry");
    r.expiry_ms = expiry.expiry_ms();
    TIDEMAP_RETURN_IF_ERROR(expiry.Advance());
  }
  return Status::Ok();
}

Result<std::vector<KeyedRecord>> DecodeRecords(std::string_view blob, const DecodeLimits& limits,
                                               const char* body) {
  RecordBlobReader reader;
  TIDEMAP_RETURN_IF_ERROR(reader.Open(blob, {}, limits, body));
  std::vector<KeyedRecord> records;
  records.reserve(reader.count());  // Open bounded it by the blob's size
  SnapshotRecordView v;
  while (records.size() < reader.count()) {
    TIDEMAP_RETURN_IF_ERROR(reader.Next(&v));
    KeyedRecord& r = records.emplace_back();
    r.map.assign(v.map);
    r.key.assign(v.key);
    r.value.assign(v.value);
    r.version = v.version;
    r.tombstone = v.tombstone;
  }
  TIDEMAP_RETURN_IF_ERROR(reader.Finish());
  return records;
}

Result<std::string> EncodeSummaryEntries(const std::vector<uint32_t>& counts,
                                         const std::vector<msg::SummaryEntry>& entries) {
  if (SumCounts(counts) != entries.size()) {
    return Status::InvalidArgument("bucket_summaries: counts add up to " +
                                   std::to_string(SumCounts(counts)) + " but there are " +
                                   Str(entries.size()) + " entries");
  }
  std::string out;
  if (entries.empty()) return out;

  std::vector<uint64_t> origins;
  std::unordered_map<uint64_t, uint64_t> origin_index;
  uint64_t phys_min = std::numeric_limits<uint64_t>::max();
  uint64_t phys_max = 0;
  uint64_t logical_max = 0;
  uint64_t first_delta_max = 0;
  uint64_t delta_max = 0;
  {
    BucketWalk walk(counts);
    uint64_t prev = 0;
    for (const msg::SummaryEntry& e : entries) {
      if (origin_index.try_emplace(e.version.origin, origins.size()).second) {
        origins.push_back(e.version.origin);
      }
      phys_min = std::min(phys_min, e.version.hlc.physical_ms());
      phys_max = std::max(phys_max, e.version.hlc.physical_ms());
      logical_max = std::max(logical_max, e.version.hlc.logical());
      const uint64_t delta = e.key_hash - prev;  // modulo 2^64 by design
      uint64_t& max = walk.NextIsFirst() ? first_delta_max : delta_max;
      max = std::max(max, delta);
      prev = e.key_hash;
    }
  }
  const unsigned first_kh_bits = BitWidth(first_delta_max);
  const unsigned kh_bits = BitWidth(delta_max);
  const unsigned phys_bits = BitWidth(phys_max - phys_min);
  const unsigned logical_bits = BitWidth(logical_max);
  const unsigned origin_bits = BitWidth(origins.size() - 1);

  PutVarint64(&out, entries.size());
  PutVarint64(&out, origins.size());
  for (uint64_t origin : origins) PutFixed64LE(&out, origin);
  PutVarint64(&out, phys_min);
  for (unsigned width : {first_kh_bits, kh_bits, phys_bits, logical_bits}) {
    out.push_back(static_cast<char>(width));
  }

  BitWriter bits(&out);
  BucketWalk walk(counts);
  uint64_t prev = 0;
  for (const msg::SummaryEntry& e : entries) {
    bits.Put(e.key_hash - prev, walk.NextIsFirst() ? first_kh_bits : kh_bits);
    prev = e.key_hash;
    bits.Put(e.version.hlc.physical_ms() - phys_min, phys_bits);
    if (logical_bits > 0) {
      const uint64_t logical = e.version.hlc.logical();
      bits.Put(logical != 0 ? 1 : 0, 1);
      if (logical != 0) bits.Put(logical, logical_bits);
    }
    bits.Put(origin_index[e.version.origin], origin_bits);
    bits.Put(e.tombstone ? 1 : 0, 1);
  }
  return out;
}

// The bit widths of a summaries blob's fields: a bucket's first key-hash
// delta, the later deltas, the physical time offset, the logical counter.
struct SummaryWidths {
  unsigned first_kh, kh, phys, logical;
};

template <typename Malformed>
Result<SummaryWidths> ReadSummaryWidths(std::string_view* in, const Malformed& malformed) {
  if (in->size() < 4) return malformed("widths truncated");
  const auto width = [&](size_t i) {
    return static_cast<unsigned>(static_cast<uint8_t>((*in)[i]));
  };
  const SummaryWidths w{width(0), width(1), width(2), width(3)};
  in->remove_prefix(4);
  if (w.first_kh > 64 || w.kh > 64 || w.phys > 48 || w.logical > 16) {
    return malformed("field width out of range");
  }
  return w;
}

Result<std::vector<msg::SummaryEntry>> DecodeSummaryEntries(std::string_view blob,
                                                            const std::vector<uint32_t>& counts,
                                                            const DecodeLimits& limits) {
  const uint64_t expected = SumCounts(counts);
  std::vector<msg::SummaryEntry> entries;
  if (blob.empty()) {
    if (expected != 0) {
      return Status::InvalidArgument("bucket_summaries: counts add up to " +
                                     std::to_string(expected) + " but there are no entries");
    }
    return entries;
  }
  auto malformed = [](const std::string& why) {
    return Status::Corruption("bucket_summaries: malformed entries: " + why);
  };

  std::string_view in = blob;
  uint64_t count = 0;
  if (!GetVarint64(&in, &count)) return malformed("bad entry count");
  if (count > limits.list_items_max) {
    return OverLimit("bucket_summaries", "entries", count, limits.list_items_max, "list_items_max");
  }
  if (count != expected) {
    return Status::InvalidArgument("bucket_summaries: counts add up to " +
                                   std::to_string(expected) + " but there are " +
                                   std::to_string(count) + " entries");
  }
  if (count == 0) return malformed("a non-empty blob of zero entries");

  TIDEMAP_ASSIGN_OR_RETURN(const std::vector<uint64_t> origins,
                           record_blob::ReadOriginTable(&in, count, "entries", malformed));
  const uint64_t n_origins = origins.size();

  uint64_t phys_base = 0;
  if (!GetVarint64(&in, &phys_base)) return malformed("bad physical time base");
  if (phys_base > Timestamp::kPhysicalMax) return malformed("physical time base out of range");
  TIDEMAP_ASSIGN_OR_RETURN(const SummaryWidths widths, ReadSummaryWidths(&in, malformed));
  const unsigned first_kh_bits = widths.first_kh, kh_bits = widths.kh;
  const unsigned phys_bits = widths.phys, logical_bits = widths.logical;
  const unsigned origin_bits = BitWidth(n_origins - 1);

  // Every entry takes at least this many bits, so a blob claiming more
  // entries than it can hold is refused before the vector is reserved.
  const uint64_t min_entry_bits =
      std::min(first_kh_bits, kh_bits) + phys_bits + (logical_bits > 0 ? 1 : 0) + origin_bits + 1;
  BitReader bits(in);
  if (count > bits.bits_left() / min_entry_bits) {
    return malformed(std::to_string(count) + " entries cannot fit in " + Str(in.size()) + " bytes");
  }

  entries.reserve(count);
  BucketWalk walk(counts);
  uint64_t prev = 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t delta = 0, phys_offset = 0, has_logical = 0, logical = 0, origin = 0, tombstone = 0;
    if (!bits.Get(walk.NextIsFirst() ? first_kh_bits : kh_bits, &delta) ||
        !bits.Get(phys_bits, &phys_offset) || (logical_bits > 0 && !bits.Get(1, &has_logical)) ||
        (has_logical != 0 && !bits.Get(logical_bits, &logical)) ||
        !bits.Get(origin_bits, &origin) || !bits.Get(1, &tombstone)) {
      return malformed("entry " + std::to_string(i) + " truncated");
    }
    if (phys_offset > Timestamp::kPhysicalMax - phys_base) {
      return malformed("entry " + std::to_string(i) + ": physical time out of range");
    }
    if (origin >= n_origins) {
      return malformed("entry " + std::to_string(i) + ": origin index " + std::to_string(origin) +
                       " of " + std::to_string(n_origins));
    }
    msg::SummaryEntry& e = entries.emplace_back();
    prev += delta;  // modulo 2^64 by design
    e.key_hash = prev;
    e.version.hlc = Timestamp::FromParts(phys_base + phys_offset, logical);
    e.version.origin = origins[origin];
    e.tombstone = tombstone != 0;
  }
  if (!bits.AtCleanEnd()) return malformed("bytes or non-zero bits after the last entry");
  return entries;
}

Result<std::string> UnpackFrame(std::string_view packed, const DecodeLimits& limits) {
  try {
    TIDEMAP_ASSIGN_OR_RETURN(kj::Array<capnp::word> words, Unpack(packed, limits));
    return std::string(reinterpret_cast<const char*>(words.begin()),
                       words.size() * sizeof(capnp::word));
  } catch (const kj::Exception& e) {
    return Status::Corruption(e.getDescription().cStr());
  }
}

std::string PackFrame(std::string_view words) {
  TIDEMAP_CHECK(words.size() % sizeof(capnp::word) == 0);
  kj::Array<capnp::word> aligned = kj::heapArray<capnp::word>(words.size() / sizeof(capnp::word));
  std::memcpy(aligned.begin(), words.data(), words.size());
  kj::VectorOutputStream out(words.size() + words.size() / 8 + 16);
  {
    capnp::_::PackedOutputStream packer(out);
    packer.write(aligned.begin(), words.size());
  }
  const kj::ArrayPtr<kj::byte> bytes = out.getArray();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

}  // namespace codec_internal

// ---------------------------------------------------------------------------

Result<std::string> EncodeMessage(const msg::Message& m) {
  TIDEMAP_RETURN_IF_ERROR(CheckCapnpListSizes(m));
  try {
    TIDEMAP_ASSIGN_OR_RETURN(const std::string blob, BodyBlob(m.body));
    const size_t estimate = std::min(EstimateWords(m, blob.size()), kCapnpListMax);
    capnp::MallocMessageBuilder builder(static_cast<unsigned>(estimate));
    TIDEMAP_RETURN_IF_ERROR(BuildMessage(m, blob, builder.initRoot<wire::Message>()));
    kj::VectorOutputStream stream(capnp::computeSerializedSizeInWords(builder) *
                                  sizeof(capnp::word));
    capnp::writePackedMessage(stream, builder);
    const kj::ArrayPtr<kj::byte> packed = stream.getArray();
    return std::string(reinterpret_cast<const char*>(packed.begin()), packed.size());
  } catch (const kj::Exception& e) {
    return Status::Internal(std::string("encoding ") + msg::BodyName(m.body) + ": " +
                            e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("encoding ") + msg::BodyName(m.body) + ": " + e.what());
  }
}

Result<msg::Message> DecodeMessage(std::string_view bytes, const DecodeLimits& limits) {
  // Limits first: nothing is copied or allocated for a frame that breaks them.
  if (bytes.empty()) return Status::InvalidArgument("sync frame: empty payload");
  if (bytes.size() > limits.frame_bytes_max) {
    return Status::InvalidArgument("sync frame: " + Str(bytes.size()) +
                                   " bytes, over frame_bytes_max " + Str(limits.frame_bytes_max));
  }
  try {
    TIDEMAP_ASSIGN_OR_RETURN(kj::Array<capnp::word> unpacked, Unpack(bytes, limits));
    const kj::ArrayPtr<const capnp::word> words = unpacked;
    capnp::ReaderOptions options;
    options.traversalLimitInWords = limits.traversal_words_max;
    options.nestingLimit = limits.nesting_max;
    capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) {
      return Status::Corruption(
          "sync frame: " +
          Str(static_cast<size_t>(words.end() - reader.getEnd()) * sizeof(capnp::word)) +
          " bytes after the message");
    }
    Result<msg::Message> m = ReadMessage(reader.getRoot<wire::Message>(), limits);
    if (!m.ok()) return m.status().WithContext("sync frame");
    return m;
  } catch (const kj::Exception& e) {
    return Status::Corruption(std::string("sync frame: ") + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("sync frame: ") + e.what());
  }
}

}  // namespace tidemap
