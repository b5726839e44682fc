// A node's long-term Ed25519 identity, kept in its data directory as
// DIR/identity.key (file format at the top of identity.cc).
//
// The public key is what peers list in their trust lists and what
// `tidemap init` / `tidemap id` print; the node id is derived from it.
#ifndef TIDEMAP_STORAGE_IDENTITY_H_
#define TIDEMAP_STORAGE_IDENTITY_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>

namespace tidemap {

// The name of the identity file inside a data directory.
inline constexpr std::string_view kIdentityFileName = "identity.key";

// A node's key pair. Move-only: the secret key is wiped from memory when the
// object is destroyed or assigned over, and never copied by this class.
// Not thread-safe to mutate; const methods may be called from any thread.
class Identity {
 public:
  // Creates `dir` (and its parents) when needed and writes a fresh key pair to
  // dir/identity.key with mode 0600, synced to disk together with its directory
  // entry before returning.
  // Refused when the file already exists: an identity is never overwritten.
  // IOError when the directory or the file cannot be created or written.
  static Result<Identity> Create(const std::string& dir);

  // Reads dir/identity.key. Errors name the file:
  //   NotFound    the file does not exist (run `tidemap init --data DIR`);
  //   Refused     the file is readable or writable by group or others;
  //   Corruption  wrong size, malformed content, or a public key that does not
  //               belong to the secret key;
  //   IOError     the OS failed to open or read it.
  static Result<Identity> Load(const std::string& dir);

  // The path of the identity file of data directory `dir`.
  static std::string PathIn(const std::string& dir);

  Identity(Identity&& other) noexcept;
  Identity& operator=(Identity&& other) noexcept;
  Identity(const Identity&) = delete;
  Identity& operator=(const Identity&) = delete;
  ~Identity();

  const crypto::PublicKey& public_key() const { return public_key_; }
  // 64 lowercase hex digits (crypto::PublicKeyToText), as --trust accepts.
  std::string public_key_text() const;
  // crypto::NodeIdOf(public_key()).
  uint64_t node_id() const;
  // The crypto::kSecretKeyBytes-byte Ed25519 secret key, for crypto::Sign.
  // Valid while this object lives and is not moved from.
  std::string_view secret_key() const { return secret_key_; }

 private:
  Identity(const crypto::PublicKey& public_key, std::string_view secret_key);
  void WipeSecret();

  crypto::PublicKey public_key_{};
  std::string secret_key_;
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_IDENTITY_H_
