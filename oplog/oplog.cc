// Oplog row format (keys come from storage/rows_internal.h). Integers are big-endian
// fixed width unless marked varint; lp(x) is a varint length, then x.
//
//   oplog key   := 'o' last_seq:u64 (big-endian, so rows sort by seq)
//   oplog value := body checksum:u32
//       body     := count:varint entry{count}
//       count    := 1..256 entries, of the consecutive seqs
//                   first_seq = last_seq - count + 1 .. last_seq, in order
//       entry    := flags:u8 hlc:u64 origin:u64 via:u64 lp(map) lp(key)
//       via      := the peer the change arrived from, 0 for a local write
//       flags    := bit0 tombstone; other bits zero
//       checksum := low 32 bits of XXH3-64 of body, seeded with last_seq
//   A row holds the entries of one commit (a commit of more than 256, or of
//   more than about 64 KiB of entries, writes several rows); the key is the
//   row's greatest seq, so Seek(RowKey(s)) finds the row holding s. Rows are
//   deleted whole.
//   meta 'pruned_through' -> u64: every seq at or below it was deleted; always
//       the last seq of a deleted row
//   meta 'peer/' node:u64 -> acked:u64 incarnation:u64 received:u64
//       acked       := the peer acknowledged our rows up to this seq
//       incarnation := the peer database these numbers are about (0: unknown)
//       received    := we acknowledged the peer's rows up to this seq
#include <tidemap/oplog/oplog.h>

#include <algorithm>
#include <cstdint>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

constexpr std::string_view kMetaPrunedThrough = "pruned_through";
// LevelDB rows (of up to Oplog::kRowEntriesMax entries) one prune batch deletes.
constexpr size_t kPruneBatchRows = 10'000;
constexpr size_t kChecksumBytes = 4;
constexpr uint8_t kFlagTombstone = 1;
constexpr size_t kEntryFixedBytes = 1 + 8 + 8 + 8;  // flags hlc origin via

std::string PeerKey(uint64_t peer) {
  std::string name(rows::kMetaPeerPrefix);
  PutFixed64BE(&name, peer);
  return rows::MetaKey(name);
}

uint32_t RowChecksum(uint64_t last_seq, std::string_view body) {
  return static_cast<uint32_t>(Hash64(body, last_seq));
}

size_t VarintBytes(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// The encoded size of one entry (an OplogEntry or an OplogEntryRef).
template <typename Entry>
size_t EntryBytes(const Entry& e) {
  return kEntryFixedBytes + VarintBytes(e.map.size()) + e.map.size() + VarintBytes(e.key.size()) +
         e.key.size();
}

// False when `row_key` is outside the oplog family; a key inside it that is
// not 9 bytes reads as seq 0, which no row has (see MalformedKey).
bool ParseRowKey(std::string_view row_key, uint64_t* last_seq) {
  if (row_key.empty() || row_key[0] != rows::kOplogPrefix) return false;
  *last_seq = row_key.size() == 9 ? DecodeFixed64BE(row_key.data() + 1) : 0;
  return true;
}

Status MalformedKey(std::string_view row_key) {
  return Status::Corruption("oplog: malformed row key " + Printable(row_key));
}

// "oplog row 45..300" for messages; only the last seq when `count` (as read
// from the row, maybe corrupt) does not give a possible range.
std::string DescribeRow(uint64_t last_seq, uint64_t count) {
  if (count == 0 || count > Oplog::kRowEntriesMax || count > last_seq) {
    return "oplog row ending at seq " + std::to_string(last_seq);
  }
  return "oplog row " + std::to_string(last_seq - count + 1) + ".." + std::to_string(last_seq);
}

// Verifies the row stored under RowKey(last_seq) and parses every entry of
// it; appends those with seq > after to `out` (when not null) while it holds
// fewer than `out_max`. `*first_seq` receives the row's first seq.
Status ParseRow(uint64_t last_seq, std::string_view bytes, uint64_t after, size_t out_max,
                std::vector<OplogEntry>* out, uint64_t* first_seq) {
  uint64_t count = 0;
  {
    std::string_view peek = bytes;  // the count, for messages, before it is verified
    if (!GetVarint64(&peek, &count)) count = 0;
  }
  auto corrupt = [&](std::string_view why) {
    return Status::Corruption(DescribeRow(last_seq, count) + ": " + std::string(why));
  };
  if (last_seq == 0) return corrupt("no row has seq 0");
  if (bytes.size() < kChecksumBytes) return corrupt("truncated");
  const std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  if (DecodeFixed32BE(bytes.data() + body.size()) != RowChecksum(last_seq, body)) {
    return corrupt("checksum mismatch");
  }
  std::string_view in = body;
  if (!GetVarint64(&in, &count) || count == 0 || count > Oplog::kRowEntriesMax ||
      count > last_seq) {
    return corrupt("impossible entry count");
  }
  *first_seq = last_seq - count + 1;
  for (uint64_t seq = *first_seq; seq != last_seq + 1; ++seq) {
    uint8_t flags = 0;
    uint64_t hlc = 0, origin = 0, via = 0;
    std::string_view map, key;
    if (!GetByte(&in, &flags) || !GetFixed64BE(&in, &hlc) || !GetFixed64BE(&in, &origin) ||
        !GetFixed64BE(&in, &via) || !GetLengthPrefixed(&in, &map) ||
        !GetLengthPrefixed(&in, &key)) {
      return corrupt("seq " + std::to_string(seq) + " malformed");
    }
    if ((flags & ~kFlagTombstone) != 0)
      return corrupt("seq " + std::to_string(seq) + " unknown flags");
    if (out == nullptr || seq <= after || out->size() >= out_max) continue;
    OplogEntry& e = out->emplace_back();
    e.seq = seq;
    e.map.assign(map);
    e.key.assign(key);
    e.version = Version{Timestamp{hlc}, origin};
    e.tombstone = (flags & kFlagTombstone) != 0;
    e.via = via;
  }
  if (!in.empty()) return corrupt("bytes after the last entry");
  return Status::Ok();
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

namespace {

template <typename Entry>
std::string EncodeRowOf(std::span<const Entry> entries) {
  TIDEMAP_CHECK(!entries.empty() && entries.size() <= Oplog::kRowEntriesMax);
  const uint64_t first_seq = entries.front().seq;
  TIDEMAP_CHECK(first_seq >= 1);
  size_t bytes = VarintBytes(entries.size()) + kChecksumBytes;
  for (const Entry& e : entries) bytes += EntryBytes(e);
  std::string out;
  out.reserve(bytes);
  PutVarint64(&out, entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    TIDEMAP_CHECK_MSG(e.seq == first_seq + i, "oplog seqs must be consecutive");
    out.push_back(static_cast<char>(e.tombstone ? kFlagTombstone : 0));
    PutFixed64BE(&out, e.version.hlc.raw);
    PutFixed64BE(&out, e.version.origin);
    PutFixed64BE(&out, e.via);
    PutLengthPrefixed(&out, e.map);
    PutLengthPrefixed(&out, e.key);
  }
  PutFixed32BE(&out, RowChecksum(entries.back().seq, out));
  return out;
}

template <typename Entry>
void AppendRowsOf(std::span<const Entry> entries, Batch* batch) {
  for (size_t i = 1; i < entries.size(); ++i) {
    TIDEMAP_CHECK_MSG(entries[i].seq == entries[i - 1].seq + 1, "oplog seqs must be consecutive");
  }
  for (size_t begin = 0; begin < entries.size();) {
    size_t end = begin, bytes = 0;
    while (end < entries.size() && end - begin < Oplog::kRowEntriesMax &&
           bytes < Oplog::kRowBytesMax) {
      bytes += EntryBytes(entries[end++]);
    }
    const std::span<const Entry> row = entries.subspan(begin, end - begin);
    batch->Put(Oplog::RowKey(row.back().seq), EncodeRowOf(row));
    begin = end;
  }
}

}  // namespace

void Oplog::AppendRows(std::span<const OplogEntryRef> entries, Batch* batch) {
  AppendRowsOf(entries, batch);
}
void Oplog::AppendRows(std::span<const OplogEntry> entries, Batch* batch) {
  AppendRowsOf(entries, batch);
}
std::string Oplog::EncodeRow(std::span<const OplogEntryRef> entries) {
  return EncodeRowOf(entries);
}
std::string Oplog::EncodeRow(std::span<const OplogEntry> entries) { return EncodeRowOf(entries); }

Result<std::vector<OplogEntry>> Oplog::DecodeRow(uint64_t last_seq, std::string_view bytes) {
  std::vector<OplogEntry> out;
  uint64_t first_seq = 0;
  TIDEMAP_RETURN_IF_ERROR(ParseRow(last_seq, bytes, 0, SIZE_MAX, &out, &first_seq));
  return out;
}

Result<std::vector<OplogEntry>> Oplog::ReadAfter(uint64_t after_seq, size_t entries_max) const {
  std::vector<OplogEntry> out;
  if (after_seq == UINT64_MAX || entries_max == 0) return out;
  auto it = store_->NewIterator();
  // The row holding after_seq + 1 (or the first one after it) sorts first.
  for (it->Seek(RowKey(after_seq + 1)); it->Valid() && out.size() < entries_max; it->Next()) {
    uint64_t last_seq = 0;
    if (!ParseRowKey(it->key(), &last_seq)) break;
    if (last_seq == 0) return MalformedKey(it->key());
    const size_t before = out.size();
    uint64_t first_seq = 0;
    TIDEMAP_RETURN_IF_ERROR(
        ParseRow(last_seq, it->value(), after_seq, entries_max, &out, &first_seq));
    if (before > 0 && first_seq <= out[before - 1].seq) {
      return Status::Corruption(DescribeRow(last_seq, last_seq - first_seq + 1) +
                                ": overlaps the row before it");
    }
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  return out;
}

Result<uint64_t> Oplog::FirstSeq() const {
  auto it = store_->NewIterator();
  it->Seek(RowKey(0));
  TIDEMAP_RETURN_IF_ERROR(it->status());
  uint64_t last_seq = 0;
  if (!it->Valid() || !ParseRowKey(it->key(), &last_seq)) return uint64_t{0};
  if (last_seq == 0) return MalformedKey(it->key());
  uint64_t first_seq = 0;
  TIDEMAP_RETURN_IF_ERROR(ParseRow(last_seq, it->value(), 0, 0, nullptr, &first_seq));
  return first_seq;
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

Result<PruneStats> Oplog::Prune(uint64_t last_seq, const OplogRetention& retention,
                                uint64_t hold_after) {
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
  prune_to = std::min(prune_to, hold_after);

  // The retention cap: entries beyond it go, oldest first, acknowledged or
  // not. It counts entries (seqs), not LevelDB rows.
  const uint64_t entries = last_seq >= first ? last_seq - first + 1 : 0;
  if (entries > retention.rows_max) {
    prune_to = std::max(prune_to, last_seq - retention.rows_max);
  }
  const uint64_t bytes = store_->ApproximateBytes(RowKey(0), RowKey(UINT64_MAX));
  if (bytes > retention.bytes_max && entries > 0) {
    const uint64_t keep_entries = static_cast<uint64_t>(static_cast<double>(entries) *
                                                        static_cast<double>(retention.bytes_max) /
                                                        static_cast<double>(bytes));
    prune_to = std::max(prune_to, last_seq - std::min(keep_entries, entries));
  }
  if (prune_to < first) return stats;

  // Whole rows only: those whose last seq is at or below prune_to. Deleted in
  // bounded batches; pruned_through moves with each one, so a crash mid-prune
  // leaves a consistent, merely shorter, prune. The iterator reads a
  // snapshot, and the batches delete only rows it has passed.
  auto it = store_->NewIterator();
  Batch batch;
  size_t batch_rows = 0;
  uint64_t from = first;  // the first seq the next batch deletes
  uint64_t through = 0;   // the last seq of the last row put in `batch`
  auto commit = [&]() -> Status {
    if (batch_rows == 0) return Status::Ok();
    batch.Put(rows::MetaKey(kMetaPrunedThrough), rows::EncodeU64(through));
    TIDEMAP_RETURN_IF_ERROR(store_->Write(&batch, /*sync=*/false));
    stats.rows_pruned += through - from + 1;
    stats.pruned_through = through;
    from = through + 1;
    batch = Batch();
    batch_rows = 0;
    return Status::Ok();
  };
  for (it->Seek(RowKey(0)); it->Valid(); it->Next()) {
    uint64_t row_last = 0;
    if (!ParseRowKey(it->key(), &row_last)) break;
    if (row_last == 0) return MalformedKey(it->key());
    if (row_last > prune_to) break;
    batch.Delete(it->key());
    through = row_last;
    if (++batch_rows == kPruneBatchRows) TIDEMAP_RETURN_IF_ERROR(commit());
  }
  TIDEMAP_RETURN_IF_ERROR(it->status());
  TIDEMAP_RETURN_IF_ERROR(commit());
  return stats;
}

}  // namespace tidemap
