#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "tools/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return tidemap::RunCli(args);
  } catch (const std::exception& e) {
    // We do not throw; a library under us might. Report it rather than abort.
    std::fprintf(stderr, "tidemap: internal error: %s\n", e.what());
    return tidemap::kExitUnreachable;
  }
}
