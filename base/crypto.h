// The one small wrapper around libsodium. Nothing outside this file includes sodium.h.
#ifndef TIDEMAP_BASE_CRYPTO_H_
#define TIDEMAP_BASE_CRYPTO_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

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

}  // namespace tidemap::crypto

#endif  // TIDEMAP_BASE_CRYPTO_H_
