// The daemon's settings: a TOML file (`--config FILE`) and the command-line
// flags of `tidemap serve`, which override it. One struct for both so the file
// and the flags cannot drift apart; README "Configuration" lists every key.
#ifndef TIDEMAP_SERVER_CONFIG_H_
#define TIDEMAP_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

struct DaemonConfig {
  std::string data;                // data dir (required)
  std::string listen;              // HOST:PORT for peers; empty: dial out only
  std::string http;                // HOST:PORT of the HTTP API; empty: no HTTP API
  std::vector<std::string> peers;  // HOST:PORT to dial
  std::vector<std::string> trust;  // public keys (64 hex digits)
  std::string trust_file;          // one key per line, # comments
  std::string http_token;          // bearer token; required when http is not loopback
  std::string http_token_file;     // the token's first line (alternative to http_token)
  // Both set: the HTTP API speaks only HTTPS, with this PEM certificate chain
  // and PEM private key (the key file private to its owner). TLS does not
  // replace the token: a non-loopback `http` still needs one.
  std::string http_tls_cert;
  std::string http_tls_key;
  // Encryption at rest: the key of the data dir's values, from a key file
  // (mode 0600) or a passphrase file; with neither, a passphrase may come
  // from the environment (TIDEMAP_PASSPHRASE).
  std::string key_file;
  std::string passphrase_file;
  Durability durability = Durability::kSync;
  uint64_t max_clock_offset_ms = 60'000;
  uint64_t tombstone_horizon_ms = uint64_t{7} * 24 * 3600 * 1000;  // 0: never purge
  uint64_t oplog_retention_rows = 1'000'000;
  uint64_t oplog_retention_bytes = uint64_t{256} << 20;
  uint64_t write_buffer_mb = 4;  // LevelDB memtable, 1 to 1024 (see ReplicaOptions)
  // The storage quota of the database (ReplicaOptions::storage_quota_bytes;
  // 0: none). Bytes, or in the file a string such as "512MB" (server/size.h).
  // A reload applies a new value at once.
  uint64_t storage_quota_bytes = 0;
  uint64_t diff_interval_ms = 60'000;         // periodic anti-entropy with each peer
  uint64_t maintenance_interval_ms = 10'000;  // oplog prune (and tombstone purge)
  // A watch stream can resume after a disconnect this long: the oplog keeps
  // those changes whatever peers acknowledged (within the retention caps).
  uint64_t watch_retention_ms = 3'600'000;
  uint64_t idle_timeout_ms = 30'000;
  uint64_t handshake_timeout_ms = 5'000;
  // An inbound peer connection's whole hello must come by then.
  uint64_t first_message_timeout_ms = 1'000;
  std::string log_level = "info";   // trace, debug, info, warn, error
  std::string log_format = "text";  // text, or json: one JSON object per line
  // Test-only: shifts this node's physical clock (never the host's), to
  // exercise the max clock offset refusal. Not in the config file.
  int64_t clock_offset_ms = 0;
};

// Reads the TOML file `path` into *config (keys it sets replace the values
// there; keys it does not set keep them). Unknown keys, wrong types and TOML
// syntax errors are InvalidArgument naming the file, the line and the key;
// an unreadable file is Unavailable naming the file.
Status LoadConfigFile(const std::string& path, DaemonConfig* config);

// Checks what a daemon needs before it starts: a data dir, well-formed
// addresses, something to serve (peers, the HTTP API or both), a durability
// mode. InvalidArgument says which setting.
Status ValidateConfig(const DaemonConfig& config);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_CONFIG_H_
