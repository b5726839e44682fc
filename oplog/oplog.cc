// Oplog row format (keys come from storage/rows.h):
//
//   oplog key   := 'o' seq:u64 (big-endian, so rows sort by seq)
//   oplog value := flags:u8 hlc:u64 origin:u64 via:u64 lp(map) lp(key) checksum:u32
//       via      := the peer the change arrived from, 0 for a local write
//       flags    := bit0 tombstone; other bits zero
//       checksum := low 32 bits of XXH3-64 of every byte before it, seeded with seq
//   meta 'pruned_through' -> u64: every seq at or below it was deleted
//   meta 'peer/' node:u64 -> acked:u64 incarnation:u64 received:u64
//       acked       := the peer acknowledged our rows up to this seq
//       incarnation := the peer database these numbers are about (0: unknown)
//       received    := we acknowledged the peer's rows up to this seq
#include "oplog/oplog.h"

#include <algorithm>

#include "base/coding.h"
#include "base/hash.h"
#include "storage/rows.h"

namespace tidemap {

namespace {

constexpr std::string_view kMetaPrunedThrough = "pruned_through";
constexpr size_t kPruneBatchRows = 10'000;

std::string PeerKey(uint64_t peer) {
  std::string name(rows::kMetaPeerPrefix);
  PutFixed64BE(&name, peer);
  return rows::MetaKey(name);
}

uint32_t RowChecksum(uint64_t seq, std::string_view body) {
  return static_cast<uint32_t>(Hash64(body, seq));
}

std::string EncodePeerState(const PeerState& p) {
  std::string out;
  PutFixed64BE(&out, p.acked);
  PutFixed64BE(&out, p.incarnation);
  PutFixed64BE(&out, p.received);
  return out;
}

Result<PeerState> DecodePeerState(std::string_view bytes) {
  PeerState p;
  if (!GetFixed64BE(&bytes, &p.acked) || !GetFixed64BE(&bytes, &p.incarnation) ||
      !GetFixed64BE(&bytes, &p.received) || !bytes.empty()) {
    return Status::Corruption("meta: malformed peer row");
  }
  return p;
}

Result<uint64_t> ReadU64OrZero(const Store& store, std::string_view meta_name) {
  auto bytes = store.Get(rows::MetaKey(meta_name));
  if (bytes.status().IsNotFound()) return uint64_t{0};
  if (!bytes.ok()) return bytes.status();
  return rows::DecodeU64(*bytes, meta_name);
}

}  // namespace

std::string Oplog::RowKey(uint64_t seq) {
  std::string out(1, rows::kOplogPrefix);
  PutFixed64BE(&out, seq);
  return out;
}

std::string Oplog::EncodeRow(const OplogEntry& entry) {
  std::string out;
  out.reserve(1 + 16 + 4 + entry.map.size() + entry.key.size() + 4);
  out.push_back(static_cast<char>(entry.tombstone ? 1 : 0));
  PutFixed64BE(&out, entry.version.hlc.raw);
  PutFixed64BE(&out, entry.version.origin);
  PutFixed64BE(&out, entry.via);
  PutLengthPrefixed(&out, entry.map);
  PutLengthPrefixed(&out, entry.key);
  PutFixed32BE(&out, RowChecksum(entry.seq, out));
  return out;
}

Result<OplogEntry> Oplog::DecodeRow(uint64_t seq, std::string_view bytes) {
  auto corrupt = [seq](std::string_view why) {
    return Status::Corruption("oplog row " + std::to_string(seq) + ": " + std::string(why));
  };
  if (bytes.size() < 4) return corrupt("truncated");
  const std::string_view body = bytes.substr(0, bytes.size() - 4);
  if (DecodeFixed32BE(bytes.data() + body.size()) != RowChecksum(seq, body)) {
    return corrupt("checksum mismatch");
  }
  std::string_view in = body;
  uint8_t flags = 0;
  uint64_t hlc = 0, origin = 0, via = 0;
  std::string_view map, key;
  if (!GetByte(&in, &flags) || !GetFixed64BE(&in, &hlc) || !GetFixed64BE(&in, &origin) ||
      !GetFixed64BE(&in, &via) || !GetLengthPrefixed(&in, &map) || !GetLengthPrefixed(&in, &key) ||
      !in.empty()) {
    return corrupt("malformed");
  }
  if ((flags & ~1u) != 0) return corrupt("unknown flags");
  OplogEntry e;
  e.seq = seq;
  e.map.assign(map);
  e.key.assign(key);
  e.version = Version{Timestamp{hlc}, origin};
  e.tombstone = (flags & 1) != 0;
  e.via = via;
  return e;
}

Result<std::vector<OplogEntry>> Oplog::ReadAfter(uint64_t after_seq, size_t rows_max) const {
  std::vector<OplogEntry> out;
  if (after_seq == UINT64_MAX) return out;
  auto it = store_->NewIterator();
  for (it->Seek(RowKey(after_seq + 1)); it->Valid() && out.size() < rows_max; it->Next()) {
    const std::string_view k = it->key();
    if (k.empty() || k[0] != rows::kOplogPrefix) break;
    if (k.size() != 9) return Status::Corruption("oplog: malformed row key");
    const uint64_t seq = DecodeFixed64BE(k.data() + 1);
    TIDEMAP_ASSIGN_OR_RETURN(OplogEntry e, DecodeRow(seq, it->value()));
    out.push_back(std::move(e));
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  return out;
}

Result<uint64_t> Oplog::FirstSeq() const {
  auto it = store_->NewIterator();
  it->Seek(std::string(1, rows::kOplogPrefix));
  TIDEMAP_RETURN_IF_ERROR(it->status());
  if (!it->Valid() || it->key().size() != 9 || it->key()[0] != rows::kOplogPrefix) {
    return uint64_t{0};
  }
  return DecodeFixed64BE(it->key().data() + 1);
}

Result<uint64_t> Oplog::PrunedThrough() const { return ReadU64OrZero(*store_, kMetaPrunedThrough); }

Status Oplog::SetPeerAck(uint64_t peer, uint64_t seq) {
  auto current = Peer(peer);
  if (!current.ok() && !current.status().IsNotFound()) return current.status();
  PeerState state = current.ok() ? *current : PeerState{};
  if (current.ok() && state.acked >= seq) return Status::Ok();
  state.acked = seq;
  Batch batch;
  batch.Put(PeerKey(peer), EncodePeerState(state));
  // Not synced: a lost ack only means re-sending rows, which is idempotent.
  return store_->Write(&batch, /*sync=*/false);
}

Status Oplog::SetPeerReceived(uint64_t peer, uint64_t seq) {
  TIDEMAP_ASSIGN_OR_RETURN(PeerState state, Peer(peer));
  if (state.received >= seq) return Status::Ok();
  state.received = seq;
  Batch batch;
  batch.Put(PeerKey(peer), EncodePeerState(state));
  // Not synced: a lost one only makes the check for a peer that went back in
  // time (replica/sync.cc) less sensitive, never wrong.
  return store_->Write(&batch, /*sync=*/false);
}

Status Oplog::SetPeer(uint64_t peer, const PeerState& state) {
  Batch batch;
  batch.Put(PeerKey(peer), EncodePeerState(state));
  return store_->Write(&batch, /*sync=*/true);
}

Result<uint64_t> Oplog::PeerAck(uint64_t peer) const {
  TIDEMAP_ASSIGN_OR_RETURN(PeerState state, Peer(peer));
  return state.acked;
}

Result<PeerState> Oplog::Peer(uint64_t peer) const {
  auto bytes = store_->Get(PeerKey(peer));
  if (bytes.status().IsNotFound()) {
    return Status::NotFound("peer " + NodeIdToString(peer) + " is not known");
  }
  if (!bytes.ok()) return bytes.status();
  auto state = DecodePeerState(*bytes);
  if (!state.ok()) return state.status().WithContext("peer " + NodeIdToString(peer));
  return state;
}

Result<std::map<uint64_t, uint64_t>> Oplog::PeerAcks() const {
  std::map<uint64_t, uint64_t> out;
  const std::string prefix = rows::MetaKey(rows::kMetaPeerPrefix);
  auto it = store_->NewIterator();
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    const std::string_view k = it->key();
    if (k.substr(0, prefix.size()) != prefix) break;
    if (k.size() != prefix.size() + 8) return Status::Corruption("meta: malformed peer row");
    TIDEMAP_ASSIGN_OR_RETURN(PeerState state, DecodePeerState(it->value()));
    out[DecodeFixed64BE(k.data() + prefix.size())] = state.acked;
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  return out;
}

Status Oplog::AddPeer(uint64_t peer) {
  auto current = Peer(peer);
  if (current.ok()) return Status::Ok();
  if (!current.status().IsNotFound()) return current.status();
  Batch batch;
  batch.Put(PeerKey(peer), EncodePeerState(PeerState{}));
  return store_->Write(&batch, /*sync=*/true);
}

Status Oplog::RemovePeer(uint64_t peer) {
  Batch batch;
  batch.Delete(PeerKey(peer));
  return store_->Write(&batch, /*sync=*/true);
}

Result<PruneStats> Oplog::Prune(uint64_t last_seq, const OplogRetention& retention) {
  PruneStats stats;
  TIDEMAP_ASSIGN_OR_RETURN(stats.pruned_through, PrunedThrough());
  TIDEMAP_ASSIGN_OR_RETURN(uint64_t first, FirstSeq());
  if (first == 0) return stats;  // empty log

  // Everything every known peer has acknowledged may go.
  TIDEMAP_ASSIGN_OR_RETURN(auto acks, PeerAcks());
  uint64_t prune_to = 0;
  if (!acks.empty()) {
    prune_to = last_seq;
    for (const auto& [peer, seq] : acks) prune_to = std::min(prune_to, seq);
  }

  // The retention cap: rows beyond it go, oldest first, acknowledged or not.
  const uint64_t rows = last_seq >= first ? last_seq - first + 1 : 0;
  if (rows > retention.rows_max) prune_to = std::max(prune_to, last_seq - retention.rows_max);
  const uint64_t bytes = store_->ApproximateBytes(RowKey(0), RowKey(UINT64_MAX));
  if (bytes > retention.bytes_max && rows > 0) {
    const uint64_t keep_rows =
        static_cast<uint64_t>(static_cast<double>(rows) * static_cast<double>(retention.bytes_max) /
                              static_cast<double>(bytes));
    prune_to = std::max(prune_to, last_seq - std::min(keep_rows, rows));
  }
  if (prune_to < first) return stats;

  // Delete in bounded batches; pruned_through moves with each one, so a crash
  // mid-prune leaves a consistent, merely shorter, prune.
  for (uint64_t from = first; from <= prune_to;) {
    const uint64_t to = std::min(prune_to, from + kPruneBatchRows - 1);
    Batch batch;
    for (uint64_t seq = from; seq <= to; ++seq) batch.Delete(RowKey(seq));
    batch.Put(rows::MetaKey(kMetaPrunedThrough), rows::EncodeU64(to));
    TIDEMAP_RETURN_IF_ERROR(store_->Write(&batch, /*sync=*/false));
    stats.rows_pruned += to - from + 1;
    stats.pruned_through = to;
    from = to + 1;
  }
  return stats;
}

}  // namespace tidemap
