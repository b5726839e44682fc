// The operation log: one entry per change that won locally (a local write, or
// a remote record that beat what we had), under a sequence number that never
// repeats. Peers stream from it by cursor; entries every known peer has
// acknowledged are pruned, and a retention cap bounds the log when a peer
// stays away (that peer is then repaired by anti-entropy, never given a gap).
//
// Entries are packed: one LevelDB row holds a run of up to kRowEntriesMax
// consecutive seqs written by one commit, keyed by the greatest of them, so a
// commit of many changes inserts a few oplog rows rather than one per change.
// Pruning deletes whole rows only.
//
// Appending is the replica's job: AppendRows puts a commit's entries into the
// same Batch as the records they describe. This class reads, tracks peer
// cursors and prunes. Thread-safe: every call is a self-contained LevelDB read
// or write.
#ifndef TIDEMAP_OPLOG_OPLOG_H_
#define TIDEMAP_OPLOG_OPLOG_H_

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

struct OplogEntry {
  uint64_t seq = 0;
  std::string map;
  std::string key;
  Version version;
  bool tombstone = false;
  // The peer this change arrived from (0: written here). Streaming never sends
  // a row back to the peer it came from, nor to the node that wrote it.
  uint64_t via = 0;

  friend bool operator==(const OplogEntry&, const OplogEntry&) = default;
};

// An entry on its way into a row, viewing a map and key owned elsewhere (the
// commit being built): appending a commit's entries copies no strings.
struct OplogEntryRef {
  uint64_t seq = 0;
  std::string_view map;
  std::string_view key;
  Version version;
  bool tombstone = false;
  uint64_t via = 0;
};

// When rows go even though a peer has not acknowledged them.
struct OplogRetention {
  uint64_t rows_max = 1'000'000;             // entries (seqs), not LevelDB rows
  uint64_t bytes_max = uint64_t{256} << 20;  // approximate on-disk bytes
};

// What this replica keeps about one peer (a node id), under its cursor row.
struct PeerState {
  uint64_t acked = 0;  // the peer acknowledged our oplog up to this seq
  // The peer database (its incarnation, drawn when it was created) that
  // `acked` and `received` are about; 0 while not yet known (a peer
  // registered before any session with it finished its first repair).
  uint64_t incarnation = 0;
  uint64_t received = 0;  // the highest seq of the peer's oplog we acknowledged

  friend bool operator==(const PeerState&, const PeerState&) = default;
};

struct PruneStats {
  uint64_t rows_pruned = 0;     // entries (seqs) deleted, not LevelDB rows
  uint64_t pruned_through = 0;  // every seq <= this is gone
};

class Oplog {
 public:
  // A row holds at most this many entries...
  static constexpr size_t kRowEntriesMax = 256;
  // ...and is cut after the entry that takes its encoded size to this or past
  // it (so a row may exceed it by one entry).
  static constexpr size_t kRowBytesMax = size_t{64} << 10;

  // The key of the row whose last (greatest) seq is `seq`. Rows sort by last
  // seq, so seeking to RowKey(s) lands on the row holding s, if it is stored.
  static std::string RowKey(uint64_t seq);

  // Puts `entries` into `batch` as rows under RowKey(last seq of each row),
  // cut every kRowEntriesMax entries or kRowBytesMax bytes. REQUIRES: the
  // seqs are consecutive and ascending, the first one >= 1 (CHECKed). Nothing
  // is put when `entries` is empty.
  static void AppendRows(std::span<const OplogEntryRef> entries, Batch* batch);
  static void AppendRows(std::span<const OplogEntry> entries, Batch* batch);
  // The value of one row holding `entries` (what AppendRows puts under
  // RowKey(entries.back().seq)). REQUIRES: 1 to kRowEntriesMax entries with
  // consecutive ascending seqs, the first one >= 1 (CHECKed).
  static std::string EncodeRow(std::span<const OplogEntryRef> entries);
  static std::string EncodeRow(std::span<const OplogEntry> entries);
  // The entries of the row stored under RowKey(last_seq), verified against its
  // checksum. Corruption names the row's seq range.
  static Result<std::vector<OplogEntry>> DecodeRow(uint64_t last_seq, std::string_view bytes);

  // `store` must outlive the Oplog.
  explicit Oplog(Store* store) : store_(store) {}

  // Exactly the stored entries with seq > after_seq, at most `entries_max`, in
  // seq order (the part of the first row at or below after_seq is skipped).
  // Seqs are consecutive except after a prune: the first entry returned may
  // then be above after_seq + 1 (callers compare after_seq with PrunedThrough).
  Result<std::vector<OplogEntry>> ReadAfter(uint64_t after_seq, size_t entries_max) const;

  // The first seq of the first row still stored, or 0 when the log is empty.
  Result<uint64_t> FirstSeq() const;
  // Every seq at or below this has been pruned (0: none ever was). It is
  // always the last seq of a row (see Prune).
  Result<uint64_t> PrunedThrough() const;

  // Records that `peer` (a node id) acknowledged everything up to `seq`,
  // registering it if unknown. Cursors only move forward; a lower value is
  // ignored. The other fields of its state are kept.
  Status SetPeerAck(uint64_t peer, uint64_t seq);
  // Records that we acknowledged the peer's oplog up to `seq`; forward only,
  // like SetPeerAck. NotFound for a peer that was never registered.
  Status SetPeerReceived(uint64_t peer, uint64_t seq);
  // Replaces the whole state of `peer` (registering it if unknown), cursor
  // included even when it moves back: the sync core does this when the
  // peer's database changed (another incarnation, or one restored from a
  // backup) and a repair made the new state true.
  Status SetPeer(uint64_t peer, const PeerState& state);
  // NotFound for a peer that was never registered.
  Result<uint64_t> PeerAck(uint64_t peer) const;
  Result<PeerState> Peer(uint64_t peer) const;
  Result<std::map<uint64_t, uint64_t>> PeerAcks() const;
  // Registers a peer at cursor 0 if unknown (it then holds back pruning).
  Status AddPeer(uint64_t peer);
  Status RemovePeer(uint64_t peer);

  // Deletes entries up to the minimum acknowledged cursor of known peers (none
  // when no peer is known), and further, oldest first, while the log exceeds
  // `retention`. `last_seq` is the highest seq assigned so far; nothing above
  // it goes (the replica passes its last checkpoint). Whole rows only: the
  // prune point is rounded down to a row boundary, so a row that straddles it
  // stays, and up to kRowEntriesMax - 1 entries below it are kept (read by
  // ReadAfter as usual) beyond what the point or the cap asks.
  // Entries above `hold_after` stay even when every peer acknowledged them
  // (other readers, such as resumable watch streams, still need them), unless
  // the retention cap forces them out; UINT64_MAX holds nothing back.
  Result<PruneStats> Prune(uint64_t last_seq, const OplogRetention& retention,
                           uint64_t hold_after = UINT64_MAX);

 private:
  Store* const store_;
};

}  // namespace tidemap

#endif  // TIDEMAP_OPLOG_OPLOG_H_
