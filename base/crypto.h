// The one small wrapper around libsodium. Nothing outside this file includes sodium.h.
#ifndef TIDEMAP_BASE_CRYPTO_H_
#define TIDEMAP_BASE_CRYPTO_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap::crypto {

inline constexpr size_t kPublicKeyBytes = 32;  // crypto_sign_PUBLICKEYBYTES
inline constexpr size_t kSecretKeyBytes = 64;  // crypto_sign_SECRETKEYBYTES
inline constexpr size_t kSignatureBytes = 64;  // crypto_sign_BYTES

using PublicKey = std::array<uint8_t, kPublicKeyBytes>;

// Initializes libsodium once; safe to call from any thread, any number of times.
Status Init();

// A fresh Ed25519 key pair. `secret_key` receives kSecretKeyBytes bytes.
Status GenerateSigningKeyPair(PublicKey* public_key, std::string* secret_key);

// The public key embedded in an Ed25519 secret key.
Status PublicKeyFromSecret(std::string_view secret_key, PublicKey* public_key);

// Detached Ed25519 signature of `message` (kSignatureBytes bytes).
Status Sign(std::string_view secret_key, std::string_view message, std::string* signature);
bool Verify(const PublicKey& public_key, std::string_view message, std::string_view signature);

// Cryptographically secure random bytes.
void RandomBytes(void* buf, size_t len);

// Overwrites `len` bytes at `buf` with zeros in a way the compiler may not elide
// (sodium_memzero); for secret keys about to be freed.
void Wipe(void* buf, size_t len);

// Textual form of a public key used on the command line and in trust files:
// 64 lowercase hex digits. Parse accepts upper or lower case.
std::string PublicKeyToText(const PublicKey& key);
Result<PublicKey> PublicKeyFromText(std::string_view text);

// Standard base64 with padding (libsodium's codec), and its strict inverse.
std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

// Whether two secrets (e.g. bearer tokens) are equal, in time that depends on
// neither their contents nor where they differ: both are hashed (BLAKE2b-256)
// and the digests compared with sodium_memcmp, so not even the length of the
// expected secret leaks through timing.
bool SecretEquals(std::string_view a, std::string_view b);

// The 64-bit node id of a public key: the first 8 bytes of BLAKE2b(key), big-endian.
uint64_t NodeIdOf(const PublicKey& key);

// ---- Hashing, key exchange and encrypted streams, for net/'s handshake and frames ----

inline constexpr size_t kHashBytes = 32;          // crypto_generichash_BYTES (BLAKE2b-256)
inline constexpr size_t kSymmetricKeyBytes = 32;  // crypto_kx_SESSIONKEYBYTES, secretstream key
inline constexpr size_t kKxPublicKeyBytes = 32;   // crypto_kx_PUBLICKEYBYTES (X25519)
inline constexpr size_t kStreamHeaderBytes =
    24;  // crypto_secretstream_xchacha20poly1305_HEADERBYTES
inline constexpr size_t kStreamOverheadBytes = 17;  // ..._ABYTES: encrypted tag byte + 16-byte MAC

using Hash256 = std::array<uint8_t, kHashBytes>;
using KxPublicKey = std::array<uint8_t, kKxPublicKeyBytes>;

// BLAKE2b-256 (crypto_generichash) of the concatenation of `parts`. Callers that
// hash variable-length parts must make the concatenation unambiguous themselves.
Hash256 GenericHash(std::initializer_list<std::string_view> parts);

// kSymmetricKeyBytes secret bytes: a session key, a stream key, a key-pair seed.
// Zero when default-constructed; wiped (sodium_memzero) when destroyed or overwritten.
class SymmetricKey {
 public:
  SymmetricKey() { bytes_.fill(0); }
  // The first kSymmetricKeyBytes bytes of `bytes`, zero-padded when shorter. For
  // fixed keys in tests and fuzz targets; production keys come from the functions below.
  static SymmetricKey FromBytesForTesting(std::string_view bytes);
  SymmetricKey(const SymmetricKey&) = default;
  SymmetricKey& operator=(const SymmetricKey&) = default;
  ~SymmetricKey();

  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* data() { return bytes_.data(); }
  static constexpr size_t size() { return kSymmetricKeyBytes; }

 private:
  std::array<uint8_t, kSymmetricKeyBytes> bytes_;
};

// The Ed25519 key pair determined by `seed` (crypto_sign_seed_keypair). ONLY for
// tests and fuzz targets that need fixed identities; node keys come from
// GenerateSigningKeyPair.
void SigningKeyPairFromSeedForTesting(const SymmetricKey& seed, PublicKey* public_key,
                                      std::string* secret_key);

// Keyed BLAKE2b-256 of the concatenation of `parts` under `key`: derives a key
// from a secret (`key`) and public context (`parts`, e.g. a label and a transcript hash).
SymmetricKey DeriveKey(const SymmetricKey& key, std::initializer_list<std::string_view> parts);

// An X25519 key pair for one key exchange (crypto_kx). Use a fresh one per
// connection and drop it once the session keys are derived; the secret half is
// wiped when the pair is destroyed.
class KxKeyPair {
 public:
  // A fresh random key pair.
  static KxKeyPair Generate();
  // The key pair determined by `seed` (crypto_kx_seed_keypair). ONLY for tests and
  // fuzz targets that need a reproducible exchange; a fixed ephemeral key voids
  // the handshake's replay protection.
  static KxKeyPair FromSeedForTesting(const SymmetricKey& seed);

  KxKeyPair(const KxKeyPair&) = delete;
  KxKeyPair& operator=(const KxKeyPair&) = delete;
  KxKeyPair(KxKeyPair&&) = default;
  KxKeyPair& operator=(KxKeyPair&&) = default;
  ~KxKeyPair();

  const KxPublicKey& public_key() const { return public_key_; }

  // The shared session keys as the client (connection initiator) or the server
  // (responder) of crypto_kx: `rx` decrypts what the other side sends, `tx` encrypts
  // what we send; the client's tx is the server's rx and vice versa. Both depend on
  // the X25519 shared secret and both public keys. Corruption when `peer` is not
  // an acceptable public key (e.g. a low-order point); nothing is written then.
  Status ClientSessionKeys(const KxPublicKey& server, SymmetricKey* rx, SymmetricKey* tx) const;
  Status ServerSessionKeys(const KxPublicKey& client, SymmetricKey* rx, SymmetricKey* tx) const;

 private:
  KxKeyPair() = default;

  KxPublicKey public_key_{};
  SymmetricKey secret_key_;
};

// The tag of one secretstream message. tidemap sends only these two; a received
// message with another libsodium tag (push, rekey) is refused as corrupt.
enum class StreamTag { kMessage, kFinal };

// The sending half of a crypto_secretstream_xchacha20poly1305 stream: each Push
// encrypts and authenticates one message, chained to all the messages before it,
// so the receiver detects tampered, dropped, reordered and replayed messages.
// Move-only; the state (which holds the key) is wiped when destroyed.
class SecretStreamPush {
 public:
  // Starts a stream under `key` and appends its kStreamHeaderBytes header (a
  // fresh random nonce) to *header; the receiver needs it to start pulling.
  SecretStreamPush(const SymmetricKey& key, std::string* header);
  SecretStreamPush(SecretStreamPush&&) noexcept;
  SecretStreamPush& operator=(SecretStreamPush&&) noexcept;
  ~SecretStreamPush();

  // Appends the ciphertext of `plaintext` (plaintext.size() + kStreamOverheadBytes
  // bytes) to *out; `ad` is authenticated with it but not sent.
  void Push(std::string_view plaintext, std::string_view ad, StreamTag tag, std::string* out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The receiving half. Move-only; the state is wiped when destroyed.
class SecretStreamPull {
 public:
  // InvalidArgument when `header` is not kStreamHeaderBytes long.
  static Result<SecretStreamPull> Start(const SymmetricKey& key, std::string_view header);
  SecretStreamPull(SecretStreamPull&&) noexcept;
  SecretStreamPull& operator=(SecretStreamPull&&) noexcept;
  ~SecretStreamPull();

  // Decrypts the next message of the stream into *plaintext (replacing its
  // contents) and its tag into *tag. Corruption when the ciphertext is too short,
  // fails authentication (tampered, out of order, replayed, wrong key or `ad`), or
  // carries a tag other than StreamTag's; the stream state is then unusable.
  Status Pull(std::string_view ciphertext, std::string_view ad, std::string* plaintext,
              StreamTag* tag);

 private:
  SecretStreamPull();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tidemap::crypto

#endif  // TIDEMAP_BASE_CRYPTO_H_
