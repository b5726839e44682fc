#include <tidemap/server/metrics.h>

#include <charconv>
#include <cmath>
#include <deque>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

namespace tidemap {

namespace {

// A sample value as Prometheus reads it: shortest round-trip decimal, +Inf, NaN.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

std::string FormatValue(uint64_t v) { return std::to_string(v); }

// Label values escape backslash, double quote and newline.
std::string EscapeLabel(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// One metric family, written only if it has samples.
class Family {
 public:
  Family(std::string name, std::string type, std::string help)
      : name_(std::move(name)), type_(std::move(type)), help_(std::move(help)) {}

  template <typename T>
  Family& Add(T value, const Labels& labels = {}, std::string_view suffix = {}) {
    samples_ += name_;
    samples_ += suffix;
    if (!labels.empty()) {
      samples_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) samples_ += ',';
        samples_ += labels[i].first + "=\"" + EscapeLabel(labels[i].second) + '"';
      }
      samples_ += '}';
    }
    samples_ += ' ';
    samples_ += FormatValue(value);
    samples_ += '\n';
    return *this;
  }

  void AppendTo(std::string* out) const {
    if (samples_.empty()) return;
    *out += "# HELP " + name_ + ' ' + help_ + '\n';
    *out += "# TYPE " + name_ + ' ' + type_ + '\n';
    *out += samples_;
  }

 private:
  std::string name_, type_, help_;
  std::string samples_;
};

Labels Peer(const net::PeerStatus& p) { return {{"peer", NodeIdToString(p.node_id)}}; }

// The families in the order they are written. A deque: families are filled
// through references while more are added.
class Families {
 public:
  Family& Add(std::string name, std::string type, std::string help) {
    return families_.emplace_back(std::move(name), std::move(type), std::move(help));
  }
  std::string Render() const {
    std::string out;
    for (const Family& f : families_) f.AppendTo(&out);
    return out;
  }

 private:
  std::deque<Family> families_;
};

// The storage quota: usage as the replica counts it, the quota, the state
// (one sample per state, 1 for the current one) and its changes.
void AddStorageQuota(const StorageUsage& u, Families* f) {
  f->Add("tidemap_storage_used_bytes", "gauge",
         "Bytes of the database directory as the quota counts them (a measurement plus the "
         "bytes committed since).")
      .Add(u.used_bytes);
  f->Add("tidemap_storage_quota_bytes", "gauge", "The storage quota (0: none).").Add(u.quota_bytes);
  Family& state = f->Add("tidemap_storage_state", "gauge",
                         "1 for the storage state in force: ok, pruning (80% of the quota) or "
                         "full (writes that add data are refused).");
  for (StorageState s : {StorageState::kOk, StorageState::kPruning, StorageState::kFull}) {
    state.Add(uint64_t{s == u.state ? 1u : 0u}, {{"state", std::string(StorageStateName(s))}});
  }
  f->Add("tidemap_storage_state_changes_total", "counter",
         "Changes of the storage state since start.")
      .Add(u.transitions);
}

void AddReplica(const ReplicaStats& r, Families* f) {
  f->Add("tidemap_writes_total", "counter",
         "Local versions committed (each op of a put, delete or batch) since start.")
      .Add(r.local_writes);
  f->Add("tidemap_reads_total", "counter", "Reads (gets and scan pages) since start.").Add(r.reads);
  f->Add("tidemap_remote_records_applied_total", "counter",
         "Records received from peers that won here since start.")
      .Add(r.remote_applied);
  f->Add("tidemap_keys", "gauge", "Live records.").Add(r.keys);
  f->Add("tidemap_tombstones", "gauge", "Deleted records still held (tombstones).")
      .Add(r.tombstones);
  f->Add("tidemap_tombstones_purged_total", "counter",
         "Tombstones purged by GC since the database was created.")
      .Add(r.tombstones_purged);
  f->Add("tidemap_records_expired_total", "counter",
         "Records whose TTL expiry passed, announced to watchers since start.")
      .Add(r.expired);
  f->Add("tidemap_expired_purged_total", "counter", "Expired records purged by GC since start.")
      .Add(r.expired_purged);
  f->Add("tidemap_cleared_records_removed_total", "counter",
         "Records older than their map's clear removed since start.")
      .Add(r.clear_removed);
  f->Add("tidemap_clear_pending_maps", "gauge",
         "Cleared maps whose older records are still being removed.")
      .Add(r.clear_pending_maps);
  f->Add("tidemap_next_expiry_timestamp_seconds", "gauge",
         "When the next record with a TTL expires, not yet announced (Unix time; 0: none).")
      .Add(r.next_expiry_ms / 1000);
  // Seqs are assigned without gaps and pruned as a prefix, so the retained rows are a range.
  const uint64_t oplog_rows = r.oplog_first_seq == 0 ? 0 : r.oplog_last_seq - r.oplog_first_seq + 1;
  f->Add("tidemap_oplog_rows", "gauge", "Rows retained in the oplog.").Add(oplog_rows);
  f->Add("tidemap_oplog_size_bytes", "gauge", "Approximate on-disk bytes of the oplog.")
      .Add(r.oplog_bytes);
  f->Add("tidemap_oplog_last_seq", "gauge", "The highest oplog sequence number assigned.")
      .Add(r.oplog_last_seq);
  f->Add("tidemap_oplog_pruned_rows_total", "counter",
         "Oplog rows pruned (every seq up to this count is gone).")
      .Add(r.oplog_pruned_through);
  f->Add("tidemap_leveldb_size_bytes", "gauge", "Bytes of the LevelDB directory on disk.")
      .Add(r.disk_bytes);
  f->Add("tidemap_storage_writable", "gauge",
         "1 while the storage takes writes; 0 after a storage error until it heals.")
      .Add(uint64_t{r.storage.error.empty() ? 1u : 0u});
  f->Add("tidemap_storage_write_errors_total", "counter",
         "Commits the storage failed (a full disk, too many open files) since start.")
      .Add(r.storage.write_errors);
  f->Add("tidemap_lost_writes_detected_total", "counter",
         "Times a peer held writes this node's database had lost (it then resyncs) since start.")
      .Add(r.storage.lost_writes_detected);
  f->Add("tidemap_storage_recoveries_total", "counter",
         "Times writes came back after a storage error, without a restart, since start.")
      .Add(r.storage.recoveries);
}

// One sample per peer in each per-peer family.
void AddPeers(const std::vector<net::PeerStatus>& peers, Families* f) {
  Family& connected =
      f->Add("tidemap_peer_connected", "gauge", "1 while a session with the peer is up, else 0.");
  Family& bytes_in = f->Add("tidemap_peer_received_bytes_total", "counter",
                            "Bytes received from the peer on the wire.");
  Family& bytes_out =
      f->Add("tidemap_peer_sent_bytes_total", "counter", "Bytes sent to the peer on the wire.");
  Family& frames_in =
      f->Add("tidemap_peer_received_frames_total", "counter", "Frames received from the peer.");
  Family& frames_out =
      f->Add("tidemap_peer_sent_frames_total", "counter", "Frames sent to the peer.");
  Family& records_sent =
      f->Add("tidemap_peer_records_sent_total", "counter", "Records sent to the peer.");
  Family& records_applied = f->Add("tidemap_peer_records_applied_total", "counter",
                                   "Records received from the peer that won here.");
  Family& rounds =
      f->Add("tidemap_sync_rounds_total", "counter", "Completed Merkle tree diffs with the peer.");
  Family& lag =
      f->Add("tidemap_peer_lag_records", "gauge", "Oplog rows the peer has not acknowledged.");
  Family& lag_seconds = f->Add("tidemap_peer_lag_seconds", "gauge",
                               "Age of the oldest change the peer has not acknowledged.");
  Family& offset = f->Add("tidemap_peer_clock_offset_seconds", "gauge",
                          "The peer's clock minus ours, as last measured (0: unknown).");
  Family& progress =
      f->Add("tidemap_peer_sync_progress_ratio", "gauge",
             "Progress of a running tree diff or bootstrap with the peer, 0..1 (0 when idle).");
  for (const net::PeerStatus& p : peers) {
    const Labels l = Peer(p);
    connected.Add(uint64_t{p.connected ? 1u : 0u}, l);
    bytes_in.Add(p.bytes_in, l);
    bytes_out.Add(p.bytes_out, l);
    frames_in.Add(p.frames_in, l);
    frames_out.Add(p.frames_out, l);
    records_sent.Add(p.records_sent, l);
    records_applied.Add(p.records_applied, l);
    rounds.Add(p.sync_rounds, l);
    lag.Add(p.lag, l);
    lag_seconds.Add(p.lag_seconds, l);
    offset.Add(static_cast<double>(p.clock_offset_ms) / 1000.0, l);
    progress.Add(p.sync_in_progress ? p.sync_percent / 100.0 : 0.0, l);
  }
}

// The transport's counters; its refusals are added to `refused`.
void AddTransport(const net::NetCounters& c, Families* f,
                  std::map<std::string, uint64_t>* refused) {
  const Histogram& h = c.sync_round_seconds;
  Family& duration = f->Add("tidemap_sync_duration_seconds", "histogram",
                            "Duration of completed Merkle tree diffs.");
  for (size_t i = 0; i <= h.bounds().size(); ++i) {
    const std::string le = i < h.bounds().size() ? FormatValue(h.bounds()[i]) : "+Inf";
    duration.Add(h.CumulativeCount(i), {{"le", le}}, "_bucket");
  }
  duration.Add(h.sum(), {}, "_sum");
  duration.Add(h.count(), {}, "_count");
  f->Add("tidemap_decode_errors_total", "counter", "Peer frames that failed to decrypt or parse.")
      .Add(c.decode_errors);
  f->Add("tidemap_handshakes_total", "counter", "Peer handshakes completed.")
      .Add(c.handshakes_completed);
  for (const auto& [reason, count] : c.refused_connections) (*refused)[reason] += count;
}

void AddHttp(const HttpCounters& http, Families* f) {
  Family& requests = f->Add("tidemap_http_requests_total", "counter",
                            "HTTP requests answered, by method, route and status code.");
  for (const auto& [key, count] : http.requests) {
    requests.Add(
        count, {{"method", key.method}, {"route", key.route}, {"code", std::to_string(key.code)}});
  }
  Family& refused = f->Add("tidemap_http_refused_requests_total", "counter",
                           "HTTP requests refused with 503 to shed load, by reason.");
  for (const auto& [reason, count] : http.refused_requests)
    refused.Add(count, {{"reason", reason}});
  f->Add("tidemap_http_request_body_in_flight_bytes", "gauge",
         "Request body bytes held against the in-flight budget.")
      .Add(http.body_bytes_in_flight);
  f->Add("tidemap_http_request_body_in_flight_peak_bytes", "gauge",
         "The most request body bytes held at once since the server started.")
      .Add(http.body_bytes_in_flight_peak);
  f->Add("tidemap_http_connections", "gauge", "Open HTTP connections.").Add(http.connections);
  f->Add("tidemap_http_watch_clients", "gauge", "Open /v1/watch event streams.")
      .Add(http.watch_clients);
  f->Add("tidemap_http_watch_events_total", "counter", "Change events sent to /v1/watch streams.")
      .Add(http.watch_events);
  f->Add("tidemap_http_watch_dropped_total", "counter",
         "/v1/watch clients dropped for falling too far behind.")
      .Add(http.watch_dropped);
}

}  // namespace

std::string RenderMetrics(const MetricsSnapshot& snap) {
  Families families;
  AddReplica(snap.replica, &families);
  AddStorageQuota(snap.replica.usage, &families);
  std::map<std::string, uint64_t> refused = snap.http.refused_connections;
  if (snap.net.has_value()) {
    AddPeers(snap.net->peers, &families);
    AddTransport(snap.net->counters, &families, &refused);
  }
  Family& refused_family = families.Add("tidemap_refused_connections_total", "counter",
                                        "Connections refused (peer and HTTP), by reason.");
  for (const auto& [reason, count] : refused) refused_family.Add(count, {{"reason", reason}});
  AddHttp(snap.http, &families);
  return families.Render();
}

}  // namespace tidemap
