// Reads a record blob and its expiry blob (the grammars at the top of
// schemas/codec.cc) one record at a time, as views into the blobs: what
// codec_internal::DecodeRecords and DecodeExpiries accept and refuse, with
// the same limits, but without building a KeyedRecord. The snapshot reader
// (schemas/snapshot_file.h) hands records frames to an import this way.
//
// Thread-safety: none; a call reads its blobs and nothing else.
#ifndef TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_
#define TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_

#include <cstdint>
#include <functional>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/snapshot.h>

namespace tidemap {

// Calls `fn` for each record of `blob`, in order, with its expiry from
// `expiries`; the views are into the blobs. Returns how many records there
// were. Corruption (naming `body`) for a malformed blob, InvalidArgument over
// limits.records_max or limits.record_bytes_max (checked before the first
// record is passed on, for the count, and before each record); an error of
// `fn` stops the read and is returned as is. A record that fails a check is
// not passed on, but those before it were.
using RecordViewFn = std::function<Status(const SnapshotRecordView&)>;
Result<uint64_t> VisitRecordBlob(std::string_view blob, std::string_view expiries,
                                 const DecodeLimits& limits, const char* body,
                                 const RecordViewFn& fn);

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_
