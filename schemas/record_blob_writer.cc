// RecordBlobWriter: the record and expiry blobs of schemas/codec.cc, built
// incrementally. The blob's tables come before its records but are known
// only once every record was seen, so the records go into body_ as they
// come and the tables into head_ at Finish.
#include <tidemap/schemas/record_blob_writer.h>

#include <tidemap/base/coding.h>
#include <tidemap/schemas/record_blob_internal.h>

namespace tidemap {

uint64_t RecordBlobWriter::MapIndex(std::string_view map) {
  // Records come in (map, key) order: the map changes seldom.
  if (!maps_.empty() && maps_[prev_map_] == map) return prev_map_;
  if (const auto it = map_index_.find(map); it != map_index_.end()) return it->second;
  map_index_.emplace(std::string(map), maps_.size());
  maps_.emplace_back(map);
  table_bytes_ += map.size() + 1;
  return maps_.size() - 1;
}

uint64_t RecordBlobWriter::OriginIndex(uint64_t origin) {
  if (!origins_.empty() && origins_[prev_origin_] == origin) return prev_origin_;
  const auto [it, added] = origin_index_.try_emplace(origin, origins_.size());
  if (added) {
    origins_.push_back(origin);
    table_bytes_ += 8;
  }
  return it->second;
}

Status RecordBlobWriter::Add(const SnapshotRecordView& r, const char* body) {
  if (r.tombstone && (!r.value.empty() || r.expiry_ms != 0)) {
    return Status::InvalidArgument(
        std::string(body) + ": record " + std::to_string(count_) + " is a tombstone with " +
        (r.value.empty() ? std::string("an expiry")
                         : "a " + std::to_string(r.value.size()) + "-byte value"));
  }
  const uint64_t map = MapIndex(r.map);
  const uint64_t origin = OriginIndex(r.version.origin);
  const unsigned flags = (r.tombstone ? record_blob::kTombstone : 0) |
                         (map != prev_map_ ? record_blob::kMapIndex : 0) |
                         (origin != prev_origin_ ? record_blob::kOriginIndex : 0);
  body_.push_back(static_cast<char>(flags));
  if ((flags & record_blob::kMapIndex) != 0) PutVarint64(&body_, map);
  PutLengthPrefixed(&body_, r.key);
  if (!r.tombstone) PutLengthPrefixed(&body_, r.value);
  const uint64_t hlc = r.version.hlc.raw;
  // The hlc delta is modulo 2^64 by design.
  PutVarint64(&body_, count_ == 0 ? hlc : record_blob::ZigZag(hlc - prev_hlc_));
  if ((flags & record_blob::kOriginIndex) != 0) PutVarint64(&body_, origin);
  if (r.expiry_ms != 0) {
    record_blob::PutExpiryEntry(&expiries_, count_, r.expiry_ms, &next_expiry_);
  }
  prev_map_ = map;
  prev_origin_ = origin;
  prev_hlc_ = hlc;
  ++count_;
  return Status::Ok();
}

void RecordBlobWriter::Finish() {
  head_.clear();
  if (count_ == 0) return;
  PutVarint64(&head_, count_);
  PutVarint64(&head_, maps_.size());
  for (const std::string& map : maps_) PutLengthPrefixed(&head_, map);
  PutVarint64(&head_, origins_.size());
  for (uint64_t origin : origins_) {
    for (int i = 0; i < 8; ++i) head_.push_back(static_cast<char>(origin >> (8 * i)));
  }
}

void RecordBlobWriter::Clear() {
  maps_.clear();
  map_index_.clear();
  origins_.clear();
  origin_index_.clear();
  head_.clear();
  body_.clear();
  expiries_.clear();
  count_ = 0;
  table_bytes_ = 0;
  prev_map_ = prev_origin_ = prev_hlc_ = 0;
  next_expiry_ = 0;
}

}  // namespace tidemap
