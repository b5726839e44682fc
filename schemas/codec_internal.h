// Internals of the sync codec that tests reach directly: the record blob of
// RecordBatch and DiffRecords, the bit-packed BucketSummaries entry blob
// (grammars at the top of schemas/codec.cc) and a measurement helper. Not for
// production callers.
#ifndef TIDEMAP_SCHEMAS_CODEC_INTERNAL_H_
#define TIDEMAP_SCHEMAS_CODEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>

namespace tidemap::codec_internal {

// Encodes `records` as a record blob (empty for no records) with
// RecordBlobWriter (schemas/record_blob_writer.h), the blob's one encoder.
// InvalidArgument for a tombstone with a value or an expiry, which the blobs
// cannot express. `body` names the message in errors ("record_batch",
// "diff_records").
Result<std::string> EncodeRecords(const std::vector<KeyedRecord>& records, const char* body);

// Decodes a record blob with RecordBlobReader (schemas/record_blob_reader.h),
// the blob's one decoder, copying each record out. InvalidArgument over
// limits.records_max or limits.record_bytes_max (checked before the memory is
// reserved or copied); Corruption when the blob is malformed. Every record
// has expiry_ms 0: DecodeExpiries sets them.
Result<std::vector<KeyedRecord>> DecodeRecords(std::string_view blob, const DecodeLimits& limits,
                                               const char* body);

// Encodes the expiries of `records` as an expiry blob (empty when none has
// one), entry by entry as RecordBlobWriter does. REQUIRES: no tombstone has
// an expiry (EncodeRecords refuses it first).
std::string EncodeExpiries(const std::vector<KeyedRecord>& records);

// Sets the expiries an expiry blob lists on `*records` (decoded from the
// same message's record blob), with the expiry blob's one decoder
// (record_blob::ExpiryCursor). Corruption when the blob is malformed: an
// index out of range or not rising, an expiry of 0, or one on a tombstone.
Status DecodeExpiries(std::string_view blob, const char* body, std::vector<KeyedRecord>* records);

// Encodes `entries`, grouped into buckets by `counts` (counts[i] consecutive
// entries per bucket; they must add up to entries.size(), else InvalidArgument).
Result<std::string> EncodeSummaryEntries(const std::vector<uint32_t>& counts,
                                         const std::vector<msg::SummaryEntry>& entries);

// Decodes a blob written by EncodeSummaryEntries with the same `counts`.
// InvalidArgument when the blob's entry count is over limits.list_items_max
// or differs from the sum of `counts`; Corruption when the blob is malformed.
Result<std::vector<msg::SummaryEntry>> DecodeSummaryEntries(std::string_view blob,
                                                            const std::vector<uint32_t>& counts,
                                                            const DecodeLimits& limits);

// The flat Cap'n Proto words a packed frame (an EncodeMessage result)
// unpacks to, within limits.frame_bytes_max; and the packing of such words.
// For tests that measure frames or craft hostile ones word by word.
Result<std::string> UnpackFrame(std::string_view packed, const DecodeLimits& limits = {});
std::string PackFrame(std::string_view words);

}  // namespace tidemap::codec_internal

#endif  // TIDEMAP_SCHEMAS_CODEC_INTERNAL_H_
