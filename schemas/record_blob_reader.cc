// RecordBlobReader: the record blob's decoder of schemas/codec.cc, copying
// nothing, with the expiry blob read alongside: its next entry names the
// index of the next record that has an expiry. ExpiryCursor, the expiry
// blob's decoder, lives here too.
#include <tidemap/schemas/record_blob_reader.h>

#include <algorithm>
#include <string>

#include <tidemap/base/coding.h>
#include <tidemap/schemas/record_blob_internal.h>

namespace tidemap {

namespace record_blob {

Status ExpiryCursor::Advance() {
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

Status ExpiryCursor::Malformed(const std::string& why) const {
  return Status::Corruption(std::string(body_) + ": malformed expiries: " + why);
}

}  // namespace record_blob

namespace {

std::string Str(uint64_t n) { return std::to_string(n); }

// The map table of a records blob: a count (1 to `records`) and that many
// length-prefixed names, each at least its length byte.
template <typename Malformed>
Result<std::vector<std::string_view>> ReadMapTable(std::string_view* in, uint64_t records,
                                                   const Malformed& malformed) {
  uint64_t n = 0;
  if (!GetVarint64(in, &n)) return malformed("bad map count");
  if (n == 0 || n > records) return malformed(Str(n) + " maps for " + Str(records) + " records");
  if (n > in->size()) return malformed("map table truncated");
  std::vector<std::string_view> maps(n);
  for (std::string_view& map : maps) {
    if (!GetLengthPrefixed(in, &map)) return malformed("map table truncated");
  }
  return maps;
}

}  // namespace

Status RecordBlobReader::Open(std::string_view blob, std::string_view expiries,
                              const DecodeLimits& limits, const char* body) {
  *this = RecordBlobReader();
  in_ = blob;
  body_ = body;
  record_bytes_max_ = limits.record_bytes_max;
  auto malformed = [body](const std::string& why) {
    return Status::Corruption(std::string(body) + ": malformed records: " + why);
  };
  if (!blob.empty()) {
    if (!GetVarint64(&in_, &count_)) return malformed("bad record count");
    if (count_ > limits.records_max) {
      return Status::InvalidArgument(std::string(body) + ": " + Str(count_) + " records, over " +
                                     "records_max " + Str(limits.records_max));
    }
    if (count_ == 0) return malformed("a non-empty blob of zero records");
    TIDEMAP_ASSIGN_OR_RETURN(maps_, ReadMapTable(&in_, count_, malformed));
    TIDEMAP_ASSIGN_OR_RETURN(origins_,
                             record_blob::ReadOriginTable(&in_, count_, "records", malformed));
    if (count_ > in_.size() / record_blob::kRecordBytesMin) {
      return malformed(Str(count_) + " records cannot fit in " + Str(in_.size()) + " bytes");
    }
  }
  expiry_.emplace(expiries, count_, body);
  return expiry_->Advance();
}

Status RecordBlobReader::BadRecord(const char* why) const {
  return Status::Corruption(std::string(body_) + ": malformed records: record " + Str(next_) +
                            ": " + why);
}

Status RecordBlobReader::Next(SnapshotRecordView* r) {
  uint8_t flags = 0;
  if (!GetByte(&in_, &flags)) return BadRecord("truncated");
  if ((flags & ~record_blob::kFlagsKnown) != 0) return BadRecord("unknown flag bits");
  if ((flags & record_blob::kMapIndex) != 0 && !GetVarint64(&in_, &map_)) {
    return BadRecord("bad map index");
  }
  if (map_ >= maps_.size()) return BadRecord("map index out of range");
  r->map = maps_[map_];
  if (!GetLengthPrefixed(&in_, &r->key)) return BadRecord("key truncated");
  r->tombstone = (flags & record_blob::kTombstone) != 0;
  r->value = {};
  if (!r->tombstone && !GetLengthPrefixed(&in_, &r->value)) return BadRecord("value truncated");
  uint64_t hlc_field = 0;
  if (!GetVarint64(&in_, &hlc_field)) return BadRecord("bad hlc");
  // Modulo 2^64 by design.
  hlc_ = next_ == 0 ? hlc_field : hlc_ + record_blob::UnZigZag(hlc_field);
  if ((flags & record_blob::kOriginIndex) != 0 && !GetVarint64(&in_, &origin_)) {
    return BadRecord("bad origin index");
  }
  if (origin_ >= origins_.size()) return BadRecord("origin index out of range");
  const size_t bytes = r->map.size() + r->key.size() + r->value.size();  // each <= blob size
  if (bytes > record_bytes_max_ - decoded_bytes_) {
    return Status::InvalidArgument(std::string(body_) + ": " + Str(decoded_bytes_ + bytes) +
                                   " bytes of map names, keys and values, over " +
                                   "record_bytes_max " + Str(record_bytes_max_));
  }
  decoded_bytes_ += bytes;
  r->version = Version{Timestamp{hlc_}, origins_[origin_]};
  r->expiry_ms = 0;
  if (expiry_->index() == next_) {
    if (r->tombstone) return expiry_->Malformed("a tombstone with an expiry");
    r->expiry_ms = expiry_->expiry_ms();
    TIDEMAP_RETURN_IF_ERROR(expiry_->Advance());
  }
  ++next_;
  return Status::Ok();
}

Status RecordBlobReader::Finish() const {
  if (in_.empty()) return Status::Ok();
  return Status::Corruption(std::string(body_) + ": malformed records: " + Str(in_.size()) +
                            " bytes after the last record");
}

Result<uint64_t> VisitRecordBlob(std::string_view blob, std::string_view expiries,
                                 const DecodeLimits& limits, const char* body,
                                 const RecordViewFn& fn) {
  RecordBlobReader reader;
  TIDEMAP_RETURN_IF_ERROR(reader.Open(blob, expiries, limits, body));
  SnapshotRecordView r;
  for (uint64_t i = 0; i < reader.count(); ++i) {
    TIDEMAP_RETURN_IF_ERROR(reader.Next(&r));
    TIDEMAP_RETURN_IF_ERROR(fn(r));
  }
  TIDEMAP_RETURN_IF_ERROR(reader.Finish());
  return reader.count();
}

}  // namespace tidemap
