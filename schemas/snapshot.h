// A snapshot file's contents as plain C++ values: what the replica exports
// and imports (replica/snapshot.h) and the snapshot file codec writes and
// reads (schemas/snapshot_file.h). No Cap'n Proto in it.
#ifndef TIDEMAP_SCHEMAS_SNAPSHOT_H_
#define TIDEMAP_SCHEMAS_SNAPSHOT_H_

#include <cstdint>

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

// The GC watermark of one Merkle bucket (see replica/tombstone_gc_internal.h).
struct SnapshotWatermark {
  uint32_t bucket = 0;
  Version version;

  friend bool operator==(const SnapshotWatermark&, const SnapshotWatermark&) = default;
};

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_SNAPSHOT_H_
