#include "tools/serve.h"

#include <signal.h>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "tools/cli.h"
#include <tidemap/server/daemon.h>
#include <tidemap/server/log_format.h>
#include <tidemap/server/size.h>

namespace tidemap {

void AddServeCommand(CLI::App* app, ServeArgs* args) {
  DaemonConfig& f = args->flags;
  CLI::App* cmd = app->add_subcommand(
      "serve",
      "run a node: replicate with peers over TCP, serve the HTTP API (flags override --config)");
  args->command = cmd;
  cmd->add_option("--config", args->config_file, "TOML file with the same settings");
  cmd->add_option("--data", f.data, "the data dir (created by `tidemap init`)");
  cmd->add_option("--listen", f.listen, "HOST:PORT to accept peers on");
  cmd->add_option("--http", f.http, "HOST:PORT of the HTTP API (loopback unless a token is set)");
  cmd->add_option("--peer", f.peers, "HOST:PORT of a peer to dial (repeatable)");
  cmd->add_option("--trust", f.trust, "public key of a peer to accept (repeatable)");
  cmd->add_option("--trust-file", f.trust_file, "file of trusted public keys, one per line");
  cmd->add_option("--http-token-file", f.http_token_file,
                  "file whose first line is the HTTP bearer token");
  cmd->add_option("--http-tls-cert", f.http_tls_cert,
                  "PEM certificate (chain) file: serve the HTTP API over HTTPS only");
  cmd->add_option("--http-tls-key", f.http_tls_key,
                  "PEM private key file of --http-tls-cert (mode 0600)");
  cmd->add_option("--key-file", f.key_file,
                  "key file of the data dir's values, when encrypted at rest (mode 0600)");
  cmd->add_option("--passphrase-file", f.passphrase_file,
                  "passphrase file of the data dir's values, when encrypted at rest");
  cmd->add_option("--durability", args->durability, "sync (default) or relaxed")
      ->check(CLI::IsMember({"sync", "relaxed"}));
  cmd->add_option("--max-clock-offset-ms", f.max_clock_offset_ms,
                  "refuse peers' timestamps further ahead than this (default 60000)");
  cmd->add_option("--tombstone-horizon-ms", f.tombstone_horizon_ms,
                  "purge acknowledged tombstones older than this (default 7 days; 0: never)");
  cmd->add_option("--oplog-retention-rows", f.oplog_retention_rows,
                  "keep at most this many oplog rows for absent peers");
  cmd->add_option("--diff-interval-ms", f.diff_interval_ms,
                  "periodic anti-entropy with each peer (0: never)");
  cmd->add_option("--maintenance-interval-ms", f.maintenance_interval_ms,
                  "how often the oplog is pruned");
  cmd->add_option("--watch-retention-ms", f.watch_retention_ms,
                  "keep the changes a watch stream gone this long resumes from "
                  "(default 3600000; 0: only peers' cursors count)");
  cmd->add_option("--storage-quota", args->storage_quota,
                  "storage quota of the database, e.g. 512MB or 2GiB (default none; 0: none)")
      ->check([](const std::string& text) {
        auto bytes = ParseSizeBytes("--storage-quota", text);
        return bytes.ok() ? std::string() : bytes.status().message();
      });
  cmd->add_option("--log-level", f.log_level, "trace, debug, info (default), warn, error");
  cmd->add_option("--log-format", f.log_format,
                  "text (default) or json (one JSON object per line)");
  // Test-only: shifts this node's clock, never the host's. Hidden from --help.
  cmd->add_option("--clock-offset-ms", f.clock_offset_ms)->group("");
}

namespace {

// The options given on the command line replace the config file's values.
void ApplyFlags(const ServeArgs& args, DaemonConfig* c) {
  const CLI::App& cmd = *args.command;
  const DaemonConfig& f = args.flags;
  const auto given = [&](const char* name) { return cmd.count(name) > 0; };
  if (given("--data")) c->data = f.data;
  if (given("--listen")) c->listen = f.listen;
  if (given("--http")) c->http = f.http;
  if (given("--peer")) c->peers = f.peers;
  if (given("--trust")) c->trust = f.trust;
  if (given("--trust-file")) c->trust_file = f.trust_file;
  if (given("--http-token-file")) c->http_token_file = f.http_token_file;
  if (given("--http-tls-cert")) c->http_tls_cert = f.http_tls_cert;
  if (given("--http-tls-key")) c->http_tls_key = f.http_tls_key;
  if (given("--key-file")) c->key_file = f.key_file;
  if (given("--passphrase-file")) c->passphrase_file = f.passphrase_file;
  if (given("--durability")) {
    c->durability = args.durability == "relaxed" ? Durability::kRelaxed : Durability::kSync;
  }
  if (given("--max-clock-offset-ms")) c->max_clock_offset_ms = f.max_clock_offset_ms;
  if (given("--tombstone-horizon-ms")) c->tombstone_horizon_ms = f.tombstone_horizon_ms;
  if (given("--oplog-retention-rows")) c->oplog_retention_rows = f.oplog_retention_rows;
  if (given("--diff-interval-ms")) c->diff_interval_ms = f.diff_interval_ms;
  if (given("--maintenance-interval-ms")) c->maintenance_interval_ms = f.maintenance_interval_ms;
  if (given("--watch-retention-ms")) c->watch_retention_ms = f.watch_retention_ms;
  if (given("--storage-quota")) {
    c->storage_quota_bytes = ParseSizeBytes("--storage-quota", args.storage_quota).value();
  }
  if (given("--log-level")) c->log_level = f.log_level;
  if (given("--log-format")) c->log_format = f.log_format;
  if (given("--clock-offset-ms")) c->clock_offset_ms = f.clock_offset_ms;
}

int ExitCodeForStart(const Status& s) {
  if (s.IsInvalidArgument()) return kExitUsage;
  if (s.IsRefused()) return kExitRefused;
  return kExitUnreachable;
}

}  // namespace

namespace {

// The settings as `serve` was started with: the config file, then the flags
// over it. Read at start and again by every reload.
Result<DaemonConfig> ReadSettings(const ServeArgs& args) {
  DaemonConfig config;
  if (!args.config_file.empty()) {
    TIDEMAP_RETURN_IF_ERROR(LoadConfigFile(args.config_file, &config));
  }
  ApplyFlags(args, &config);
  return config;
}

}  // namespace

int RunServe(const ServeArgs& args) {
  auto settings = ReadSettings(args);
  if (!settings.ok()) {
    std::fprintf(stderr, "tidemap: %s\n", settings.status().message().c_str());
    return settings.status().IsInvalidArgument() ? kExitUsage : kExitUnreachable;
  }
  const DaemonConfig config = std::move(*settings);

  auto log = std::make_shared<spdlog::logger>("tidemap",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (Status s = SetLogFormat(log.get(), config.log_format); !s.ok()) {
    std::fprintf(stderr, "tidemap: %s\n", s.message().c_str());
    return kExitUsage;
  }
  log->set_level(spdlog::level::from_str(config.log_level));
  log->flush_on(spdlog::level::trace);

  // SIGTERM, SIGINT and SIGHUP are taken by sigwait below: block them
  // before any thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto daemon = Daemon::Start(config, log, [&args] { return ReadSettings(args); });
  if (!daemon.ok()) {
    std::fprintf(stderr, "tidemap: %s\n", daemon.status().message().c_str());
    return ExitCodeForStart(daemon.status());
  }
  int signal_number = 0;
  // SIGHUP reloads (Daemon::Reload logs what it did or why it refused).
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    log->info("SIGHUP: reloading the config and trust files");
    (void)(*daemon)->Reload();
  }
  log->info("{}: shutting down", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*daemon)->Stop();
  return kExitOk;
}

}  // namespace tidemap
