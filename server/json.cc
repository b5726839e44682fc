#include "server/json.h"

#include "base/coding.h"
#include "base/crypto.h"

namespace tidemap {

namespace {

void PutBytes(nlohmann::json* obj, const std::string& field, std::string_view bytes) {
  if (IsValidUtf8(bytes)) {
    (*obj)[field] = std::string(bytes);
  } else {
    (*obj)[field + "_base64"] = crypto::Base64Encode(bytes);
  }
}

}  // namespace

nlohmann::json StatusJson(const StatusInfo& info, const std::map<uint64_t, uint64_t>& peer_acks) {
  const ReplicaStats& s = info.stats;
  nlohmann::json j;
  j["node_id"] = NodeIdToString(s.node_id);
  j["public_key"] = info.public_key;
  j["keys"] = s.keys;
  j["tombstones"] = s.tombstones;
  j["merkle_root"] = info.merkle_root.ToHex();
  j["hlc"] = s.hlc_last.ToString();
  j["oplog"] = {{"first_seq", s.oplog_first_seq},
                {"last_seq", s.oplog_last_seq},
                {"pruned_through", s.oplog_pruned_through}};
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& [node, acked] : peer_acks) {
    peers.push_back({{"node_id", NodeIdToString(node)},
                     {"public_key", nullptr},
                     {"connected", false},
                     {"acked_seq", acked},
                     {"lag", s.oplog_last_seq > acked ? s.oplog_last_seq - acked : 0},
                     {"last_error", nullptr}});
  }
  j["peers"] = std::move(peers);
  return j;
}

nlohmann::json ScanPageJson(const ScanPage& page) {
  nlohmann::json items = nlohmann::json::array();
  for (const ScanItem& item : page.items) {
    nlohmann::json obj;
    PutBytes(&obj, "key", item.key);
    PutBytes(&obj, "value", item.value);
    obj["hlc"] = item.version.hlc.ToString();
    obj["origin"] = NodeIdToString(item.version.origin);
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
