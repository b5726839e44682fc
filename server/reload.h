// Live reload of a running daemon's settings (SIGHUP, POST /v1/admin/reload):
// which settings a reload applies, which need a restart, and the report a
// reload gives back.
//
// A reload re-reads the config file (with the command line's flags over it,
// as at start) and the trust file. It applies `peers`, `trust`, `trust_file`
// (the keys in it), `log_level` and `storage_quota_bytes`. Every other setting (the data dir, the
// addresses, the HTTP token and TLS files, durability, the retention and
// timing settings, the log format) needs a restart: a reload that finds one
// changed applies the rest and names it in needs_restart (and in a warning).
// An invalid file is refused whole: nothing changes.
#ifndef TIDEMAP_SERVER_RELOAD_H_
#define TIDEMAP_SERVER_RELOAD_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <tidemap/net/node.h>
#include <tidemap/server/config.h>

namespace tidemap {

struct ReloadReport {
  net::PeerChanges peers;                  // addresses and trusted keys added, removed
  std::string log_level;                   // the level now in force
  std::vector<std::string> needs_restart;  // config keys changed that a reload does not apply
};

// The config keys whose value differs between `running` and `loaded` and
// that only a restart applies, in the config file's key names.
std::vector<std::string> RestartOnlyChanges(const DaemonConfig& running,
                                            const DaemonConfig& loaded);

// {"reloaded": true, "peers_added": [...], "peers_removed": [...],
//  "trust_added": [...], "trust_removed": [...], "log_level": "...",
//  "needs_restart": [...]}
nlohmann::json ReloadReportJson(const ReloadReport& report);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_RELOAD_H_
