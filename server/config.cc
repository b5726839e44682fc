#include <tidemap/server/config.h>

#include <toml++/toml.h>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <optional>

#include <tidemap/net/address.h>
#include <tidemap/server/size.h>

namespace tidemap {

namespace {

// The largest memtable write_buffer_mb accepts: LevelDB holds up to two of
// them (the one filling and the one being flushed) in memory.
constexpr uint64_t kWriteBufferMbMax = 1024;

// One setting's reader: takes the TOML node, writes the config, or says what
// was wrong with the value.
using Setter = std::function<std::optional<std::string>(const toml::node&, DaemonConfig*)>;

Setter String(std::string DaemonConfig::*field) {
  return [field](const toml::node& n, DaemonConfig* c) -> std::optional<std::string> {
    auto v = n.value<std::string>();
    if (!v || !n.is_string()) return "expected a string";
    c->*field = *v;
    return std::nullopt;
  };
}

Setter Strings(std::vector<std::string> DaemonConfig::*field) {
  return [field](const toml::node& n, DaemonConfig* c) -> std::optional<std::string> {
    const toml::array* a = n.as_array();
    if (a == nullptr) return "expected an array of strings";
    std::vector<std::string> out;
    for (const toml::node& item : *a) {
      auto v = item.value<std::string>();
      if (!v || !item.is_string()) return "expected an array of strings";
      out.push_back(*v);
    }
    c->*field = std::move(out);
    return std::nullopt;
  };
}

Setter Unsigned(uint64_t DaemonConfig::*field) {
  return [field](const toml::node& n, DaemonConfig* c) -> std::optional<std::string> {
    auto v = n.value<int64_t>();
    if (!v || !n.is_integer() || *v < 0) return "expected a non-negative integer";
    c->*field = static_cast<uint64_t>(*v);
    return std::nullopt;
  };
}

// A size in bytes: an integer, or a string in the grammar of server/size.h ("512MB").
Setter Size(uint64_t DaemonConfig::*field) {
  return [field](const toml::node& n, DaemonConfig* c) -> std::optional<std::string> {
    if (n.is_string()) {
      auto bytes = ParseSizeBytes("size", *n.value<std::string>());
      if (!bytes.ok()) return bytes.status().message();
      c->*field = *bytes;
      return std::nullopt;
    }
    return Unsigned(field)(n, c);
  };
}

const std::map<std::string, Setter>& Settings() {
  static const auto* settings = new std::map<std::string, Setter>{
      {"data", String(&DaemonConfig::data)},
      {"listen", String(&DaemonConfig::listen)},
      {"http", String(&DaemonConfig::http)},
      {"peers", Strings(&DaemonConfig::peers)},
      {"trust", Strings(&DaemonConfig::trust)},
      {"trust_file", String(&DaemonConfig::trust_file)},
      {"http_token", String(&DaemonConfig::http_token)},
      {"http_token_file", String(&DaemonConfig::http_token_file)},
      {"http_tls_cert", String(&DaemonConfig::http_tls_cert)},
      {"http_tls_key", String(&DaemonConfig::http_tls_key)},
      {"key_file", String(&DaemonConfig::key_file)},
      {"passphrase_file", String(&DaemonConfig::passphrase_file)},
      {"durability",
       [](const toml::node& n, DaemonConfig* c) -> std::optional<std::string> {
         auto v = n.value<std::string>();
         if (v && *v == "sync") {
           c->durability = Durability::kSync;
         } else if (v && *v == "relaxed") {
           c->durability = Durability::kRelaxed;
         } else {
           return "expected \"sync\" or \"relaxed\"";
         }
         return std::nullopt;
       }},
      {"max_clock_offset_ms", Unsigned(&DaemonConfig::max_clock_offset_ms)},
      {"tombstone_horizon_ms", Unsigned(&DaemonConfig::tombstone_horizon_ms)},
      {"oplog_retention_rows", Unsigned(&DaemonConfig::oplog_retention_rows)},
      {"oplog_retention_bytes", Unsigned(&DaemonConfig::oplog_retention_bytes)},
      {"write_buffer_mb", Unsigned(&DaemonConfig::write_buffer_mb)},
      {"storage_quota_bytes", Size(&DaemonConfig::storage_quota_bytes)},
      {"diff_interval_ms", Unsigned(&DaemonConfig::diff_interval_ms)},
      {"maintenance_interval_ms", Unsigned(&DaemonConfig::maintenance_interval_ms)},
      {"watch_retention_ms", Unsigned(&DaemonConfig::watch_retention_ms)},
      {"idle_timeout_ms", Unsigned(&DaemonConfig::idle_timeout_ms)},
      {"handshake_timeout_ms", Unsigned(&DaemonConfig::handshake_timeout_ms)},
      {"first_message_timeout_ms", Unsigned(&DaemonConfig::first_message_timeout_ms)},
      {"log_level", String(&DaemonConfig::log_level)},
      {"log_format", String(&DaemonConfig::log_format)},
  };
  return *settings;
}

}  // namespace

Status LoadConfigFile(const std::string& path, DaemonConfig* config) {
  std::ifstream in(path);
  if (!in) return Status::Unavailable("config file " + path + ": cannot be read");
  toml::table table;
  try {
    table = toml::parse(in, path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument("config file " + path + " line " +
                                   std::to_string(e.source().begin.line) + ": " +
                                   std::string(e.description()));
  } catch (const std::exception& e) {
    return Status::InvalidArgument("config file " + path + ": " + e.what());
  }
  DaemonConfig parsed = *config;
  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    const std::string where =
        "config file " + path + " line " + std::to_string(node.source().begin.line);
    auto setting = Settings().find(name);
    if (setting == Settings().end()) {
      return Status::InvalidArgument(where + ": unknown setting \"" + name + "\"");
    }
    if (auto error = setting->second(node, &parsed)) {
      return Status::InvalidArgument(where + ": " + name + ": " + *error);
    }
  }
  *config = std::move(parsed);
  return Status::Ok();
}

Status ValidateConfig(const DaemonConfig& config) {
  if (config.data.empty()) return Status::InvalidArgument("no data dir (--data or `data =`)");
  if (!config.listen.empty()) TIDEMAP_RETURN_IF_ERROR(net::ParseHostPort(config.listen).status());
  if (!config.http.empty()) TIDEMAP_RETURN_IF_ERROR(net::ParseHostPort(config.http).status());
  for (const std::string& peer : config.peers) {
    TIDEMAP_RETURN_IF_ERROR(net::ParseHostPort(peer).status());
  }
  // A node without peers is still useful through its HTTP API alone.
  if (config.listen.empty() && config.peers.empty() && config.http.empty()) {
    return Status::InvalidArgument("nothing to do: give --listen, --peer, --http or several");
  }
  if (!config.http_token.empty() && !config.http_token_file.empty()) {
    return Status::InvalidArgument("give http_token or http_token_file, not both");
  }
  if (config.write_buffer_mb < 1 || config.write_buffer_mb > kWriteBufferMbMax) {
    return Status::InvalidArgument("write_buffer_mb " + std::to_string(config.write_buffer_mb) +
                                   ": expected 1 to " + std::to_string(kWriteBufferMbMax));
  }
  if (config.http_tls_cert.empty() != config.http_tls_key.empty()) {
    return Status::InvalidArgument(
        "HTTP TLS needs both http_tls_cert and http_tls_key (--http-tls-cert, --http-tls-key)");
  }
  if (config.log_format != "text" && config.log_format != "json") {
    return Status::InvalidArgument("log format \"" + config.log_format +
                                   "\": expected text or json");
  }
  static const char* const kLevels[] = {"trace", "debug", "info", "warn", "error"};
  bool level_ok = false;
  for (const char* l : kLevels) level_ok = level_ok || config.log_level == l;
  if (!level_ok) {
    return Status::InvalidArgument("log level \"" + config.log_level +
                                   "\": expected trace, debug, info, warn or error");
  }
  return Status::Ok();
}

}  // namespace tidemap
