// Authenticated encryption of small values (libsodium AEAD) and passphrase
// key derivation (Argon2id), for values at rest (storage/value_cipher.h).
// With base/crypto.cc, the only code that includes sodium.h.
#ifndef TIDEMAP_BASE_AEAD_H_
#define TIDEMAP_BASE_AEAD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>

namespace tidemap::crypto {

// The AEAD constructions tidemap seals with; the numbers are stored (in a
// data dir's encryption file), so they never change.
enum class AeadSuite : uint8_t {
  kAes256Gcm = 1,          // crypto_aead_aes256gcm: 12-byte nonce, needs AES-NI and CLMUL
  kXChaCha20Poly1305 = 2,  // crypto_aead_xchacha20poly1305_ietf: 24-byte nonce
};
inline constexpr size_t kAeadTagBytes = 16;  // both suites' ABYTES

// Whether libsodium runs AES-256-GCM on this CPU.
bool Aes256GcmAvailable();
// AES-256-GCM where the CPU has it, else XChaCha20-Poly1305.
AeadSuite PreferredAeadSuite();
// "aes-256-gcm" or "xchacha20-poly1305", and back (InvalidArgument otherwise).
std::string_view AeadSuiteName(AeadSuite suite);
Result<AeadSuite> ParseAeadSuite(std::string_view name);
size_t AeadNonceBytes(AeadSuite suite);

// One key of one suite, ready to seal and open. Move-only; the key (and
// AES-GCM's expanded key schedule) is wiped when destroyed. Seal and Open
// are const and may run on several threads at once.
class AeadKey {
 public:
  // Unavailable when `suite` is AES-256-GCM and this CPU cannot run it.
  static Result<AeadKey> Create(AeadSuite suite, const SymmetricKey& key);
  AeadKey(AeadKey&&) noexcept;
  AeadKey& operator=(AeadKey&&) noexcept;
  ~AeadKey();

  AeadSuite suite() const { return suite_; }
  // Bytes Seal adds to a plaintext: the nonce and the tag.
  size_t overhead() const { return AeadNonceBytes(suite_) + kAeadTagBytes; }

  // Appends nonce || ciphertext || tag to *out. The nonce is random for each
  // call (the OS's CSPRNG, read a buffer at a time per thread; a forked
  // child refills its own): with AES-256-GCM's 96-bit nonce that is safe
  // for up to 2^32 seals under one key (NIST SP 800-38D), with XChaCha20's
  // 192-bit nonce without a practical bound. `ad` is authenticated, not stored.
  void Seal(std::string_view plaintext, std::string_view ad, std::string* out) const;
  // Opens what Seal wrote into *plaintext (replacing its contents).
  // Corruption when it is too short or fails authentication (other bytes,
  // other `ad`, other key); *plaintext is then empty.
  Status Open(std::string_view sealed, std::string_view ad, std::string* plaintext) const;

 private:
  struct State;
  AeadKey(AeadSuite suite, std::unique_ptr<State> state);
  AeadSuite suite_;
  std::unique_ptr<State> state_;
};

// Argon2id (crypto_pwhash) cost parameters, stored with the salt so a key
// derived from a passphrase can be derived again.
inline constexpr size_t kPwhashSaltBytes = 16;  // crypto_pwhash_SALTBYTES
struct PwhashParams {
  uint64_t ops_limit = 0;
  uint64_t mem_limit_bytes = 0;
};
// libsodium's "moderate" limits (3 passes, 256 MiB): about a second here.
PwhashParams PwhashDefaultParams();
// The key of `passphrase` under `salt` (kPwhashSaltBytes) and `params`.
// InvalidArgument for a bad salt size or parameters outside libsodium's
// limits; Unavailable when the memory cannot be had.
Result<SymmetricKey> KeyFromPassphrase(std::string_view passphrase, std::string_view salt,
                                       const PwhashParams& params);

}  // namespace tidemap::crypto

#endif  // TIDEMAP_BASE_AEAD_H_
