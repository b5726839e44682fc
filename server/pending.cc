#include <tidemap/server/pending.h>

#include <algorithm>
#include <charconv>
#include <string>

#include <tidemap/base/crypto.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/server/json.h>

namespace tidemap {

namespace {

// Oplog entries read per ReadOplog call, and at most per page: a page of a
// peer whose cursor sits before a long run of its own entries ends early,
// with a `next`, rather than reading the whole run.
constexpr size_t kReadEntries = 1024;
constexpr uint64_t kScanEntriesMax = 64 * 1024;

bool FromPeer(const OplogEntry& e, uint64_t peer) {
  return e.version.origin == peer || e.via == peer;
}

// Appends to *items the pending entries after `after`, up to `limit` items
// or kScanEntriesMax entries read. Returns the seq the reading stopped at
// (the last entry read; `after` when none was), with *end set when the
// oplog has no entry after it.
Result<uint64_t> Collect(const Replica& replica, uint64_t peer, uint64_t after, size_t limit,
                         std::vector<OplogEntry>* items, bool* end) {
  uint64_t at = after;
  uint64_t read = 0;
  *end = false;
  while (items->size() < limit && read < kScanEntriesMax) {
    TIDEMAP_ASSIGN_OR_RETURN(std::vector<OplogEntry> rows, replica.ReadOplog(at, kReadEntries));
    if (rows.empty()) {
      *end = true;
      break;
    }
    for (OplogEntry& e : rows) {
      at = e.seq;
      ++read;
      if (!FromPeer(e, peer)) items->push_back(std::move(e));
      if (items->size() == limit) break;
    }
  }
  if (!*end) *end = at >= replica.LastSeq();
  return at;
}

double AgeSeconds(const OplogEntry& e, uint64_t now_ms) {
  const uint64_t written_ms = e.version.hlc.physical_ms();
  return now_ms > written_ms ? static_cast<double>(now_ms - written_ms) / 1000.0 : 0;
}

}  // namespace

Result<PendingPage> ReadPending(const Replica& replica, const net::PeerStatus& peer, uint64_t after,
                                size_t limit, uint64_t now_ms) {
  if (limit == 0 || limit > kPendingItemsMax) {
    return Status::InvalidArgument("limit must be 1.." + std::to_string(kPendingItemsMax) +
                                   ", not " + std::to_string(limit));
  }
  PendingPage page;
  page.peer = peer;
  const uint64_t from = std::max(after, peer.acked_seq);
  bool end = false;
  TIDEMAP_ASSIGN_OR_RETURN(uint64_t at,
                           Collect(replica, peer.node_id, from, limit, &page.items, &end));
  if (!end) page.next = at;
  // The oldest pending write is the page's first when the page starts at
  // the cursor; otherwise look for it from the cursor.
  if (from == peer.acked_seq) {
    if (!page.items.empty()) page.oldest_age_seconds = AgeSeconds(page.items.front(), now_ms);
  } else {
    std::vector<OplogEntry> first;
    bool first_end = false;
    TIDEMAP_RETURN_IF_ERROR(
        Collect(replica, peer.node_id, peer.acked_seq, 1, &first, &first_end).status());
    if (!first.empty()) page.oldest_age_seconds = AgeSeconds(first.front(), now_ms);
  }
  return page;
}

Result<net::PeerStatus> FindPeer(const std::vector<net::PeerStatus>& peers, std::string_view text) {
  uint64_t node_id = 0;
  if (text.size() == 16) {
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), node_id, 16);
    if (ec != std::errc() || ptr != text.data() + text.size()) node_id = 0;
  } else if (auto key = crypto::PublicKeyFromText(text); key.ok()) {
    node_id = crypto::NodeIdOf(*key);
  }
  if (node_id == 0) {
    return Status::InvalidArgument(
        "peer must be a public key (64 hex digits) or a node id (16 "
        "hex digits), not '" +
        std::string(text.substr(0, 80)) + "'");
  }
  for (const net::PeerStatus& p : peers) {
    if (p.node_id == node_id) return p;
  }
  return Status::NotFound("no peer " + std::string(text) +
                          " is known here (neither connected nor holding a cursor)");
}

nlohmann::json PendingJson(const std::vector<PendingPage>& pages) {
  nlohmann::json list = nlohmann::json::array();
  for (const PendingPage& page : pages) {
    nlohmann::json items = nlohmann::json::array();
    for (const OplogEntry& e : page.items) {
      // A map's clear is its tombstone at the empty key (Replica::ClearMap).
      const char* op = !e.tombstone ? "put" : e.key.empty() ? "clear" : "delete";
      nlohmann::json item = {{"seq", e.seq}, {"op", op}};
      PutBytesJson(&item, "map", e.map);
      PutBytesJson(&item, "key", e.key);
      item["hlc"] = e.version.hlc.ToString();
      item["origin"] = NodeIdToString(e.version.origin);
      items.push_back(std::move(item));
    }
    const net::PeerStatus& p = page.peer;
    list.push_back(
        {{"node_id", NodeIdToString(p.node_id)},
         {"public_key", p.public_key.empty() ? nlohmann::json() : nlohmann::json(p.public_key)},
         {"acked_seq", p.acked_seq},
         {"count", p.lag},
         {"oldest_age_seconds", page.oldest_age_seconds},
         {"items", std::move(items)},
         {"next", page.next ? nlohmann::json(*page.next) : nlohmann::json()}});
  }
  return {{"peers", std::move(list)}};
}

}  // namespace tidemap
