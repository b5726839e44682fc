// The `tidemap` command line (the README's "Command line"), callable in-process
// so the demo can run the very commands it prints.
#ifndef TIDEMAP_TOOLS_CLI_H_
#define TIDEMAP_TOOLS_CLI_H_

#include <string>
#include <vector>

#include <tidemap/base/status.h>

namespace tidemap {

// Exit codes of every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotFound = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;  // the node or the data dir
inline constexpr int kExitRefused = 4;      // quota, limits, trust

// The exit code for a command's error: NotFound 1, InvalidArgument 2,
// Refused 4, anything else 3.
int ExitCodeFor(const Status& s);

// Prints "tidemap: MESSAGE" to stderr and returns ExitCodeFor(s).
int Fail(const Status& s);

// Runs one command. `args` excludes the program name. Writes to stdout/stderr.
int RunCli(const std::vector<std::string>& args);

// `tidemap demo`: a three-node cluster on loopback, narrated (tools/demo.cc).
int RunDemo();

}  // namespace tidemap

#endif  // TIDEMAP_TOOLS_CLI_H_
