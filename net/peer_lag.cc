#include <tidemap/net/peer_lag.h>

#include <vector>

namespace tidemap::net {

namespace {

// Entries read from the oplog per call.
constexpr size_t kReadEntries = 4096;

}  // namespace

Result<uint64_t> PeerLag::Scan(uint64_t peer, uint64_t from, uint64_t to) const {
  uint64_t lacking = 0;
  uint64_t at = from;  // entries up to `at` counted
  while (at < to) {
    TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> rows, replica_->ReadOplog(at, kReadEntries));
    if (rows.empty()) break;
    for (const OplogEntry& e : rows) {
      if (e.seq > to) break;
      lacking += e.seq - at - 1;  // seqs no longer in the oplog
      if (e.version.origin != peer && e.via != peer) ++lacking;
      at = e.seq;
    }
    if (rows.back().seq > to) break;
  }
  return lacking + (to - at);  // past the oplog's end: none (at == to), else pruned
}

Status PeerLag::Extend(uint64_t peer, uint64_t last_seq, Marks* marks) const {
  while (marks->back().seq < last_seq) {
    const Mark& back = marks->back();
    const uint64_t to = std::min(last_seq, back.seq + kMarkEntries);
    TIDEMAP_ASSIGN_OR_RETURN(uint64_t lacking, Scan(peer, back.seq, to));
    const Mark next{to, back.lacking + lacking};
    // A short step (the oplog's end) is replaced by the next one.
    if (marks->size() >= 2 && back.seq - (*marks)[marks->size() - 2].seq < kMarkEntries) {
      marks->back() = next;
    } else {
      marks->push_back(next);
    }
  }
  return Status::Ok();
}

Result<uint64_t> PeerLag::Count(uint64_t peer, uint64_t acked, uint64_t last_seq) {
  if (last_seq <= acked) return 0;
  MutexLock lock(&mu_);
  Marks& marks = peers_[peer];
  // A cursor below the first mark (the peer registered again) or an oplog
  // that shrank (a restore) starts the marks over.
  if (marks.empty() || acked < marks.front().seq || last_seq < marks.back().seq) {
    marks = Marks{Mark{acked, 0}};
  }
  TIDEMAP_RETURN_IF_ERROR(Extend(peer, last_seq, &marks));
  // Marks wholly below the cursor are no longer needed.
  while (marks.size() >= 2 && marks[1].seq <= acked) marks.pop_front();
  // marks[0] <= acked < marks[1] (the last mark is at last_seq > acked): the
  // head up to marks[1] is read again, from the cursor, whose entries
  // pruning has not touched.
  const Mark& next = marks[1];
  TIDEMAP_ASSIGN_OR_RETURN(uint64_t head, Scan(peer, acked, next.seq));
  return head + (marks.back().lacking - next.lacking);
}

}  // namespace tidemap::net
