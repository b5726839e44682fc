// The JSON shapes of the external contract (README: "Scan and paging",
// "Status", "HTTP API"), shared by the CLI and the HTTP API so both print
// exactly the same documents.
#ifndef TIDEMAP_SERVER_JSON_H_
#define TIDEMAP_SERVER_JSON_H_

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <tidemap/base/status.h>
#include <tidemap/net/peer_status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// What status needs beyond ReplicaStats.
struct StatusInfo {
  std::string public_key;  // text form; empty when unknown
  ReplicaStats stats;
  Digest128 merkle_root;
};

// `status --json` / GET /v1/status: node_id, public_key, keys, tombstones,
// merkle_root (32 hex digits), hlc, ttl{next_expiry (printable time or null),
// expired, expired_purged}, oplog{first_seq,last_seq,pruned_through},
// and peers[], one object per entry of `peers`: node_id (16 hex), public_key
// (string or null), address (string or null), connected, acked_seq, lag,
// lag_seconds, clock_offset_ms, last_error (string or null), sync_in_progress,
// sync_percent.
nlohmann::json StatusJson(const StatusInfo& info, const std::vector<net::PeerStatus>& peers);

// A scan page: {"items": [{"key"|"key_base64", "value"|"value_base64", "hlc", "origin"
// [, "expires"]}], "next"}; "expires" (ExpiryString) only on a record with a TTL.
// Text fields are used when the bytes are valid UTF-8, the _base64 ones otherwise
// (a binary `next` key comes as "next": null plus "next_base64").
nlohmann::json ScanPageJson(const ScanPage& page);

// Sets obj[field] to `bytes` when they are valid UTF-8, else obj[field + "_base64"]
// to their base64.
void PutBytesJson(nlohmann::json* obj, const std::string& field, std::string_view bytes);

// An expiry (ms since the Unix epoch) in the printable HLC form, logical
// part 0 ("2026-11-22T02:15:20.123Z-00000"); "" for 0 (none).
std::string ExpiryString(uint64_t expiry_ms);

// {"error": message, "code": code name}
nlohmann::json ErrorJson(const Status& status);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_JSON_H_
