#include <tidemap/net/trust.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <system_error>

namespace tidemap::net {
namespace {

std::string ErrnoText(int err) { return std::generic_category().message(err); }

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

Status FileError(const std::string& path, int err) {
  std::string msg = "trust file " + path + ": " + ErrnoText(err);
  return err == ENOENT ? Status::NotFound(std::move(msg)) : Status::IOError(std::move(msg));
}

Status TooLarge(const std::string& path) {
  return Status::InvalidArgument("trust file " + path + ": larger than " +
                                 std::to_string(kTrustFileBytesMax) + " bytes");
}

}  // namespace

Result<TrustList> ParseTrustFile(std::string_view text, const std::string& path) {
  if (text.size() > kTrustFileBytesMax) return TooLarge(path);
  TrustList trust;
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    line = Trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    Result<crypto::PublicKey> key = crypto::PublicKeyFromText(line);
    if (!key.ok()) {
      return Status::InvalidArgument("trust file " + path + " line " + std::to_string(line_number) +
                                     ": " + key.status().message());
    }
    trust.Add(*key);
  }
  return trust;
}

Result<TrustList> LoadTrustFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError(path, errno);
  // Read one byte past the limit so an oversized file is recognized without reading it all.
  std::string text;
  char buf[8192];
  int err = 0;
  while (text.size() <= kTrustFileBytesMax) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (err != 0) return FileError(path, err);
  if (text.size() > kTrustFileBytesMax) return TooLarge(path);
  return ParseTrustFile(text, path);
}

}  // namespace tidemap::net
