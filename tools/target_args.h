// Where a command acts: `--data DIR`, a data dir opened directly, or
// `--http HOST:PORT` (with `--token`, `--cacert`), a running node's HTTP API;
// plus the key options of a data dir encrypted at rest. Shared by every
// command that takes a target, so they all read the same way.
#ifndef TIDEMAP_TOOLS_TARGET_ARGS_H_
#define TIDEMAP_TOOLS_TARGET_ARGS_H_

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>

#include "tools/key_args.h"
#include <tidemap/server/http_client.h>

namespace tidemap {

struct Target {
  std::string data_dir;
  std::string http;
  std::string token;
  std::string cacert;
  KeyArgs keys;

  // --data, --http, --token, --cacert and the key options on `cmd`; --data and
  // --http exclude each other.
  void AddTo(CLI::App* cmd) {
    auto* data = cmd->add_option("--data", data_dir, "data dir to open directly (no daemon)");
    auto* h = cmd->add_option("--http", http,
                              "HOST:PORT (or https://HOST:PORT) of a running node's HTTP API");
    auto* t =
        cmd->add_option("--token", token, "bearer token for --http (default: $TIDEMAP_TOKEN)");
    auto* c = cmd->add_option("--cacert", cacert,
                              "PEM CA file that verifies an HTTPS node (implies https://)");
    data->excludes(h);
    h->excludes(data);
    t->needs(h);
    c->needs(h);
    keys.AddTo(cmd, data);
  }

  bool is_http() const { return !http.empty(); }

  // The HTTP client options of --http; the token defaults to $TIDEMAP_TOKEN.
  HttpClientOptions Client() const {
    HttpClientOptions o;
    o.address = http;
    o.ca_file = cacert;
    o.bearer_token = token;
    if (o.bearer_token.empty()) {
      if (const char* env = std::getenv("TIDEMAP_TOKEN"); env != nullptr) o.bearer_token = env;
    }
    return o;
  }

  // The error of a command given neither target.
  static Status Missing() {
    return Status::InvalidArgument("a target is required: --data DIR or --http HOST:PORT");
  }
};

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_TARGET_ARGS_H_
