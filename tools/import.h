// `tidemap import TARGET FILE.ndjson`: batch writes from an NDJSON file (one
// op a line, as POST /v1/batch takes them), sent in chunks of whole lines,
// each chunk one atomic batch. A chunk that fails stops the import; the
// chunks before it stay written, and the error names the file's line.
#ifndef TIDEMAP_TOOLS_IMPORT_H_
#define TIDEMAP_TOOLS_IMPORT_H_

#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>

#include "tools/target_args.h"

namespace tidemap {

struct ImportArgs {
  CLI::App* command = nullptr;
  Target target;
  std::string file;  // "-": stdin
  size_t chunk_ops = 1000;
  bool quiet = false;
};

// Declares `import` and its options on `app`; the values land in *args.
void AddImportCommand(CLI::App* app, ImportArgs* args);

// Runs the import; returns the exit code (tools/cli.h). Progress goes to
// stderr: a bar redrawn in place on a terminal, else a line every few
// seconds; a summary line goes to stdout at the end.
int RunImport(const ImportArgs& args);

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_IMPORT_H_
