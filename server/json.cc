#include <tidemap/server/json.h>

#include <algorithm>

#include <tidemap/base/coding.h>
#include <tidemap/base/crypto.h>
#include <tidemap/base/version.h>

namespace tidemap {

void PutBytesJson(nlohmann::json* obj, const std::string& field, std::string_view bytes) {
  if (IsValidUtf8(bytes)) {
    (*obj)[field] = std::string(bytes);
  } else {
    (*obj)[field + "_base64"] = crypto::Base64Encode(bytes);
  }
}

namespace {

// A string field, or null when empty (unknown).
nlohmann::json StringOrNull(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}

}  // namespace

std::string ExpiryString(uint64_t expiry_ms) {
  if (expiry_ms == 0) return std::string();
  return Timestamp::FromParts(std::min(expiry_ms, Timestamp::kPhysicalMax), 0).ToString();
}

nlohmann::json StatusJson(const StatusInfo& info, const std::vector<net::PeerStatus>& peers) {
  const ReplicaStats& s = info.stats;
  nlohmann::json j;
  j["node_id"] = NodeIdToString(s.node_id);
  j["public_key"] = info.public_key;
  j["version"] = TIDEMAP_VERSION_STRING;
  j["keys"] = s.keys;
  j["tombstones"] = s.tombstones;
  j["merkle_root"] = info.merkle_root.ToHex();
  j["hlc"] = s.hlc_last.ToString();
  j["tombstones_purged"] = s.tombstones_purged;
  j["gc_watermark"] = s.gc_watermark.hlc.ToString();
  j["ttl"] = {{"next_expiry", StringOrNull(ExpiryString(s.next_expiry_ms))},
              {"expired", s.expired},
              {"expired_purged", s.expired_purged}};
  j["clears"] = {
      {"maps", s.cleared_maps}, {"pending", s.clear_pending_maps}, {"removed", s.clear_removed}};
  j["oplog"] = {{"first_seq", s.oplog_first_seq},
                {"last_seq", s.oplog_last_seq},
                {"pruned_through", s.oplog_pruned_through}};
  // A storage error other than a full file system keeps its own state.
  const bool refused = !s.storage.error.empty() && s.usage.state != StorageState::kFull;
  j["storage"] = {{"state", refused ? std::string("writes_refused")
                                    : std::string(StorageStateName(s.usage.state))},
                  {"error", StringOrNull(s.storage.error)},
                  {"used_bytes", s.disk_bytes},
                  {"quota_bytes", s.usage.quota_bytes}};
  nlohmann::json list = nlohmann::json::array();
  for (const net::PeerStatus& p : peers) {
    list.push_back({{"node_id", NodeIdToString(p.node_id)},
                    {"public_key", StringOrNull(p.public_key)},
                    {"address", StringOrNull(p.address)},
                    {"connected", p.connected},
                    {"acked_seq", p.acked_seq},
                    {"lag", p.lag},
                    {"lag_seconds", p.lag_seconds},
                    {"clock_offset_ms", p.clock_offset_ms},
                    {"last_error", StringOrNull(p.last_error)},
                    {"sync_in_progress", p.sync_in_progress},
                    {"sync_percent", p.sync_percent}});
  }
  j["peers"] = std::move(list);
  return j;
}

nlohmann::json ScanPageJson(const ScanPage& page) {
  nlohmann::json items = nlohmann::json::array();
  for (const ScanItem& item : page.items) {
    nlohmann::json obj;
    PutBytesJson(&obj, "key", item.key);
    PutBytesJson(&obj, "value", item.value);
    obj["hlc"] = item.version.hlc.ToString();
    obj["origin"] = NodeIdToString(item.version.origin);
    if (item.expiry_ms != 0) obj["expires"] = ExpiryString(item.expiry_ms);
    items.push_back(std::move(obj));
  }
  nlohmann::json j;
  j["items"] = std::move(items);
  if (!page.next.has_value()) {
    j["next"] = nullptr;
  } else if (IsValidUtf8(*page.next)) {
    j["next"] = *page.next;
  } else {
    j["next"] = nullptr;
    j["next_base64"] = crypto::Base64Encode(*page.next);
  }
  return j;
}

nlohmann::json ErrorJson(const Status& status) {
  return {{"error", status.message()}, {"code", std::string(Status::CodeName(status.code()))}};
}

}  // namespace tidemap
