// `tidemap serve`: the daemon's command line (flags over a TOML config file).
#ifndef TIDEMAP_TOOLS_SERVE_H_
#define TIDEMAP_TOOLS_SERVE_H_

#include <CLI/CLI.hpp>
#include <string>

#include <tidemap/server/config.h>

namespace tidemap {

struct ServeArgs {
  CLI::App* command = nullptr;
  std::string config_file;
  DaemonConfig flags;  // only the options given on the command line are used
  std::string durability;
  std::string storage_quota;  // --storage-quota, checked by ParseSizeBytes
};

// Declares `serve` and its options on `app`; the values land in *args.
void AddServeCommand(CLI::App* app, ServeArgs* args);

// Runs the daemon until SIGTERM or SIGINT; returns the exit code.
int RunServe(const ServeArgs& args);

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_SERVE_H_
