#include <tidemap/storage/dir_lock.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tidemap {

namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// /proc/locks names a locked inode as MAJOR:MINOR:INODE, the device numbers
// in hex: "1: FLOCK  ADVISORY  WRITE 4711 fd:01:393218 0 EOF". Lines of
// waiters carry "->" after the index and are skipped.
struct LockLine {
  std::string kind;
  int64_t pid = 0;
  unsigned major = 0, minor = 0;
  uint64_t inode = 0;
};

bool ParseLockLine(const std::string& line, LockLine* out) {
  std::istringstream in(line);
  std::string index, kind, advisory, mode, pid, where;
  if (!(in >> index >> kind) || kind == "->") return false;
  if (!(in >> advisory >> mode >> pid >> where)) return false;
  unsigned long long inode = 0;
  if (std::sscanf(where.c_str(), "%x:%x:%llu", &out->major, &out->minor, &inode) != 3) {
    return false;
  }
  out->kind = kind;
  out->inode = inode;
  out->pid = std::strtoll(pid.c_str(), nullptr, 10);
  return out->pid > 0;
}

}  // namespace

Result<std::unique_ptr<DirLock>> DirLock::Acquire(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(dir + " does not exist");
    return Status::IOError("cannot open " + dir + ": " + ErrnoText(err));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err != EWOULDBLOCK) return Status::IOError("cannot lock " + dir + ": " + ErrnoText(err));
    const std::optional<int64_t> pid = HolderPid(dir);
    return Status::Unavailable(dir + " is in use by " +
                               (pid ? "pid " + std::to_string(*pid) : "another process"));
  }
  return std::unique_ptr<DirLock>(new DirLock(fd));
}

std::optional<int64_t> DirLock::HolderPid(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return std::nullopt;
  std::ifstream locks("/proc/locks");
  // The device numbers in /proc/locks are those of the inode's own file
  // system, which on a stacked one (overlayfs) can differ from what stat
  // reports; a match of the inode alone is the fallback.
  std::optional<int64_t> inode_only;
  for (std::string line; std::getline(locks, line);) {
    LockLine l;
    if (!ParseLockLine(line, &l) || l.kind != "FLOCK" || l.inode != st.st_ino) continue;
    if (l.major == ::major(st.st_dev) && l.minor == ::minor(st.st_dev)) return l.pid;
    if (!inode_only) inode_only = l.pid;
  }
  return inode_only;
}

DirLock::~DirLock() { ::close(fd_); }

}  // namespace tidemap
