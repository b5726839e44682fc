#include <tidemap/base/private_file.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <system_error>

namespace tidemap {

namespace {

std::string ErrnoText(int err) { return std::generic_category().message(err); }

// Closes a file descriptor on every return path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

Status SyncDirOf(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

// Creates `path` (O_EXCL) with mode 0600 and writes `contents`, synced;
// removes it again on failure.
Status WriteNew(const std::string& path, const std::string& what, std::string_view contents) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) {
    if (errno == EEXIST) return Status::Refused(what + " already exists; refusing to overwrite it");
    return Status::IOError("cannot create " + what + ": " + ErrnoText(errno));
  }
  Status s;
  if (::fchmod(fd.get(), 0600) != 0) s = Status::IOError("cannot chmod 0600 " + what);
  while (s.ok() && !contents.empty()) {
    const ssize_t n = ::write(fd.get(), contents.data(), contents.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) s = Status::IOError("cannot write " + what + ": " + ErrnoText(errno));
    if (n > 0) contents.remove_prefix(static_cast<size_t>(n));
  }
  if (s.ok() && ::fsync(fd.get()) != 0) s = Status::IOError("cannot sync " + what);
  if (s.ok() && fd.Close() != 0) s = Status::IOError("cannot close " + what);
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

}  // namespace

Status CheckPrivateFile(int fd, const std::string& what, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status::IOError("cannot stat " + what + ": " + std::generic_category().message(errno));
  }
  if (!S_ISREG(st.st_mode)) return Status::Corruption(what + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::Refused(what + " has mode " + mode +
                           ", must be 0600 (not readable or writable by group or others); "
                           "run `chmod 600 " +
                           path + "` if the secret has not leaked");
  }
  return Status::Ok();
}

Result<std::string> ReadPrivateFile(const std::string& path, const std::string& what,
                                    size_t bytes_max) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(what + " does not exist");
    return Status::IOError("cannot open " + what + ": " + ErrnoText(err));
  }
  TIDEMAP_RETURN_IF_ERROR(CheckPrivateFile(fd.get(), what, path));
  // Read in place, one byte past the limit to see an oversized file: no
  // intermediate buffer or reallocation leaves a copy of the secret behind.
  std::string out(bytes_max + 1, '\0');
  size_t len = 0;
  while (len < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + len, out.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError("cannot read " + what + ": " + ErrnoText(errno));
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  if (len > bytes_max) {
    return Status::Corruption(what + " is larger than " + std::to_string(bytes_max) + " bytes");
  }
  out.resize(len);
  return out;
}

Status SyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    return Status::IOError("cannot sync directory " + dir + ": " + ErrnoText(errno));
  }
  return Status::Ok();
}

Status WritePrivateFile(const std::string& path, const std::string& what, std::string_view contents,
                        bool replace) {
  if (!replace) {
    // Written whole under a name of its own, then linked in: a reader never
    // sees the file half written, and link() refuses an existing `path`.
    static std::atomic<uint64_t> serial{0};
    const std::string tmp =
        path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(serial++);
    TIDEMAP_RETURN_IF_ERROR(WriteNew(tmp, what + " (temporary copy)", contents));
    const int rc = ::link(tmp.c_str(), path.c_str());
    const int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0 && err == EEXIST) {
      return Status::Refused(what + " already exists; refusing to overwrite it");
    }
    if (rc != 0) return Status::IOError("cannot create " + what + ": " + ErrnoText(err));
    return SyncDirOf(path);
  }
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());  // a leftover of a crash between create and rename
  TIDEMAP_RETURN_IF_ERROR(WriteNew(tmp, what + " (temporary copy)", contents));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::IOError("cannot rename " + tmp + " to " + path + ": " + ErrnoText(err));
  }
  return SyncDirOf(path);
}

}  // namespace tidemap
