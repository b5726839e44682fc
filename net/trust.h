// The set of peer public keys a node accepts connections from and to, and the
// trust file that lists them.
#ifndef TIDEMAP_NET_TRUST_H_
#define TIDEMAP_NET_TRUST_H_

#include <cstddef>
#include <set>
#include <string>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>

namespace tidemap::net {

// A set of trusted Ed25519 public keys. A plain value; not synchronized (build it,
// then share it read-only, e.g. through HandshakeConfig::trust).
class TrustList {
 public:
  // Adds `key`; returns false when it was already there.
  bool Add(const crypto::PublicKey& key) { return keys_.insert(key).second; }
  bool Contains(const crypto::PublicKey& key) const { return keys_.count(key) != 0; }
  size_t size() const { return keys_.size(); }
  // In byte order.
  const std::set<crypto::PublicKey>& keys() const { return keys_; }

 private:
  std::set<crypto::PublicKey> keys_;
};

// The most a trust file may hold; a larger file is refused unread.
inline constexpr size_t kTrustFileBytesMax = 1 << 20;

// Reads a trust file: one public key per line in crypto::PublicKeyToText form
// (64 hex digits, either case). Surrounding whitespace (including a CR before the
// LF) is trimmed; blank lines are skipped; '#' starts a comment that runs to the
// end of the line, on a line of its own or after a key. A key listed twice counts
// once; a file with no keys gives an empty list.
//
// Errors name the file: IOError (NotFound when it does not exist) with the OS's
// reason when it cannot be read, e.g. "trust file /x/trust.txt: No such file or
// directory"; InvalidArgument for a line that is not a key, with its 1-based line
// number, e.g. "trust file /x/trust.txt line 3: not a public key (expected 64 hex
// digits): \"3f2a\"", or for a file over kTrustFileBytesMax.
Result<TrustList> LoadTrustFile(const std::string& path);

// Parses the contents of a trust file as LoadTrustFile does; `path` only names
// the file in error messages.
Result<TrustList> ParseTrustFile(std::string_view text, const std::string& path);

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_TRUST_H_
