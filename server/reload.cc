#include <tidemap/server/reload.h>

namespace tidemap {

std::vector<std::string> RestartOnlyChanges(const DaemonConfig& running,
                                            const DaemonConfig& loaded) {
  std::vector<std::string> out;
  const auto check = [&](const char* key, auto DaemonConfig::*field) {
    if (running.*field != loaded.*field) out.emplace_back(key);
  };
  check("data", &DaemonConfig::data);
  check("listen", &DaemonConfig::listen);
  check("http", &DaemonConfig::http);
  check("http_token", &DaemonConfig::http_token);
  check("http_token_file", &DaemonConfig::http_token_file);
  check("http_tls_cert", &DaemonConfig::http_tls_cert);
  check("http_tls_key", &DaemonConfig::http_tls_key);
  check("key_file", &DaemonConfig::key_file);
  check("passphrase_file", &DaemonConfig::passphrase_file);
  check("durability", &DaemonConfig::durability);
  check("max_clock_offset_ms", &DaemonConfig::max_clock_offset_ms);
  check("tombstone_horizon_ms", &DaemonConfig::tombstone_horizon_ms);
  check("oplog_retention_rows", &DaemonConfig::oplog_retention_rows);
  check("oplog_retention_bytes", &DaemonConfig::oplog_retention_bytes);
  check("write_buffer_mb", &DaemonConfig::write_buffer_mb);
  check("diff_interval_ms", &DaemonConfig::diff_interval_ms);
  check("maintenance_interval_ms", &DaemonConfig::maintenance_interval_ms);
  check("watch_retention_ms", &DaemonConfig::watch_retention_ms);
  check("idle_timeout_ms", &DaemonConfig::idle_timeout_ms);
  check("handshake_timeout_ms", &DaemonConfig::handshake_timeout_ms);
  check("first_message_timeout_ms", &DaemonConfig::first_message_timeout_ms);
  check("log_format", &DaemonConfig::log_format);
  return out;
}

nlohmann::json ReloadReportJson(const ReloadReport& report) {
  return {{"reloaded", true},
          {"peers_added", report.peers.addresses_added},
          {"peers_removed", report.peers.addresses_removed},
          {"trust_added", report.peers.keys_added},
          {"trust_removed", report.peers.keys_removed},
          {"log_level", report.log_level},
          {"needs_restart", report.needs_restart}};
}

}  // namespace tidemap
