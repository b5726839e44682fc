// Snapshot files of a node: export (from a replica, into any byte sink),
// verify (a file, without importing it) and import (into a new data dir).
// The CLI's `tidemap snapshot ...` and GET /v1/snapshot use these; the file
// format is schemas/snapshot_file.h, the replica's side replica/snapshot.h.
//
// Thread-safety: the functions may run on any thread, alongside the
// replica's other users; each call is driven by its own thread.
#ifndef TIDEMAP_SERVER_SNAPSHOT_H_
#define TIDEMAP_SERVER_SNAPSHOT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/snapshot.h>
#include <tidemap/schemas/snapshot.h>
#include <tidemap/schemas/snapshot_file.h>
#include <tidemap/server/data_dir.h>

namespace tidemap {

// A record frame is cut after this many bytes of records, or records.
inline constexpr size_t kSnapshotFrameBytes = size_t{1} << 20;
inline constexpr size_t kSnapshotFrameRecordsMax = 8192;

struct SnapshotCounts {
  SnapshotHeader header;
  uint64_t records = 0;     // records in the file
  uint64_t tombstones = 0;  // of them, tombstones
  uint64_t watermarks = 0;  // bucket GC watermarks
  uint64_t bytes = 0;       // the file's size
};

// Streams a snapshot file of `replica`, one frame at a time, in pieces it
// produces on demand: the HTTP route calls Next from a worker between
// writes, so the memory held is one frame whatever the replica's size. The
// replica must outlive the stream.
class SnapshotStream {
 public:
  static Result<std::unique_ptr<SnapshotStream>> Open(const Replica& replica, uint64_t now_ms);
  // Appends at least `bytes_min` bytes of the file to `*out` unless the file
  // ends first; returns false once the file is complete.
  Result<bool> Next(size_t bytes_min, std::string* out);
  const SnapshotCounts& counts() const { return counts_; }

 private:
  SnapshotStream() = default;
  std::unique_ptr<SnapshotCursor> cursor_;
  std::unique_ptr<SnapshotFileWriter> writer_;
  std::string* out_ = nullptr;  // where the writer's sink appends, during Next
  SnapshotCounts counts_;
  bool records_done_ = false;
  bool finished_ = false;
};

// Writes a whole snapshot of `replica` into `sink`.
Result<SnapshotCounts> ExportSnapshot(const Replica& replica, uint64_t now_ms,
                                      const std::function<Status(std::string_view)>& sink);

// Writes a snapshot of `replica` to `path` (through a temporary file beside
// it, renamed when complete and synced).
Result<SnapshotCounts> ExportSnapshotFile(const Replica& replica, uint64_t now_ms,
                                          const std::string& path);

// Reads the whole file at `path` and checks it. Corruption, with the offset
// and the reason, for a truncated, corrupt or other-format file;
// Unavailable when it cannot be read.
Result<SnapshotCounts> VerifySnapshotFile(const std::string& path);

struct SnapshotImportReport {
  SnapshotCounts file;
  std::string public_key;  // the new node's identity
  uint64_t node_id = 0;
  uint64_t incarnation = 0;
  Digest128 merkle_root;
};

// Restores the snapshot at `path` into the data dir `dir`, which must not
// exist or be empty (else Refused). The data dir gets a new identity and
// database (a fresh incarnation); the records keep their versions. The work
// is done in a directory beside `dir`, renamed to `dir` once complete, so a
// failure (a corrupt file, Corruption with the offset) leaves nothing behind.
Result<SnapshotImportReport> ImportSnapshotFile(const std::string& dir, const std::string& path,
                                                const DataDirOptions& options = {});

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_SNAPSHOT_H_
