// Snapshot files: a replica's contents (schemas/snapshot.h) as a stream of
// checksummed Cap'n Proto frames (schemas/snapshot.capnp; the byte grammar is
// at the top of schemas/snapshot_file.cc).
//
// The writer pushes bytes into a sink as it goes and the reader pulls them
// from a source, so neither holds more than one frame: memory is bounded
// whatever the snapshot's size. The reader trusts nothing: every frame's
// checksum, the order of the frames, the record counts and the whole file's
// checksum are checked, and every error is Corruption whose message starts
// with the offset of the frame at fault ("snapshot offset 1234: ...").
//
// Thread-safety: none; one thread drives a writer or a reader.
#ifndef TIDEMAP_SCHEMAS_SNAPSHOT_FILE_H_
#define TIDEMAP_SCHEMAS_SNAPSHOT_FILE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>
#include <tidemap/schemas/record_blob_reader.h>
#include <tidemap/schemas/record_blob_writer.h>
#include <tidemap/schemas/snapshot.h>

namespace tidemap {

// The first bytes of every snapshot file.
inline constexpr std::string_view kSnapshotMagic = "TIDESNAP";

// The sync decoder's limits, widened to the largest snapshot frame.
inline DecodeLimits SnapshotDecodeLimits() {
  DecodeLimits limits;
  limits.frame_bytes_max = size_t{64} << 20;
  limits.traversal_words_max = (uint64_t{64} << 20) / 8 * 2;
  return limits;
}

struct SnapshotFileLimits {
  // One frame's payload; a record frame holds at least one record, so this
  // must exceed the largest record (Limits::value_bytes_max and its key).
  size_t frame_bytes_max = size_t{64} << 20;
  DecodeLimits decode = SnapshotDecodeLimits();
};

class SnapshotFileWriter {
 public:
  // Receives the file's bytes in order; an error stops the writer (every
  // later call returns it).
  using Sink = std::function<Status(std::string_view bytes)>;
  explicit SnapshotFileWriter(Sink sink);

  // The magic and the header frame. REQUIRES: called first, once.
  Status WriteHeader(const SnapshotHeader& header);
  // One frame of records (non-empty), in (map, key) order across calls.
  // REQUIRES: no record added by AddRecord is pending.
  Status WriteRecords(const std::vector<KeyedRecord>& records);
  // The same frames built a record at a time, from views (copied before
  // AddRecord returns): AddRecord adds one record to the frame being built
  // (InvalidArgument for a tombstone with a value or an expiry; the record
  // is then not added), FlushRecords writes the pending records as one
  // frame (nothing when none is pending). The caller cuts the frames, e.g.
  // when pending_bytes() passes its frame size.
  Status AddRecord(const SnapshotRecordView& record);
  Status FlushRecords();
  size_t pending_records() const { return pending_.count(); }
  size_t pending_bytes() const { return pending_.bytes(); }
  // One frame of bucket GC watermarks, after every record frame.
  Status WriteWatermarks(const std::vector<SnapshotWatermark>& watermarks);
  // The trailer: the record and frame counts and the file's checksum.
  Status Finish();

  uint64_t bytes() const { return bytes_; }
  uint64_t records() const { return records_; }

 private:
  Status WriteFrame(std::string_view payload);
  Sink sink_;
  RecordBlobWriter pending_;       // the records frame being built
  std::string frame_;              // reused: a records frame's payload
  std::vector<uint64_t> segment_;  // reused, zeroed: a records frame's words
  Status error_;
  uint64_t bytes_ = 0;
  uint64_t records_ = 0;
  uint64_t frames_ = 0;
  uint64_t chain_ = 0;  // the file checksum so far
};

enum class SnapshotPart { kRecords, kWatermarks, kEnd };

class SnapshotFileReader {
 public:
  // Fills up to `n` bytes at `buf`; returns how many (0 only at the end).
  using Source = std::function<Result<size_t>(char* buf, size_t n)>;
  explicit SnapshotFileReader(Source source, SnapshotFileLimits limits = {});

  // The magic and the header frame. REQUIRES: called first, once.
  Result<SnapshotHeader> ReadHeader();
  // The next frame: its records appended to `*records` (kRecords) or its
  // watermarks to `*watermarks` (kWatermarks); kEnd once the trailer was read,
  // matched every count and the file checksum, and nothing follows it.
  Result<SnapshotPart> Next(std::vector<KeyedRecord>* records,
                            std::vector<SnapshotWatermark>* watermarks);
  // The same, a records frame's records passed to `on_record` one at a
  // time, as views into the reader's frame buffer valid during the call,
  // instead of copied into a vector. An error of `on_record` stops the read
  // and is returned as is; the records before it were passed on.
  Result<SnapshotPart> Next(const RecordViewFn& on_record,
                            std::vector<SnapshotWatermark>* watermarks);

  // Bytes read so far.
  uint64_t offset() const { return offset_; }
  uint64_t records() const { return records_; }

 private:
  // Reads exactly `n` bytes; false at a clean end before the first byte.
  Result<bool> ReadExact(char* buf, size_t n, std::string_view what);
  // The next frame's payload into payload_ (8-byte aligned words).
  Result<bool> ReadFrame();
  Status Fail(uint64_t at, const std::string& reason) const;

  Source source_;
  SnapshotFileLimits limits_;
  std::vector<uint64_t> payload_;  // words, for Cap'n Proto's alignment
  size_t payload_bytes_ = 0;
  uint64_t frame_offset_ = 0;  // where the frame being decoded starts
  uint64_t offset_ = 0;
  uint64_t records_ = 0;
  uint64_t frames_ = 0;
  uint64_t chain_ = 0;
  SnapshotHeader header_;
  bool watermarks_seen_ = false;
  bool ended_ = false;
};

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_SNAPSHOT_FILE_H_
