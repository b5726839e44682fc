// A snapshot file's contents as plain C++ values: what the replica exports
// and imports (replica/snapshot.h) and the snapshot file codec writes and
// reads (schemas/snapshot_file.h). No Cap'n Proto in it.
#ifndef TIDEMAP_SCHEMAS_SNAPSHOT_H_
#define TIDEMAP_SCHEMAS_SNAPSHOT_H_

#include <cstdint>
#include <string_view>

#include <tidemap/hlc/hlc.h>

namespace tidemap {

// The snapshot file format this build writes and reads.
inline constexpr uint32_t kSnapshotFormatVersion = 1;

// Who and what a snapshot is of. Every record of the source's oplog up to
// `seq` is in it (at its version as of that seq, or a later one that
// replaced it by `seq`), and nothing written after `seq`.
struct SnapshotHeader {
  uint32_t format_version = kSnapshotFormatVersion;
  uint64_t node_id = 0;      // the source node
  uint64_t incarnation = 0;  // the source database's incarnation
  uint64_t seq = 0;          // the source's last oplog seq the snapshot covers
  uint64_t records = 0;      // stored records, tombstones included
  uint64_t created_ms = 0;   // when the export started (ms since the Unix epoch)
};

// One record of a snapshot as views (a KeyedRecord without its copies):
// what a snapshot cursor reads from a row and the file writer encodes. The
// views borrow the reader's buffers and are valid until its next call.
struct SnapshotRecordView {
  std::string_view map;
  std::string_view key;
  std::string_view value;  // empty for a tombstone
  Version version;
  bool tombstone = false;
  uint64_t expiry_ms = 0;  // 0: never expires; always 0 for a tombstone
};

// The GC watermark of one Merkle bucket (see replica/tombstone_gc_internal.h).
struct SnapshotWatermark {
  uint32_t bucket = 0;
  Version version;

  friend bool operator==(const SnapshotWatermark&, const SnapshotWatermark&) = default;
};

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_SNAPSHOT_H_
