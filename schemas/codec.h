// The wire codec of the sync protocol: msg::Message <-> one frame payload
// (a packed Cap'n Proto message of schemas/sync.capnp, protocol version 1).
//
// The generated Cap'n Proto code stays inside schemas/; this header speaks
// only our types. Nothing here throws: Cap'n Proto's exceptions are caught
// inside and returned as a Status.
//
// Thread-safety: the functions are pure; call them from any thread.
#ifndef TIDEMAP_SCHEMAS_CODEC_H_
#define TIDEMAP_SCHEMAS_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/schemas/messages.h>

namespace tidemap {

// Hard limits a decoder applies to bytes from a peer, checked before the
// memory they would cost is allocated.
struct DecodeLimits {
  // Whole frame payload, checked first, before anything is copied; and
  // what it unpacks to, checked before that is allocated.
  size_t frame_bytes_max = size_t{32} << 20;
  // Cap'n Proto's traversal limit (words read, counting re-reads of shared
  // pointers), which bounds pointer-aliasing amplification. Also bounds the
  // bytes of Data/Text fields read (as words), but not what a record blob
  // decodes to: record_bytes_max bounds that.
  uint64_t traversal_words_max = (uint64_t{32} << 20) / 8 * 2;
  // Cap'n Proto's nesting limit; the protocol itself nests 3 deep.
  int nesting_max = 16;
  // Records of one RecordBatch, DiffRecords or OriginRecords.
  size_t records_max = 100'000;
  // Bytes of map names, keys and values of the records of one RecordBatch,
  // DiffRecords or OriginRecords, as decoded. A map name crosses the wire once per message and
  // is copied into every record of that map, so this, not the frame size,
  // bounds that expansion; checked before each record is copied out. The
  // default holds every frame within frame_bytes_max whose map names are at
  // most 255 bytes (the replica's default limit).
  size_t record_bytes_max = size_t{64} << 20;
  // Items of any other list (tree digests, summary entries, buckets, requests).
  size_t list_items_max = 10'000'000;
};

// Encodes `m` as one frame payload (no length prefix: net/ adds the framing).
// InvalidArgument when `m` is one DecodeMessage would refuse for its shape
// (a tombstone with a value, child digests not a multiple of the parents,
// bucket counts that do not add up to the entries, a physical time past
// Timestamp::kPhysicalMax in a summary entry); size limits are the caller's
// to respect (the peer's DecodeLimits).
Result<std::string> EncodeMessage(const msg::Message& m);

// Decodes one frame payload. `bytes` need not be aligned; it is only read
// during the call. Errors (never a crash, whatever the bytes):
//   InvalidArgument: empty payload, over a limit, an unknown body type,
//                    a well-formed message that breaks a protocol rule;
//   Corruption:      bytes that are not a valid message (truncated, bad
//                    pointers, a malformed record or summary blob, trailing
//                    bytes).
Result<msg::Message> DecodeMessage(std::string_view bytes, const DecodeLimits& limits = {});

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_CODEC_H_
