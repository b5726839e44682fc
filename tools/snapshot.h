// `tidemap snapshot export TARGET FILE | import --data DIR FILE | verify FILE`:
// backups of a node and restores into a new data dir (server/snapshot.h).
// A data dir encrypted at rest is exported with its key (--key-file or
// --passphrase-file); `import --encrypt` with a key restores into an
// encrypted data dir, as `init --encrypt` makes one.
//
// Exit codes (tools/cli.h): 0 done; 2 usage; 3 the node, the data dir or the
// file cannot be read, or the file is truncated, corrupt or of another format
// (the message gives the offset and the reason); 4 import refused (the data
// dir is not new and empty).
#ifndef TIDEMAP_TOOLS_SNAPSHOT_H_
#define TIDEMAP_TOOLS_SNAPSHOT_H_

#include <CLI/CLI.hpp>
#include <string>

#include "tools/target_args.h"

namespace tidemap {

struct SnapshotArgs {
  CLI::App* export_command = nullptr;
  CLI::App* import_command = nullptr;
  CLI::App* verify_command = nullptr;
  // export's target; import's data dir, with the key of its values
  // (import --encrypt seals the restored values under it).
  Target target;
  std::string file;
  bool encrypt = false;
};

// Declares `snapshot` and its three commands on `app`; values land in *args.
void AddSnapshotCommand(CLI::App* app, SnapshotArgs* args);

// Runs whichever of the three was parsed; returns the exit code.
int RunSnapshot(const SnapshotArgs& args);

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_SNAPSHOT_H_
