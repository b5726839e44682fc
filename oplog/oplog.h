// The operation log: one row per change that won locally (a local write, or a
// remote record that beat what we had), under a sequence number that never
// repeats. Peers stream from it by cursor; rows every known peer has
// acknowledged are pruned, and a retention cap bounds the log when a peer
// stays away (that peer is then repaired by anti-entropy, never given a gap).
//
// Appending is the replica's job: it puts EncodeRow(entry) under RowKey(seq) in
// the same Batch as the record the row describes. This class reads, tracks
// peer cursors and prunes. Thread-safe: every call is a self-contained LevelDB
// read or write.
#ifndef TIDEMAP_OPLOG_OPLOG_H_
#define TIDEMAP_OPLOG_OPLOG_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hlc/hlc.h"
#include "storage/storage.h"

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

// When rows go even though a peer has not acknowledged them.
struct OplogRetention {
  uint64_t rows_max = 1'000'000;
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
  uint64_t rows_pruned = 0;
  uint64_t pruned_through = 0;  // every seq <= this is gone
};

class Oplog {
 public:
  static std::string RowKey(uint64_t seq);
  static std::string EncodeRow(const OplogEntry& entry);
  // Corruption names the seq.
  static Result<OplogEntry> DecodeRow(uint64_t seq, std::string_view bytes);

  // `store` must outlive the Oplog.
  explicit Oplog(Store* store) : store_(store) {}

  // Up to `rows_max` entries with seq > after_seq, in seq order.
  Result<std::vector<OplogEntry>> ReadAfter(uint64_t after_seq, size_t rows_max) const;

  // The smallest retained seq, or 0 when the log holds no rows.
  Result<uint64_t> FirstSeq() const;
  // Every seq at or below this has been pruned (0: none ever was).
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

  // Deletes rows up to the minimum acknowledged cursor of known peers (none
  // when no peer is known), and further, oldest first, while the log exceeds
  // `retention`. `last_seq` is the highest seq assigned so far.
  Result<PruneStats> Prune(uint64_t last_seq, const OplogRetention& retention);

 private:
  Store* const store_;
};

}  // namespace tidemap

#endif  // TIDEMAP_OPLOG_OPLOG_H_
