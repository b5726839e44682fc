#include <tidemap/server/daemon.h>

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include <tidemap/base/crypto.h>
#include <tidemap/base/private_file.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/net/log_event.h>

namespace tidemap {

Result<net::TrustList> LoadTrust(const DaemonConfig& config) {
  net::TrustList trust;
  if (!config.trust_file.empty()) {
    auto loaded = net::LoadTrustFile(config.trust_file);
    if (!loaded.ok()) return Status::Unavailable(loaded.status().message());
    trust = std::move(*loaded);
  }
  for (const std::string& text : config.trust) {
    auto key = crypto::PublicKeyFromText(text);
    if (!key.ok()) {
      return Status::InvalidArgument("--trust " + text + ": " + key.status().message());
    }
    trust.Add(*key);
  }
  return trust;
}

namespace {

// A token is one line; the file is read up to this much.
constexpr size_t kTokenFileBytesMax = 4096;
// How often subscribers hear of expired records (`expire` watch events):
// an event comes at most this long after the record's expiry.
constexpr uint64_t kExpireSweepIntervalMs = 1000;
// How often the records older than a map's clear are removed, a bounded
// number of batches at a time.
constexpr uint64_t kClearSweepIntervalMs = 200;

// The bearer token: the first line of `path`, trimmed. The file must be
// private to its owner, as an identity file must.
Result<std::string> ReadTokenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Unavailable("token file " + path + ": " + std::strerror(errno));
  const Status mode = CheckPrivateFile(fd, "token file " + path, path);
  std::string text(kTokenFileBytesMax, '\0');
  const ssize_t n = mode.ok() ? ::read(fd, text.data(), text.size()) : 0;
  const int read_errno = errno;
  ::close(fd);
  TIDEMAP_RETURN_IF_ERROR(mode);
  if (n < 0) return Status::Unavailable("token file " + path + ": " + std::strerror(read_errno));
  text.resize(static_cast<size_t>(n));
  std::string line = text.substr(0, text.find('\n'));
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  size_t start = 0;
  while (start < line.size() && std::isspace(static_cast<unsigned char>(line[start]))) ++start;
  line.erase(0, start);
  if (line.empty()) return Status::Unavailable("token file " + path + ": the first line is empty");
  return line;
}

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::Start(const DaemonConfig& config,
                                              std::shared_ptr<spdlog::logger> log,
                                              ConfigSource source) {
  TIDEMAP_RETURN_IF_ERROR(ValidateConfig(config));
  std::unique_ptr<Daemon> d(new Daemon());
  d->log_ = log;
  d->config_ = config;
  d->source_ = std::move(source);
  TIDEMAP_ASSIGN_OR_RETURN(d->trust_, LoadTrust(config));

  d->clock_ = std::make_unique<SystemClock>(config.clock_offset_ms);
  DataDirOptions dir_options;
  dir_options.durability = config.durability;
  dir_options.clock = d->clock_.get();
  dir_options.hlc.max_clock_offset_ms = config.max_clock_offset_ms;
  dir_options.retention.rows_max = config.oplog_retention_rows;
  dir_options.retention.bytes_max = config.oplog_retention_bytes;
  dir_options.tombstone_horizon_ms = config.tombstone_horizon_ms;
  dir_options.write_buffer_bytes = static_cast<size_t>(config.write_buffer_mb) << 20;
  dir_options.storage_quota_bytes = config.storage_quota_bytes;
  auto key = ResolveValueKey(config.data, config.key_file, config.passphrase_file);
  if (!key.ok()) return key.status();
  dir_options.value_key = std::move(key).value();
  auto dir = DataDir::Open(config.data, dir_options);
  if (!dir.ok()) {
    // Whatever stops us from using the dir (missing, in use, a bad identity
    // file, corruption) is "cannot reach the data dir" to the caller.
    if (dir.status().IsUnavailable()) return dir.status();
    return Status::Unavailable(dir.status().message());
  }
  d->data_dir_ = std::move(*dir);
  d->storage_watch_ = std::make_unique<StorageWatch>(&d->data_dir_->replica(), log,
                                                     ReplicaOptions{}.storage_retry_interval_ms);
  d->expire_sweep_ =
      std::make_unique<ExpireSweep>(&d->data_dir_->replica(), log, kExpireSweepIntervalMs);
  d->clear_sweep_ =
      std::make_unique<ClearSweep>(&d->data_dir_->replica(), log, kClearSweepIntervalMs);
  d->rekey_ = std::make_unique<RekeyJob>(d->data_dir_.get(), log);
  d->public_key_ = d->data_dir_->identity().public_key_text();
  const bool has_peers = !config.listen.empty() || !config.peers.empty();
  if (d->trust_.size() == 0 && has_peers) {
    log->warn("the trust list is empty: every peer will be refused (use --trust or --trust-file)");
  }

  net::NodeOptions node_options;
  node_options.listen = config.listen;
  node_options.peers = config.peers;
  node_options.sync.diff_interval_ms = config.diff_interval_ms;
  node_options.maintenance_interval_ms = config.maintenance_interval_ms;
  node_options.watch_retention_ms = config.watch_retention_ms;
  node_options.idle_timeout_ms = config.idle_timeout_ms;
  node_options.keepalive_interval_ms = std::max<uint64_t>(config.idle_timeout_ms / 4, 1);
  node_options.handshake_timeout_ms = config.handshake_timeout_ms;
  node_options.first_message_timeout_ms = config.first_message_timeout_ms;
  // A frame holds at least one record of the largest allowed size.
  const Limits& limits = d->data_dir_->replica().limits();
  node_options.decode.frame_bytes_max =
      std::max(node_options.decode.frame_bytes_max,
               limits.value_bytes_max + limits.key_bytes_max + limits.map_name_bytes_max + 4096);
  auto node = net::Node::Start(std::move(node_options), &d->data_dir_->replica(),
                               &d->data_dir_->identity(), &d->trust_, d->clock_.get(), log);
  if (!node.ok()) return node.status();
  d->node_ = std::move(*node);
  QuotaLadderOptions quota_options;
  quota_options.peers = [node = d->node_.get()] { return node->Snapshot().peers; };
  d->quota_ladder_ =
      std::make_unique<QuotaLadder>(&d->data_dir_->replica(), log, std::move(quota_options));

  if (!config.http.empty()) TIDEMAP_RETURN_IF_ERROR(d->StartHttp(config));
  log->info("node {} ({}) serving {}{}", NodeIdToString(d->data_dir_->identity().node_id()),
            d->public_key_, config.data,
            !has_peers              ? std::string(", HTTP only (no peers)")
            : config.listen.empty() ? std::string(", dial-out only")
                                    : ", peers on " + config.listen);
  d->serving_ = true;
  return d;
}

Status Daemon::StartHttp(const DaemonConfig& config) {
  HttpOptions http_options;
  http_options.listen = config.http;
  http_options.bearer_token = config.http_token;
  http_options.tls_cert_file = config.http_tls_cert;
  http_options.tls_key_file = config.http_tls_key;
  if (!config.http_token_file.empty()) {
    TIDEMAP_ASSIGN_OR_RETURN(http_options.bearer_token, ReadTokenFile(config.http_token_file));
  }
  HttpContext context;
  context.replica = &data_dir_->replica();
  context.public_key = public_key_;
  net::Node* node_ptr = node_.get();
  context.net_status = [node_ptr] { return node_ptr->Snapshot(); };
  context.reload = [this] { return Reload(); };
  context.rekey = rekey_.get();
  auto http = HttpServer::Start(std::move(http_options), std::move(context));
  if (!http.ok()) return http.status();
  http_ = std::move(*http);
  log_->info("HTTP API on {}{}", config.http, config.http_tls_cert.empty() ? "" : " (TLS)");
  return Status::Ok();
}

Result<ReloadReport> Daemon::Reload() {
  std::lock_guard lock(reload_mu_);
  if (!node_) return Status::Unavailable("the daemon is not running");
  const auto refuse = [this](const Status& s) -> Status {
    LogEvent(*log_, spdlog::level::err, "reload_refused", "",
             "reload refused, the running settings stay: " + s.message(), {{"error", s.message()}});
    return Status::InvalidArgument("reload refused: " + s.message());
  };
  DaemonConfig loaded = config_;
  if (source_) {
    auto read = source_();
    if (!read.ok()) return refuse(read.status());
    loaded = std::move(*read);
  }
  if (Status s = ValidateConfig(loaded); !s.ok()) return refuse(s);
  auto trust = LoadTrust(loaded);
  if (!trust.ok()) return refuse(trust.status());
  ReloadReport report;
  TIDEMAP_ASSIGN_OR_RETURN(report.peers, node_->Reconfigure(*trust, loaded.peers));
  report.needs_restart = RestartOnlyChanges(config_, loaded);
  for (const std::string& key : report.needs_restart) {
    LogEvent(*log_, spdlog::level::warn, "reload_needs_restart", "",
             "reload: " + key + " changed: needs restart (the running value stays)",
             {{"setting", key}});
  }
  if (loaded.storage_quota_bytes != config_.storage_quota_bytes) {
    quota_ladder_->SetQuota(loaded.storage_quota_bytes);
    config_.storage_quota_bytes = loaded.storage_quota_bytes;
  }
  if (loaded.log_level != config_.log_level) {
    log_->set_level(spdlog::level::from_str(loaded.log_level));
    log_->info("reload: log level {}", loaded.log_level);
  }
  // What a restart would apply stays as it runs, so the next reload reports
  // it again rather than taking it for applied.
  config_.peers = loaded.peers;
  config_.trust = loaded.trust;
  config_.trust_file = loaded.trust_file;
  config_.log_level = loaded.log_level;
  report.log_level = config_.log_level;
  if (trust->size() == 0) {
    log_->warn("the trust list is empty: every peer will be refused (use --trust or --trust-file)");
  }
  LogEvent(*log_, spdlog::level::info, "reloaded", "",
           fmt::format("reloaded: {} peers to dial, {} trusted keys", loaded.peers.size(),
                       trust->size()),
           {{"peers", loaded.peers.size()},
            {"trusted_keys", trust->size()},
            {"log_level", loaded.log_level}});
  return report;
}

Daemon::~Daemon() { Stop(); }

void Daemon::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (http_) http_->Stop();
  // A rekey running stops after its page; the next one to the same key finishes it.
  if (rekey_) rekey_->Stop();
  quota_ladder_.reset();
  if (node_) node_->Stop();
  http_.reset();
  node_.reset();
  clear_sweep_.reset();
  expire_sweep_.reset();
  storage_watch_.reset();
  rekey_.reset();
  data_dir_.reset();
  if (log_ && serving_) log_->info("stopped");  // not after a start that failed
}

uint16_t Daemon::http_port() const { return http_ ? http_->port() : 0; }

uint16_t Daemon::listen_port() const { return node_ ? node_->listen_port() : 0; }

net::NetStatus Daemon::NetSnapshot() const { return node_ ? node_->Snapshot() : net::NetStatus{}; }

}  // namespace tidemap
