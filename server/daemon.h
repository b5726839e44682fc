// Daemon: what `tidemap serve` runs. It opens a data dir, loads the trust
// list, starts the peer transport (net::Node; without --listen and --peer it
// neither listens nor dials, and only prunes the oplog) and, when configured,
// the HTTP API, and stops them in the order that loses nothing: the HTTP API
// first (no new writes; the ones in flight finish), then the peers (each gets
// our final frame), then the replica (LevelDB closes with a checkpoint).
//
// Live reload (server/reload.h says what a reload applies): Reload re-reads
// the settings through the ConfigSource given to Start and the trust file,
// and hands the trust list and peers to the node.
//
// Thread-safety: Start and Stop from one thread; Snapshot from any; Reload
// from any thread but the node's and the HTTP API's own (the HTTP route calls
// it from a worker), one at a time (it locks), and not after Stop began.
#ifndef TIDEMAP_SERVER_DAEMON_H_
#define TIDEMAP_SERVER_DAEMON_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/net/node.h>
#include <tidemap/net/trust.h>
#include <tidemap/server/clear_sweep.h>
#include <tidemap/server/config.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/expire_sweep.h>
#include <tidemap/server/http.h>
#include <tidemap/server/quota_ladder.h>
#include <tidemap/server/rekey_job.h>
#include <tidemap/server/reload.h>
#include <tidemap/server/storage_watch.h>

namespace spdlog {
class logger;
}

namespace tidemap {

class Daemon {
 public:
  // Reads the settings again (the config file with the flags over it); its
  // errors name the file and the line.
  using ConfigSource = std::function<Result<DaemonConfig>()>;

  // Errors, by what the caller should tell the user (and exit with):
  //   InvalidArgument  a setting is wrong (usage, exit 2);
  //   Unavailable      the data dir, the identity or the trust file cannot be
  //                    used, or an address cannot be bound (exit 3; the message
  //                    names the file and the reason, a bad trust key its line);
  //   Refused          a setting is refused for safety, e.g. a non-loopback
  //                    HTTP address without a token (exit 4).
  // `source` feeds Reload; without one, a reload re-reads only the trust file.
  static Result<std::unique_ptr<Daemon>> Start(const DaemonConfig& config,
                                               std::shared_ptr<spdlog::logger> log,
                                               ConfigSource source = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Idempotent; the destructor calls it.
  void Stop();

  // Applies the settings and trust file as they are now (see server/reload.h).
  // InvalidArgument, naming the file and the line, for a config or trust file
  // that cannot be read or is invalid: the running settings stay.
  Result<ReloadReport> Reload();

  uint16_t listen_port() const;
  uint16_t http_port() const;  // 0 without an HTTP API
  const std::string& public_key() const { return public_key_; }
  Replica& replica() { return data_dir_->replica(); }
  net::NetStatus NetSnapshot() const;

 private:
  Daemon() = default;
  // Starts the HTTP API on config.http; needs data_dir_, public_key_ and node_.
  Status StartHttp(const DaemonConfig& config);

  std::shared_ptr<spdlog::logger> log_;
  std::mutex reload_mu_;  // one Reload at a time; guards config_
  DaemonConfig config_;   // the settings in force
  ConfigSource source_;
  std::unique_ptr<SystemClock> clock_;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<StorageWatch> storage_watch_;  // after data_dir_: stopped first
  std::unique_ptr<ExpireSweep> expire_sweep_;    // likewise
  std::unique_ptr<ClearSweep> clear_sweep_;      // likewise
  std::unique_ptr<RekeyJob> rekey_;              // likewise; /v1/admin/rekey
  net::TrustList trust_;
  std::string public_key_;
  std::unique_ptr<net::Node> node_;   // after data_dir_: stopped and destroyed first
  std::unique_ptr<HttpServer> http_;  // after node_: stopped first (no new writes)
  // Asks node_ for the peers: stopped before node_ goes.
  std::unique_ptr<QuotaLadder> quota_ladder_;
  bool stopped_ = false;
  bool serving_ = false;  // Start returned it
};

// Builds the trust list of a config: --trust keys (a bad one is
// InvalidArgument) and the trust file (errors are Unavailable with the file
// and, for a bad key, its line).
Result<net::TrustList> LoadTrust(const DaemonConfig& config);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_DAEMON_H_
