// `tidemap demo`: runs the real commands against a replica in a temporary data
// dir and prints each one before its output, so a newcomer can follow along
// and repeat any step by hand.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "base/status.h"
#include "tools/cli.h"

namespace tidemap {

namespace {

struct Step {
  const char* narration;          // printed before the command, may be empty
  std::vector<std::string> args;  // "$DIR" is replaced by the data dir
  int expected_exit;
};

std::string Quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_of(" \t'\"$\\") == std::string::npos) return arg;
  std::string out(1, '\'');
  for (char c : arg) {
    if (c == '\'') {
      out.append("'\\''");
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

}  // namespace

int RunDemo() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tidemap-demo-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "tidemap demo: cannot create a temporary dir\n");
    return kExitUnreachable;
  }
  const std::string dir = tmpl + "/node-a";

  const std::vector<Step> steps = {
      {"A data dir holds a node's identity (an Ed25519 key pair) and its LevelDB replica.\n"
       "The last line printed is the public key that other nodes put in their trust list.",
       {"init", "--data", "$DIR"},
       kExitOk},
      {"Writes go to named maps. Each prints the version it got: a hybrid logical clock\n"
       "timestamp that sorts as text, so later writes print larger stamps.",
       {"put", "--data", "$DIR", "fruit", "apple", "red"},
       kExitOk},
      {"", {"put", "--data", "$DIR", "fruit", "banana", "yellow"}, kExitOk},
      {"", {"put", "--data", "$DIR", "fruit", "cherry", "dark red"}, kExitOk},
      {"Writing a key again replaces its value: the newer version wins (last writer wins).",
       {"put", "--data", "$DIR", "fruit", "apple", "green"},
       kExitOk},
      {"", {"get", "--data", "$DIR", "fruit", "apple"}, kExitOk},
      {"A delete writes a tombstone, a version like any other, so it replicates and wins\n"
       "over older writes. The key is then absent: get exits with status 1.",
       {"del", "--data", "$DIR", "fruit", "banana"},
       kExitOk},
      {"", {"get", "--data", "$DIR", "fruit", "banana"}, kExitNotFound},
      {"A scan lists the live keys of a map in key order (--prefix, --after, --limit page it).",
       {"scan", "--data", "$DIR", "fruit"},
       kExitOk},
      {"", {"scan", "--data", "$DIR", "fruit", "--prefix", "ch", "--json"}, kExitOk},
      {"Status: live keys, tombstones and the oplog, where every change that won gets a\n"
       "sequence number for peers to stream from.",
       {"status", "--data", "$DIR"},
       kExitOk},
      {"", {"status", "--data", "$DIR", "--json"}, kExitOk},
  };

  int failures = 0;
  for (const Step& step : steps) {
    if (step.narration[0] != '\0') std::printf("\n# %s\n", step.narration);
    std::vector<std::string> args = step.args;
    std::string line = "$ tidemap";
    for (std::string& a : args) {
      if (a == "$DIR") a = dir;
      line.push_back(' ');
      line.append(Quote(a));
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    const int code = RunCli(args);
    std::fflush(stdout);
    if (code != 0) std::printf("(exit status %d)\n", code);
    if (code != step.expected_exit) {
      std::printf("!! expected exit status %d\n", step.expected_exit);
      ++failures;
    }
  }

  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  std::printf("\n%s (the demo's data dir %s was removed)\n",
              failures == 0 ? "Demo finished." : "Demo FAILED.", dir.c_str());
  return failures == 0 ? kExitOk : kExitUnreachable;
}

}  // namespace tidemap
