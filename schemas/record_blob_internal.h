// The pieces of the record and expiry blob grammars (at the top of
// schemas/codec.cc) that their one writer (schemas/record_blob_writer.h),
// their one reader (schemas/record_blob_reader.h, with the expiry blob's
// record_blob::ExpiryCursor) and the codec's summary entry blob share.
// Internal to schemas/; not for other callers.
//
// Thread-safety: pure functions.
#ifndef TIDEMAP_SCHEMAS_RECORD_BLOB_INTERNAL_H_
#define TIDEMAP_SCHEMAS_RECORD_BLOB_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/coding.h>
#include <tidemap/base/status.h>

namespace tidemap::record_blob {

// The record flags.
constexpr unsigned kTombstone = 1;
constexpr unsigned kMapIndex = 2;
constexpr unsigned kOriginIndex = 4;
constexpr unsigned kFlagsKnown = kTombstone | kMapIndex | kOriginIndex;
// flags, key_len and hlc: the least a record can take.
constexpr size_t kRecordBytesMin = 3;

// Zigzag: 0, -1, 1, -2 ... as 0, 1, 2, 3 ..., for a difference taken modulo
// 2^64 and read as a signed 64-bit value.
inline uint64_t ZigZag(uint64_t delta) { return (delta << 1) ^ (0 - (delta >> 63)); }
inline uint64_t UnZigZag(uint64_t z) { return (z >> 1) ^ (0 - (z & 1)); }

// The origin table a records or summary entries blob carries: a count (1 to
// `items`) and that many fixed64le node ids, checked against the bytes left
// before it is allocated. `what` names the items in errors ("records");
// `malformed(why)` builds the error.
template <typename Malformed>
Result<std::vector<uint64_t>> ReadOriginTable(std::string_view* in, uint64_t items,
                                              const char* what, const Malformed& malformed) {
  uint64_t n = 0;
  if (!GetVarint64(in, &n)) return malformed("bad origin count");
  if (n == 0 || n > items) {
    return malformed(std::to_string(n) + " origins for " + std::to_string(items) + " " + what);
  }
  if (n > in->size() / 8) return malformed("origin table truncated");
  std::vector<uint64_t> origins(n);
  for (uint64_t& origin : origins) {
    origin = 0;
    for (int i = 0; i < 8; ++i) origin |= uint64_t{static_cast<uint8_t>((*in)[i])} << (8 * i);
    in->remove_prefix(8);
  }
  return origins;
}

// Appends the expiry blob's entry for record `index` (expiry_ms != 0) to
// `*out`; `*next` is the previous entry's index + 1 (0 before the first) and
// is advanced. REQUIRES: index >= *next.
inline void PutExpiryEntry(std::string* out, uint64_t index, uint64_t expiry_ms, uint64_t* next) {
  PutVarint64(out, index - *next);
  PutVarint64(out, expiry_ms);
  *next = index + 1;
}

}  // namespace tidemap::record_blob

#endif  // TIDEMAP_SCHEMAS_RECORD_BLOB_INTERNAL_H_
