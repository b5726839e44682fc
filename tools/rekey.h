// `tidemap rekey`: every value at rest resealed under a new key, then the
// database compacted so its files keep no copy under the old key.
//
//   tidemap rekey --data DIR [--key-file OLD | --passphrase-file F] --new-key-file NEW
//       a stopped node's data dir (DataDir::Rekey); a dir held by a running
//       node is refused with a pointer to the --http form.
//   tidemap rekey --http HOST:PORT [--token T] [--cacert CA] --new-key-file NEW [--no-wait]
//       a running node, which serves reads and writes throughout: POST
//       /v1/admin/rekey with NEW as a path on the node's own file system (a
//       relative one is made absolute here), then, unless --no-wait, GET of
//       the same route until the rekey ends, with its progress on stderr.
//
// Exit codes (tools/cli.h): 0 done (or started, with --no-wait); 2 usage, a
// data dir in the clear, a bad request; 3 the node or the data dir cannot
// be reached, or the rekey failed; 4 refused: the key file is readable by
// others, or a rekey is already running on the node.
#ifndef TIDEMAP_TOOLS_REKEY_H_
#define TIDEMAP_TOOLS_REKEY_H_

#include <CLI/CLI.hpp>
#include <string>

#include "tools/target_args.h"

namespace tidemap {

struct RekeyArgs {
  CLI::App* command = nullptr;
  Target target;  // with --data, its keys are the current key
  std::string new_key_file;
  bool no_wait = false;
};

// Declares `rekey` and its options on `app`; the values land in *args.
void AddRekeyCommand(CLI::App* app, RekeyArgs* args);

// Runs it; returns the exit code.
int RunRekey(const RekeyArgs& args);

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_REKEY_H_
