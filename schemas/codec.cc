// The sync protocol's wire codec: msg::Message <-> a flat Cap'n Proto message
// of schemas/sync.capnp.
//
// Frame payload: the standard Cap'n Proto flat serialization (segment table,
// then the segments), unpacked. Encoding sizes the first segment from the
// message so that almost every frame is one segment (8 bytes of table, no far
// pointers). Cap'n Proto packing was measured and not taken: it saves 4.2%
// on a batch of 1000 records with 16-byte keys and 100-byte random values,
// 1.1% on 4096x16 tree digests and 2.6% on bucket summaries (random bytes do
// not pack), while it costs a pass over every byte each way and lets a packed
// frame unpack to ~1000x its size (2 bytes can stand for 256 zero words),
// which would need a limit of its own
// (tests/unit/codec_test.cc, CodecSizes.Report, prints these numbers).
//
// Decoding never trusts the peer: the frame size is checked before anything
// is copied; Cap'n Proto reads through FlatArrayMessageReader with explicit
// traversal and nesting limits; every list length is checked against
// DecodeLimits before a vector is reserved; every protocol rule the codec can
// see is checked; Cap'n Proto's kj::Exception is caught here and returned as
// a Status.
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
#include "schemas/codec.h"

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
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/coding.h"
#include "schemas/codec_internal.h"
#include "schemas/sync.capnp.h"

namespace tidemap {

namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

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

bool GetFixed64LE(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  uint64_t r = 0;
  for (int i = 7; i >= 0; --i) r = (r << 8) | static_cast<uint8_t>((*in)[static_cast<size_t>(i)]);
  in->remove_prefix(8);
  *v = r;
  return true;
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

size_t RecordsWords(const std::vector<RemoteRecord>& records) {
  size_t words = 1;  // list tag
  for (const RemoteRecord& r : records) {
    words += 6 + Words(r.map.size()) + Words(r.key.size()) + Words(r.value.size());
  }
  return words;
}

// An upper bound of the message's size, so the first segment holds it all.
size_t EstimateWords(const msg::Message& m) {
  const size_t body = std::visit(
      Overloaded{
          [](const msg::Hello&) -> size_t { return 3; },
          [](const msg::RecordBatch& b) -> size_t { return 3 + RecordsWords(b.records); },
          [](const msg::BatchAck&) -> size_t { return 1; },
          [](const msg::BatchRefused& b) -> size_t { return 2 + Words(b.reason.size() + 1); },
          [](const msg::TreeNodes& t) -> size_t {
            return 4 + Words(t.parents.size() * 4) + t.child_digests.size();
          },
          [](const msg::BucketSummaries& s) -> size_t {
            // An entry takes at most 20 bytes of bits and 8 of origin table.
            return 5 + 2 * Words(s.buckets.size() * 4) + Words(s.entries.size() * 28 + 64);
          },
          [](const msg::DiffRecords& d) -> size_t {
            return 4 + RecordsWords(d.records) + d.requests.size();
          },
          [](const msg::DiffEnd&) -> size_t { return 1; },
      },
      m.body);
  return 1 + 3 + body + 8;  // root pointer, Message, body, slack
}

Status CheckRecords(const std::vector<RemoteRecord>& records, const char* body) {
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].tombstone && !records[i].value.empty()) {
      return Status::InvalidArgument(std::string(body) + ": record " + Str(i) +
                                     " is a tombstone with a " + Str(records[i].value.size()) +
                                     "-byte value");
    }
  }
  return Status::Ok();
}

void SetRecords(capnp::List<wire::Record>::Builder list, const std::vector<RemoteRecord>& records) {
  for (unsigned i = 0; i < records.size(); ++i) {
    const RemoteRecord& r = records[i];
    wire::Record::Builder b = list[i];
    // Empty byte strings stay null pointers, which read back as empty.
    if (!r.map.empty()) b.setMap(AsData(r.map));
    if (!r.key.empty()) b.setKey(AsData(r.key));
    if (!r.value.empty()) b.setValue(AsData(r.value));
    b.setHlc(r.version.hlc.raw);
    b.setOrigin(r.version.origin);
    b.setTombstone(r.tombstone);
  }
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

Status BuildMessage(const msg::Message& m, wire::Message::Builder root) {
  root.setSeq(m.seq);
  auto body = root.getBody();
  return std::visit(
      Overloaded{
          [&](const msg::Hello& h) -> Status {
            if (h.tree_fanout_bits > 0xffff || h.tree_depth > 0xffff) {
              return Status::InvalidArgument("hello: tree shape out of range");
            }
            auto b = body.initHello();
            b.setProtocolVersion(h.protocol_version);
            b.setTreeFanoutBits(static_cast<uint16_t>(h.tree_fanout_bits));
            b.setTreeDepth(static_cast<uint16_t>(h.tree_depth));
            b.setMerkleRootLo(h.merkle_root.lo);
            b.setMerkleRootHi(h.merkle_root.hi);
            return Status::Ok();
          },
          [&](const msg::RecordBatch& rb) -> Status {
            TIDEMAP_RETURN_IF_ERROR(CheckRecords(rb.records, "record_batch"));
            auto b = body.initRecordBatch();
            b.setFirstSeq(rb.first_seq);
            b.setLastSeq(rb.last_seq);
            SetRecords(b.initRecords(static_cast<unsigned>(rb.records.size())), rb.records);
            return Status::Ok();
          },
          [&](const msg::BatchAck& a) -> Status {
            body.initBatchAck().setLastSeq(a.last_seq);
            return Status::Ok();
          },
          [&](const msg::BatchRefused& r) -> Status {
            auto b = body.initBatchRefused();
            b.setLastSeq(r.last_seq);
            b.setReason(capnp::Text::Reader(r.reason.data(), r.reason.size()));
            return Status::Ok();
          },
          [&](const msg::TreeNodes& t) -> Status {
            TIDEMAP_RETURN_IF_ERROR(CheckTreeShape(t.parents.size(), t.child_digests.size()));
            auto b = body.initTreeNodes();
            b.setDiffId(t.diff_id);
            b.setLevel(t.level);
            b.setLast(t.last);
            auto parents = b.initParents(static_cast<unsigned>(t.parents.size()));
            for (unsigned i = 0; i < t.parents.size(); ++i) parents.set(i, t.parents[i]);
            auto children = b.initChildDigests(static_cast<unsigned>(t.child_digests.size()));
            for (unsigned i = 0; i < t.child_digests.size(); ++i) {
              children.set(i, t.child_digests[i]);
            }
            return Status::Ok();
          },
          [&](const msg::BucketSummaries& s) -> Status {
            TIDEMAP_RETURN_IF_ERROR(CheckSummaryCounts(s.buckets.size(), s.counts.size()));
            TIDEMAP_ASSIGN_OR_RETURN(std::string blob,
                                     codec_internal::EncodeSummaryEntries(s.counts, s.entries));
            if (blob.size() > kCapnpListMax) {
              return Status::InvalidArgument("bucket_summaries: " + Str(s.entries.size()) +
                                             " entries take " + Str(blob.size()) +
                                             " bytes, over Cap'n Proto's limit of 2^29 - 1");
            }
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
          },
          [&](const msg::DiffRecords& d) -> Status {
            TIDEMAP_RETURN_IF_ERROR(CheckRecords(d.records, "diff_records"));
            auto b = body.initDiffRecords();
            b.setDiffId(d.diff_id);
            b.setLast(d.last);
            SetRecords(b.initRecords(static_cast<unsigned>(d.records.size())), d.records);
            auto requests = b.initRequests(static_cast<unsigned>(d.requests.size()));
            for (unsigned i = 0; i < d.requests.size(); ++i) requests.set(i, d.requests[i]);
            return Status::Ok();
          },
          [&](const msg::DiffEnd& e) -> Status {
            body.initDiffEnd().setDiffId(e.diff_id);
            return Status::Ok();
          },
      },
      m.body);
}

Status CheckCapnpListSizes(const msg::Message& m) {
  size_t largest = std::visit(
      Overloaded{
          [](const msg::RecordBatch& b) {
            size_t n = b.records.size();
            for (const RemoteRecord& r : b.records) {
              n = std::max({n, r.map.size(), r.key.size(), r.value.size()});
            }
            return n;
          },
          [](const msg::BatchRefused& r) { return r.reason.size() + 1; },
          [](const msg::TreeNodes& t) {
            return std::max(t.parents.size(), t.child_digests.size());
          },
          [](const msg::BucketSummaries& s) { return s.buckets.size(); },  // blob: see below
          [](const msg::DiffRecords& d) {
            size_t n = std::max(d.records.size(), d.requests.size());
            for (const RemoteRecord& r : d.records) {
              n = std::max({n, r.map.size(), r.key.size(), r.value.size()});
            }
            return n;
          },
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

std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

Status OverLimit(const char* body, const char* what, size_t n, size_t limit,
                 const char* limit_name) {
  return Status::InvalidArgument(std::string(body) + ": " + Str(n) + " " + what + ", over " +
                                 limit_name + " " + Str(limit));
}

Status ReadRecords(capnp::List<wire::Record>::Reader list, const DecodeLimits& limits,
                   const char* body, std::vector<RemoteRecord>* out) {
  if (list.size() > limits.records_max) {
    return OverLimit(body, "records", list.size(), limits.records_max, "records_max");
  }
  out->reserve(list.size());
  for (unsigned i = 0; i < list.size(); ++i) {
    wire::Record::Reader r = list[i];
    RemoteRecord& rec = out->emplace_back();
    rec.map = ToString(r.getMap());
    rec.key = ToString(r.getKey());
    rec.value = ToString(r.getValue());
    rec.version.hlc.raw = r.getHlc();
    rec.version.origin = r.getOrigin();
    rec.tombstone = r.getTombstone();
  }
  return CheckRecords(*out, body);
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

Result<msg::Message> ReadMessage(wire::Message::Reader root, const DecodeLimits& limits) {
  msg::Message m;
  m.seq = root.getSeq();
  auto body = root.getBody();
  switch (body.which()) {
    case wire::Message::Body::HELLO: {
      if (!body.hasHello()) return MissingBody("hello");
      auto b = body.getHello();
      msg::Hello h;
      h.protocol_version = b.getProtocolVersion();
      h.merkle_root = Digest128{b.getMerkleRootLo(), b.getMerkleRootHi()};
      h.tree_fanout_bits = b.getTreeFanoutBits();
      h.tree_depth = b.getTreeDepth();
      m.body = h;
      break;
    }
    case wire::Message::Body::RECORD_BATCH: {
      if (!body.hasRecordBatch()) return MissingBody("record_batch");
      auto b = body.getRecordBatch();
      msg::RecordBatch rb;
      rb.first_seq = b.getFirstSeq();
      rb.last_seq = b.getLastSeq();
      TIDEMAP_RETURN_IF_ERROR(ReadRecords(b.getRecords(), limits, "record_batch", &rb.records));
      m.body = std::move(rb);
      break;
    }
    case wire::Message::Body::BATCH_ACK: {
      if (!body.hasBatchAck()) return MissingBody("batch_ack");
      m.body = msg::BatchAck{body.getBatchAck().getLastSeq()};
      break;
    }
    case wire::Message::Body::BATCH_REFUSED: {
      if (!body.hasBatchRefused()) return MissingBody("batch_refused");
      auto b = body.getBatchRefused();
      capnp::Text::Reader reason = b.getReason();
      m.body = msg::BatchRefused{b.getLastSeq(), std::string(reason.cStr(), reason.size())};
      break;
    }
    case wire::Message::Body::TREE_NODES: {
      if (!body.hasTreeNodes()) return MissingBody("tree_nodes");
      auto b = body.getTreeNodes();
      msg::TreeNodes t;
      t.diff_id = b.getDiffId();
      t.level = b.getLevel();
      t.last = b.getLast();
      auto parents = b.getParents();
      auto children = b.getChildDigests();
      TIDEMAP_RETURN_IF_ERROR(
          ReadList<uint32_t>(parents, limits, "tree_nodes", "parents", &t.parents));
      TIDEMAP_RETURN_IF_ERROR(
          ReadList<uint64_t>(children, limits, "tree_nodes", "child digests", &t.child_digests));
      TIDEMAP_RETURN_IF_ERROR(CheckTreeShape(t.parents.size(), t.child_digests.size()));
      m.body = std::move(t);
      break;
    }
    case wire::Message::Body::BUCKET_SUMMARIES: {
      if (!body.hasBucketSummaries()) return MissingBody("bucket_summaries");
      auto b = body.getBucketSummaries();
      msg::BucketSummaries s;
      s.diff_id = b.getDiffId();
      s.last = b.getLast();
      TIDEMAP_RETURN_IF_ERROR(
          ReadList<uint32_t>(b.getBuckets(), limits, "bucket_summaries", "buckets", &s.buckets));
      TIDEMAP_RETURN_IF_ERROR(
          ReadList<uint32_t>(b.getCounts(), limits, "bucket_summaries", "counts", &s.counts));
      TIDEMAP_RETURN_IF_ERROR(CheckSummaryCounts(s.buckets.size(), s.counts.size()));
      capnp::Data::Reader blob = b.getEntries();
      TIDEMAP_ASSIGN_OR_RETURN(
          s.entries, codec_internal::DecodeSummaryEntries(
                         std::string_view(reinterpret_cast<const char*>(blob.begin()), blob.size()),
                         s.counts, limits));
      m.body = std::move(s);
      break;
    }
    case wire::Message::Body::DIFF_RECORDS: {
      if (!body.hasDiffRecords()) return MissingBody("diff_records");
      auto b = body.getDiffRecords();
      msg::DiffRecords d;
      d.diff_id = b.getDiffId();
      d.last = b.getLast();
      TIDEMAP_RETURN_IF_ERROR(ReadRecords(b.getRecords(), limits, "diff_records", &d.records));
      TIDEMAP_RETURN_IF_ERROR(
          ReadList<uint64_t>(b.getRequests(), limits, "diff_records", "requests", &d.requests));
      m.body = std::move(d);
      break;
    }
    case wire::Message::Body::DIFF_END: {
      if (!body.hasDiffEnd()) return MissingBody("diff_end");
      m.body = msg::DiffEnd{body.getDiffEnd().getDiffId()};
      break;
    }
    default:
      // A newer peer's body type, or garbage: either way not ours to guess at.
      return Status::InvalidArgument("unknown body type " +
                                     std::to_string(static_cast<unsigned>(body.which())));
  }
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------
// Summary entry blob (grammar at the top of this file).

namespace codec_internal {

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

  uint64_t n_origins = 0;
  if (!GetVarint64(&in, &n_origins)) return malformed("bad origin count");
  if (n_origins == 0 || n_origins > count) {
    return malformed(std::to_string(n_origins) + " origins for " + std::to_string(count) +
                     " entries");
  }
  if (n_origins > in.size() / 8) return malformed("origin table truncated");
  std::vector<uint64_t> origins(n_origins);
  for (uint64_t& origin : origins) GetFixed64LE(&in, &origin);  // size checked above

  uint64_t phys_base = 0;
  if (!GetVarint64(&in, &phys_base)) return malformed("bad physical time base");
  if (phys_base > Timestamp::kPhysicalMax) return malformed("physical time base out of range");
  if (in.size() < 4) return malformed("widths truncated");
  const auto width = [&](size_t i) { return static_cast<unsigned>(static_cast<uint8_t>(in[i])); };
  const unsigned first_kh_bits = width(0);
  const unsigned kh_bits = width(1);
  const unsigned phys_bits = width(2);
  const unsigned logical_bits = width(3);
  in.remove_prefix(4);
  if (first_kh_bits > 64 || kh_bits > 64 || phys_bits > 48 || logical_bits > 16) {
    return malformed("field width out of range");
  }
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

Result<size_t> PackedSize(std::string_view frame) {
  if (frame.size() % sizeof(capnp::word) != 0) {
    return Status::InvalidArgument("not a whole number of words");
  }
  try {
    kj::Array<capnp::word> words = kj::heapArray<capnp::word>(frame.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), frame.data(), frame.size());
    capnp::FlatArrayMessageReader reader(words);
    capnp::MallocMessageBuilder builder;
    builder.setRoot(reader.getRoot<wire::Message>());
    kj::VectorOutputStream out;
    capnp::writePackedMessage(out, builder);
    return out.getArray().size();
  } catch (const kj::Exception& e) {
    return Status::Corruption(e.getDescription().cStr());
  }
}

}  // namespace codec_internal

// ---------------------------------------------------------------------------

Result<std::string> EncodeMessage(const msg::Message& m) {
  TIDEMAP_RETURN_IF_ERROR(CheckCapnpListSizes(m));
  try {
    const size_t estimate = std::min(EstimateWords(m), kCapnpListMax);
    capnp::MallocMessageBuilder builder(static_cast<unsigned>(estimate));
    TIDEMAP_RETURN_IF_ERROR(BuildMessage(m, builder.initRoot<wire::Message>()));
    const size_t words = capnp::computeSerializedSizeInWords(builder);
    std::string out(words * sizeof(capnp::word), '\0');
    kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
    capnp::writeMessage(stream, builder);
    TIDEMAP_CHECK(stream.getArray().size() == out.size());
    return out;
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
  if (bytes.size() % sizeof(capnp::word) != 0) {
    return Status::Corruption("sync frame: " + Str(bytes.size()) +
                              " bytes is not a whole number of 8-byte words");
  }
  try {
    // Cap'n Proto reads words in place; only a misaligned frame is copied
    // (into a buffer no larger than the frame, already checked above).
    kj::Array<capnp::word> aligned;
    kj::ArrayPtr<const capnp::word> words;
    if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) == 0) {
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(bytes.data()),
                           bytes.size() / sizeof(capnp::word));
    } else {
      aligned = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
      std::memcpy(aligned.begin(), bytes.data(), bytes.size());
      words = aligned;
    }
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
