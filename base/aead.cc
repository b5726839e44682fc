#include <tidemap/base/aead.h>

#include <pthread.h>
#include <sodium.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

#include <tidemap/base/check.h>

namespace tidemap::crypto {

static_assert(kAeadTagBytes == crypto_aead_aes256gcm_ABYTES);
static_assert(kAeadTagBytes == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(kSymmetricKeyBytes == crypto_aead_aes256gcm_KEYBYTES);
static_assert(kSymmetricKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(kPwhashSaltBytes == crypto_pwhash_SALTBYTES);

namespace {

const unsigned char* Bytes(std::string_view s) {
  // libsodium wants a valid pointer even for zero bytes; an empty view may hold nullptr.
  static const unsigned char kNothing = 0;
  return s.empty() ? &kNothing : reinterpret_cast<const unsigned char*>(s.data());
}

// Nonces come from the OS's CSPRNG like every random byte here, but a
// buffer at a time: libsodium asks the kernel (getrandom) on every call, a
// system call that would cost a seal more than the sealing does. Each thread
// has its own buffer and never hands out a byte twice; a forked child (whose
// copy of the buffer its parent also holds) drops its copy first.
constexpr size_t kNonceBufferBytes = 4096;
std::atomic<uint64_t> fork_generation{0};

void OnFork() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

void RandomNonce(unsigned char* nonce, size_t len) {
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { ::pthread_atfork(nullptr, nullptr, OnFork); });
  struct Buffer {
    std::array<unsigned char, kNonceBufferBytes> bytes;
    size_t used = kNonceBufferBytes;
    uint64_t generation = 0;
    ~Buffer() { sodium_memzero(bytes.data(), bytes.size()); }
  };
  thread_local Buffer buffer;
  const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (buffer.used + len > buffer.bytes.size() || buffer.generation != generation) {
    RandomBytes(buffer.bytes.data(), buffer.bytes.size());
    buffer.used = 0;
    buffer.generation = generation;
  }
  std::memcpy(nonce, buffer.bytes.data() + buffer.used, len);
  sodium_memzero(buffer.bytes.data() + buffer.used, len);
  buffer.used += len;
}

}  // namespace

// AES-GCM's state is the expanded key schedule (libsodium's precomputation
// interface, aligned as it requires); XChaCha20's is the key itself.
struct AeadKey::State {
  alignas(16) crypto_aead_aes256gcm_state aes;
  SymmetricKey key;
  ~State() { sodium_memzero(&aes, sizeof(aes)); }
};

bool Aes256GcmAvailable() {
  TIDEMAP_CHECK(Init().ok());
  return crypto_aead_aes256gcm_is_available() == 1;
}

AeadSuite PreferredAeadSuite() {
  return Aes256GcmAvailable() ? AeadSuite::kAes256Gcm : AeadSuite::kXChaCha20Poly1305;
}

std::string_view AeadSuiteName(AeadSuite suite) {
  return suite == AeadSuite::kAes256Gcm ? "aes-256-gcm" : "xchacha20-poly1305";
}

Result<AeadSuite> ParseAeadSuite(std::string_view name) {
  if (name == "aes-256-gcm") return AeadSuite::kAes256Gcm;
  if (name == "xchacha20-poly1305") return AeadSuite::kXChaCha20Poly1305;
  return Status::InvalidArgument("unknown AEAD suite '" + std::string(name) +
                                 "' (aes-256-gcm or xchacha20-poly1305)");
}

size_t AeadNonceBytes(AeadSuite suite) {
  return suite == AeadSuite::kAes256Gcm ? crypto_aead_aes256gcm_NPUBBYTES
                                        : crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
}

Result<AeadKey> AeadKey::Create(AeadSuite suite, const SymmetricKey& key) {
  TIDEMAP_RETURN_IF_ERROR(Init());
  if (suite != AeadSuite::kAes256Gcm && suite != AeadSuite::kXChaCha20Poly1305) {
    return Status::InvalidArgument("unknown AEAD suite " + std::to_string(static_cast<int>(suite)));
  }
  if (suite == AeadSuite::kAes256Gcm && !Aes256GcmAvailable()) {
    return Status::Unavailable(
        "values are sealed with AES-256-GCM, which this CPU cannot run (no AES-NI/CLMUL)");
  }
  auto state = std::make_unique<State>();
  state->key = key;
  if (suite == AeadSuite::kAes256Gcm) crypto_aead_aes256gcm_beforenm(&state->aes, key.data());
  return AeadKey(suite, std::move(state));
}

AeadKey::AeadKey(AeadSuite suite, std::unique_ptr<State> state)
    : suite_(suite), state_(std::move(state)) {}
AeadKey::AeadKey(AeadKey&&) noexcept = default;
AeadKey& AeadKey::operator=(AeadKey&&) noexcept = default;
AeadKey::~AeadKey() = default;

void AeadKey::Seal(std::string_view plaintext, std::string_view ad, std::string* out) const {
  const size_t nonce_bytes = AeadNonceBytes(suite_);
  const size_t at = out->size();
  out->resize(at + nonce_bytes + plaintext.size() + kAeadTagBytes);
  auto* nonce = reinterpret_cast<unsigned char*>(out->data() + at);
  RandomNonce(nonce, nonce_bytes);
  unsigned char* cipher = nonce + nonce_bytes;
  unsigned long long written = 0;
  if (suite_ == AeadSuite::kAes256Gcm) {
    crypto_aead_aes256gcm_encrypt_afternm(cipher, &written, Bytes(plaintext), plaintext.size(),
                                          Bytes(ad), ad.size(), nullptr, nonce, &state_->aes);
  } else {
    crypto_aead_xchacha20poly1305_ietf_encrypt(cipher, &written, Bytes(plaintext), plaintext.size(),
                                               Bytes(ad), ad.size(), nullptr, nonce,
                                               state_->key.data());
  }
  TIDEMAP_CHECK(written == plaintext.size() + kAeadTagBytes);
}

Status AeadKey::Open(std::string_view sealed, std::string_view ad, std::string* plaintext) const {
  plaintext->clear();
  const size_t nonce_bytes = AeadNonceBytes(suite_);
  if (sealed.size() < nonce_bytes + kAeadTagBytes) {
    return Status::Corruption("sealed value of " + std::to_string(sealed.size()) +
                              " bytes is shorter than its nonce and tag");
  }
  const auto* nonce = Bytes(sealed);
  const std::string_view cipher = sealed.substr(nonce_bytes);
  plaintext->resize(cipher.size() - kAeadTagBytes);
  auto* out = reinterpret_cast<unsigned char*>(plaintext->data());
  unsigned long long opened = 0;
  int rc = 0;
  if (suite_ == AeadSuite::kAes256Gcm) {
    rc = crypto_aead_aes256gcm_decrypt_afternm(out, &opened, nullptr, Bytes(cipher), cipher.size(),
                                               Bytes(ad), ad.size(), nonce, &state_->aes);
  } else {
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt(out, &opened, nullptr, Bytes(cipher),
                                                    cipher.size(), Bytes(ad), ad.size(), nonce,
                                                    state_->key.data());
  }
  if (rc != 0) {
    plaintext->clear();
    return Status::Corruption("sealed value fails authentication");
  }
  return Status::Ok();
}

PwhashParams PwhashDefaultParams() {
  return PwhashParams{crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}

Result<SymmetricKey> KeyFromPassphrase(std::string_view passphrase, std::string_view salt,
                                       const PwhashParams& params) {
  TIDEMAP_RETURN_IF_ERROR(Init());
  if (salt.size() != kPwhashSaltBytes) {
    return Status::InvalidArgument("passphrase salt has " + std::to_string(salt.size()) +
                                   " bytes, not " + std::to_string(kPwhashSaltBytes));
  }
  if (params.ops_limit < crypto_pwhash_OPSLIMIT_MIN ||
      params.ops_limit > crypto_pwhash_OPSLIMIT_MAX ||
      params.mem_limit_bytes < crypto_pwhash_MEMLIMIT_MIN ||
      params.mem_limit_bytes > crypto_pwhash_MEMLIMIT_MAX) {
    return Status::InvalidArgument("Argon2id parameters ops=" + std::to_string(params.ops_limit) +
                                   " mem=" + std::to_string(params.mem_limit_bytes) +
                                   " are outside libsodium's limits");
  }
  SymmetricKey key;
  if (crypto_pwhash(key.data(), key.size(), passphrase.data(), passphrase.size(), Bytes(salt),
                    params.ops_limit, static_cast<size_t>(params.mem_limit_bytes),
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Status::Unavailable("Argon2id could not get " +
                               std::to_string(params.mem_limit_bytes >> 20) + " MiB of memory");
  }
  return key;
}

}  // namespace tidemap::crypto
