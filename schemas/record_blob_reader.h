// Reads a record blob and its expiry blob (the grammars at the top of
// schemas/codec.cc) one record at a time, as views into the blobs, without
// building a KeyedRecord. This is the one decoder of the record blob: the
// sync codec's codec_internal::DecodeRecords builds its KeyedRecords with it
// and the snapshot reader (schemas/snapshot_file.h) hands records frames to
// an import with VisitRecordBlob.
//
// Thread-safety: none; one thread uses a reader. Lifetime: the blobs and
// `body` passed to Open must outlive the reader and the views it returns.
#ifndef TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_
#define TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/snapshot.h>

namespace tidemap {

namespace record_blob {

// The entries of an expiry blob, one at a time, for a record blob of `count`
// records: index() is the index of the next record with an expiry (count
// when there is none left) and expiry_ms() is that expiry. The checks, in
// order: an entry truncated, its index out of range or not rising, an expiry
// of 0; the caller refuses a tombstone with Malformed("a tombstone with an
// expiry"). Lifetime: `blob` and `body` must outlive the cursor.
class ExpiryCursor {
 public:
  ExpiryCursor(std::string_view blob, uint64_t count, const char* body)
      : in_(blob), count_(count), body_(body) {}

  // Reads the next entry. Corruption (Malformed) when it breaks a check.
  Status Advance();
  uint64_t index() const { return index_; }
  uint64_t expiry_ms() const { return expiry_ms_; }
  // "BODY: malformed expiries: WHY".
  Status Malformed(const std::string& why) const;

 private:
  std::string_view in_;
  uint64_t count_;
  const char* body_;
  uint64_t next_ = 0, index_ = 0, expiry_ms_ = 0;
};

}  // namespace record_blob

class RecordBlobReader {
 public:
  // Reads the blob's count and tables (none for an empty blob) and the first
  // entry of `expiries`. InvalidArgument over limits.records_max; Corruption
  // (naming `body`) for a malformed head, a count the bytes left cannot hold
  // or a malformed first expiry entry. Nothing is reserved for the tables
  // before their counts are checked against the bytes left.
  Status Open(std::string_view blob, std::string_view expiries, const DecodeLimits& limits,
              const char* body);

  // The number of records, known once Open succeeded.
  uint64_t count() const { return count_; }

  // Reads the next record into `*r` (views into the blobs). Corruption for a
  // malformed record or expiry entry, InvalidArgument when the records so far
  // are over limits.record_bytes_max (checked before the record is returned).
  // REQUIRES: Open succeeded and fewer than count() records were read.
  Status Next(SnapshotRecordView* r);

  // Corruption when bytes follow the last record. REQUIRES: count() records read.
  Status Finish() const;

 private:
  Status BadRecord(const char* why) const;

  std::string_view in_;
  const char* body_ = "";
  size_t record_bytes_max_ = 0;
  uint64_t count_ = 0;
  std::vector<std::string_view> maps_;
  std::vector<uint64_t> origins_;
  std::optional<record_blob::ExpiryCursor> expiry_;
  uint64_t next_ = 0;  // the index of the next record
  uint64_t map_ = 0, origin_ = 0, hlc_ = 0;
  size_t decoded_bytes_ = 0;  // <= record_bytes_max_
};

// Calls `fn` for each record of `blob`, in order, with its expiry from
// `expiries`; the views are into the blobs. Returns how many records there
// were. The errors of RecordBlobReader; an error of `fn` stops the read and
// is returned as is. A record that fails a check is not passed on, but those
// before it were.
using RecordViewFn = std::function<Status(const SnapshotRecordView&)>;
Result<uint64_t> VisitRecordBlob(std::string_view blob, std::string_view expiries,
                                 const DecodeLimits& limits, const char* body,
                                 const RecordViewFn& fn);

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_RECORD_BLOB_READER_H_
