// Child processes for the end-to-end suites (cli/, cluster/): one-shot runs
// with captured output, and long-running daemons with their output in a log
// file. Arguments pass byte for byte (posix_spawn, no shell).
#ifndef TIDEMAP_TESTS_SUPPORT_PROCESS_H_
#define TIDEMAP_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tidemap::testing {

// What one run of a program did.
struct RunResult {
  int exit_code = -1;  // the exit status; 128 + N when killed by signal N; -1 if never run
  std::string out;
  std::string err;
};

std::ostream& operator<<(std::ostream& os, const RunResult& r);

// Runs `path` with `args`, writes `input` to its stdin and closes it, and
// collects stdout and stderr until it exits. `env` entries ("NAME=value")
// replace or add to this process's environment. A run longer than
// `timeout_ms` is killed and reported as a test failure.
RunResult RunProgram(const std::string& path, const std::vector<std::string>& args,
                     std::string_view input = {}, const std::vector<std::string>& env = {},
                     int timeout_ms = 60'000);

// A long-running child (a daemon) whose stdout and stderr go to `log_path`.
// The destructor kills it (SIGKILL) if it still runs: a failing test leaves
// nothing behind.
class ChildProcess {
 public:
  ChildProcess(const std::string& path, const std::vector<std::string>& args, std::string log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int signal_number);
  // Waits up to `timeout_ms` for the exit; the exit code (128 + N when
  // killed by signal N), or -1 when it is still running.
  int Wait(int timeout_ms);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read,
// released). Another process may take it in between; callers that fail to
// bind retry with a new one.
uint16_t FreeTcpPort();

// A TCP socket connected to 127.0.0.1:`port` (close-on-exec), or -1 with
// errno set when the connect failed. The caller closes it.
int ConnectLoopback(uint16_t port);

// Checks a Prometheus text exposition with `promtool check metrics` (Debian
// package prometheus): a test failure, with promtool's output, when it is
// rejected, and when promtool is missing under CI (the CI environment
// variable set), where it must be there. Returns false when promtool is
// missing, so that the caller skips: `if (!ExpectPromtoolPasses(m)) GTEST_SKIP()`.
bool ExpectPromtoolPasses(const std::string& text);

// Calls `done` every `interval_ms` until it returns true or `timeout_ms`
// passed; returns its last result.
template <typename F>
bool WaitUntil(int timeout_ms, int interval_ms, F done);

}  // namespace tidemap::testing

#include <chrono>
#include <thread>

namespace tidemap::testing {

template <typename F>
bool WaitUntil(int timeout_ms, int interval_ms, F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
}

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_PROCESS_H_
