#include <tidemap/base/private_file.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <system_error>

namespace tidemap {

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

}  // namespace tidemap
