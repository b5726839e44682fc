#include "tests/support/process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "tests/support/test_util.h"

extern char** environ;

namespace tidemap::testing {

std::ostream& operator<<(std::ostream& os, const RunResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout ---\n"
            << r.out << "\n--- stderr ---\n"
            << r.err << "\n---";
}

namespace {

// What every spawn here shares: argv of `path` and `args`, and attributes
// that give the child SIGPIPE's default action and an empty signal mask.
struct SpawnArgs {
  SpawnArgs(const std::string& path, const std::vector<std::string>& args) {
    strings.push_back(path);
    strings.insert(strings.end(), args.begin(), args.end());
    for (std::string& a : strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_init(&attr);
    sigset_t defaults, mask;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigemptyset(&mask);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setsigmask(&attr, &mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  }
  ~SpawnArgs() { posix_spawnattr_destroy(&attr); }
  SpawnArgs(const SpawnArgs&) = delete;
  SpawnArgs& operator=(const SpawnArgs&) = delete;

  std::vector<std::string> strings;
  std::vector<char*> argv;
  posix_spawnattr_t attr;
};

void ClosePipe(int fds[2]) {
  for (int i = 0; i < 2; ++i) {
    if (fds[i] >= 0) close(fds[i]);
    fds[i] = -1;
  }
}

}  // namespace

RunResult RunProgram(const std::string& path, const std::vector<std::string>& args,
                     std::string_view input, const std::vector<std::string>& env, int timeout_ms) {
  // A child that exits without reading its stdin must fail our write with
  // EPIPE, not kill the test. The child gets SIGPIPE back (SETSIGDEF below).
  static const bool sigpipe_ignored = [] { return std::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
  EXPECT_TRUE(sigpipe_ignored);

  RunResult result;
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    ClosePipe(in);
    ClosePipe(out);
    ClosePipe(err);
    return result;
  }

  // dup2 clears close-on-exec on 0, 1 and 2; every other pipe end closes at exec.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  SpawnArgs spawn(path, args);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    bool replaced = false;
    for (const std::string& o : env) {
      const std::string_view name = std::string_view(o).substr(0, o.find('=') + 1);
      if (entry.substr(0, name.size()) == name) replaced = true;
    }
    if (!replaced) env_strings.emplace_back(entry);
  }
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  const int spawn_error =
      posix_spawn(&pid, path.c_str(), &actions, &spawn.attr, spawn.argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (spawn_error != 0) {
    ADD_FAILURE() << "posix_spawn " << path << ": " << std::strerror(spawn_error);
    close(in[1]);
    close(out[0]);
    close(err[0]);
    return result;
  }

  // Feed stdin and drain both outputs together, so no pipe fills up and stalls the child.
  int in_fd = in[1];
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  } else {
    fcntl(in_fd, F_SETFL, O_NONBLOCK);
  }
  int out_fd = out[0], err_fd = err[0];
  size_t written = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  while (in_fd >= 0 || out_fd >= 0 || err_fd >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[3] = {{in_fd, POLLOUT, 0}, {out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    const int n = poll(fds, 3, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ADD_FAILURE() << "poll: " << std::strerror(errno);
      break;
    }
    if (in_fd >= 0 && fds[0].revents != 0) {
      const ssize_t w = write(in_fd, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        close(in_fd);  // done, or the child closed its stdin (EPIPE)
        in_fd = -1;
      }
    }
    int* readers[2] = {&out_fd, &err_fd};
    std::string* sinks[2] = {&result.out, &result.err};
    for (int i = 0; i < 2; ++i) {
      if (*readers[i] < 0 || fds[i + 1].revents == 0) continue;
      char buf[65536];
      const ssize_t r = read(*readers[i], buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        close(*readers[i]);
        *readers[i] = -1;
      }
    }
  }
  for (int fd : {in_fd, out_fd, err_fd}) {
    if (fd >= 0) close(fd);
  }
  if (timed_out) {
    kill(pid, SIGKILL);
    ADD_FAILURE() << path << " did not finish within " << timeout_ms << " ms; killed it";
  }

  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      ADD_FAILURE() << "waitpid: " << std::strerror(errno);
      return result;
    }
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

ChildProcess::ChildProcess(const std::string& path, const std::vector<std::string>& args,
                           std::string log_path)
    : log_path_(std::move(log_path)) {
  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    ADD_FAILURE() << "open " << log_path_ << ": " << std::strerror(errno);
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, log_fd, STDERR_FILENO);
  SpawnArgs spawn(path, args);
  const int error =
      posix_spawn(&pid_, path.c_str(), &actions, &spawn.attr, spawn.argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(log_fd);
  if (error != 0) {
    pid_ = -1;
    ADD_FAILURE() << "posix_spawn " << path << ": " << std::strerror(error);
  }
}

ChildProcess::~ChildProcess() {
  if (running()) {
    Signal(SIGKILL);
    Wait(10'000);
  }
}

bool ChildProcess::running() { return pid_ > 0 && exit_code_ < 0 && Wait(0) < 0; }

void ChildProcess::Signal(int signal_number) {
  if (pid_ > 0 && exit_code_ < 0) kill(pid_, signal_number);
}

int ChildProcess::Wait(int timeout_ms) {
  if (pid_ <= 0 || exit_code_ >= 0) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (r < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string ChildProcess::Log() const {
  std::ifstream in(log_path_);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int ConnectLoopback(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

uint16_t FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  uint16_t port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

bool ExpectPromtoolPasses(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    EXPECT_EQ(std::getenv("CI"), nullptr) << "promtool must be installed in CI";
    return false;
  }
  const std::string dir = MakeTempDir("tidemap-promtool");
  const std::string in = dir + "/metrics.txt", out = dir + "/out.txt";
  std::ofstream(in, std::ios::binary) << text;
  const int rc = std::system(("promtool check metrics < " + in + " > " + out + " 2>&1").c_str());
  std::ifstream f(out);
  std::string output((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  EXPECT_EQ(rc, 0) << "promtool failed: " << output << "\n" << text;
  return true;
}

}  // namespace tidemap::testing
