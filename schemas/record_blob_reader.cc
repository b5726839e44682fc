// VisitRecordBlob: the record blob's decoder of schemas/codec.cc
// (codec_internal::DecodeRecords, then DecodeExpiries) as one pass that
// copies nothing. The expiry blob is read alongside the records: its next
// entry names the index of the next record that has an expiry.
#include <tidemap/schemas/record_blob_reader.h>

#include <algorithm>
#include <string>
#include <vector>

#include <tidemap/base/coding.h>

namespace tidemap {

namespace {

constexpr unsigned kRecordTombstone = 1;
constexpr unsigned kRecordMapIndex = 2;
constexpr unsigned kRecordOriginIndex = 4;
constexpr unsigned kRecordFlagsKnown = kRecordTombstone | kRecordMapIndex | kRecordOriginIndex;
constexpr size_t kRecordBytesMin = 3;  // flags, key_len and hlc

uint64_t UnZigZag(uint64_t z) { return (z >> 1) ^ (0 - (z & 1)); }

std::string Str(uint64_t n) { return std::to_string(n); }

// The blob's header: the count and the two tables, checked against the bytes left.
struct BlobHead {
  uint64_t count = 0;
  std::vector<std::string_view> maps;
  std::vector<uint64_t> origins;
};

Result<BlobHead> ReadHead(std::string_view* in, const DecodeLimits& limits, const char* body) {
  auto malformed = [body](const std::string& why) {
    return Status::Corruption(std::string(body) + ": malformed records: " + why);
  };
  BlobHead h;
  if (!GetVarint64(in, &h.count)) return malformed("bad record count");
  if (h.count > limits.records_max) {
    return Status::InvalidArgument(std::string(body) + ": " + Str(h.count) + " records, over " +
                                   "records_max " + Str(limits.records_max));
  }
  if (h.count == 0) return malformed("a non-empty blob of zero records");
  uint64_t n = 0;
  if (!GetVarint64(in, &n)) return malformed("bad map count");
  if (n == 0 || n > h.count) return malformed(Str(n) + " maps for " + Str(h.count) + " records");
  if (n > in->size()) return malformed("map table truncated");
  h.maps.resize(n);
  for (std::string_view& map : h.maps) {
    if (!GetLengthPrefixed(in, &map)) return malformed("map table truncated");
  }
  if (!GetVarint64(in, &n)) return malformed("bad origin count");
  if (n == 0 || n > h.count) return malformed(Str(n) + " origins for " + Str(h.count) + " records");
  if (n > in->size() / 8) return malformed("origin table truncated");
  h.origins.resize(n);
  for (uint64_t& origin : h.origins) {
    origin = 0;
    for (int i = 0; i < 8; ++i) origin |= uint64_t{static_cast<uint8_t>((*in)[i])} << (8 * i);
    in->remove_prefix(8);
  }
  if (h.count > in->size() / kRecordBytesMin) {
    return malformed(Str(h.count) + " records cannot fit in " + Str(in->size()) + " bytes");
  }
  return h;
}

// The expiry blob's entries, one at a time: the index of the next record
// with an expiry (count when there is none left) and that expiry.
class ExpiryCursor {
 public:
  ExpiryCursor(std::string_view blob, uint64_t count, const char* body)
      : in_(blob), count_(count), body_(body) {}
  Status Advance() {
    if (in_.empty()) {
      index_ = count_;
      return Status::Ok();
    }
    uint64_t gap = 0;
    if (!GetVarint64(&in_, &gap) || !GetVarint64(&in_, &expiry_ms_)) return Malformed("truncated");
    if (gap >= count_ - std::min(next_, count_)) return Malformed("record index out of range");
    if (expiry_ms_ == 0) return Malformed("an expiry of 0");
    index_ = next_ + gap;
    next_ = index_ + 1;
    return Status::Ok();
  }
  uint64_t index() const { return index_; }
  uint64_t expiry_ms() const { return expiry_ms_; }
  Status Malformed(const std::string& why) const {
    return Status::Corruption(std::string(body_) + ": malformed expiries: " + why);
  }

 private:
  std::string_view in_;
  uint64_t count_;
  const char* body_;
  uint64_t next_ = 0, index_ = 0, expiry_ms_ = 0;
};

}  // namespace

Result<uint64_t> VisitRecordBlob(std::string_view blob, std::string_view expiries,
                                 const DecodeLimits& limits, const char* body,
                                 const RecordViewFn& fn) {
  if (blob.empty()) {
    if (!expiries.empty()) return ExpiryCursor({}, 0, body).Malformed("record index out of range");
    return uint64_t{0};
  }
  std::string_view in = blob;
  TIDEMAP_ASSIGN_OR_RETURN(const BlobHead head, ReadHead(&in, limits, body));
  auto bad_record = [body](uint64_t i, const char* why) {
    return Status::Corruption(std::string(body) + ": malformed records: record " + Str(i) + ": " +
                              why);
  };
  ExpiryCursor expiry(expiries, head.count, body);
  TIDEMAP_RETURN_IF_ERROR(expiry.Advance());
  uint64_t map = 0, origin = 0, hlc = 0;
  size_t decoded_bytes = 0;  // <= limits.record_bytes_max
  for (uint64_t i = 0; i < head.count; ++i) {
    uint8_t flags = 0;
    if (!GetByte(&in, &flags)) return bad_record(i, "truncated");
    if ((flags & ~kRecordFlagsKnown) != 0) return bad_record(i, "unknown flag bits");
    if ((flags & kRecordMapIndex) != 0 && !GetVarint64(&in, &map)) {
      return bad_record(i, "bad map index");
    }
    if (map >= head.maps.size()) return bad_record(i, "map index out of range");
    SnapshotRecordView r;
    r.map = head.maps[map];
    if (!GetLengthPrefixed(&in, &r.key)) return bad_record(i, "key truncated");
    r.tombstone = (flags & kRecordTombstone) != 0;
    if (!r.tombstone && !GetLengthPrefixed(&in, &r.value)) return bad_record(i, "value truncated");
    uint64_t hlc_field = 0;
    if (!GetVarint64(&in, &hlc_field)) return bad_record(i, "bad hlc");
    hlc = i == 0 ? hlc_field : hlc + UnZigZag(hlc_field);  // modulo 2^64 by design
    if ((flags & kRecordOriginIndex) != 0 && !GetVarint64(&in, &origin)) {
      return bad_record(i, "bad origin index");
    }
    if (origin >= head.origins.size()) return bad_record(i, "origin index out of range");
    const size_t bytes = r.map.size() + r.key.size() + r.value.size();
    if (bytes > limits.record_bytes_max - decoded_bytes) {
      return Status::InvalidArgument(std::string(body) + ": " + Str(decoded_bytes + bytes) +
                                     " bytes of map names, keys and values, over " +
                                     "record_bytes_max " + Str(limits.record_bytes_max));
    }
    decoded_bytes += bytes;
    r.version = Version{Timestamp{hlc}, head.origins[origin]};
    if (expiry.index() == i) {
      if (r.tombstone) return expiry.Malformed("a tombstone with an expiry");
      r.expiry_ms = expiry.expiry_ms();
      TIDEMAP_RETURN_IF_ERROR(expiry.Advance());
    }
    TIDEMAP_RETURN_IF_ERROR(fn(r));
  }
  if (!in.empty()) {
    return Status::Corruption(std::string(body) + ": malformed records: " + Str(in.size()) +
                              " bytes after the last record");
  }
  return head.count;
}

}  // namespace tidemap
