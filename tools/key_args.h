// The options that give the key of a data dir's values (encryption at rest):
// `--key-file FILE` or `--passphrase-file FILE` (or the passphrase in
// $TIDEMAP_PASSPHRASE), shared by every command that opens or makes a data dir.
#ifndef TIDEMAP_TOOLS_KEY_ARGS_H_
#define TIDEMAP_TOOLS_KEY_ARGS_H_

#include <CLI/CLI.hpp>
#include <string>

#include <tidemap/base/status.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/storage/value_key.h>

namespace tidemap {

struct KeyArgs {
  std::string key_file;
  std::string passphrase_file;

  // --key-file and --passphrase-file on `cmd`, for a data dir `data` (when
  // given, the options need it).
  void AddTo(CLI::App* cmd, CLI::Option* data = nullptr) {
    auto* k = cmd->add_option("--key-file", key_file,
                              "key file of the data dir's values, when encrypted at rest");
    auto* p = cmd->add_option(
        "--passphrase-file", passphrase_file,
        "passphrase file of the data dir's values (or $" + std::string(kPassphraseEnv) + ")");
    k->excludes(p);
    p->excludes(k);
    if (data != nullptr) {
      k->needs(data);
      p->needs(data);
    }
  }

  // The key source for DIR (server/data_dir.h ResolveValueKey).
  Result<ValueKeySource> Source(const std::string& dir, bool for_init = false) const {
    return ResolveValueKey(dir, key_file, passphrase_file, for_init);
  }
};

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_KEY_ARGS_H_
