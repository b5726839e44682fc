#include <tidemap/base/crypto.h>

#include <sodium.h>

#include <tidemap/base/coding.h>

namespace tidemap::crypto {

static_assert(kPublicKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kSecretKeyBytes == crypto_sign_SECRETKEYBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);
static_assert(kHashBytes == crypto_generichash_BYTES);
static_assert(kSymmetricKeyBytes == crypto_kx_SESSIONKEYBYTES);
static_assert(kSymmetricKeyBytes == crypto_kx_SEEDBYTES);
static_assert(kSymmetricKeyBytes == crypto_kx_SECRETKEYBYTES);
static_assert(kSymmetricKeyBytes == crypto_secretstream_xchacha20poly1305_KEYBYTES);
static_assert(kSymmetricKeyBytes >= crypto_generichash_KEYBYTES_MIN &&
              kSymmetricKeyBytes <= crypto_generichash_KEYBYTES_MAX);
static_assert(kKxPublicKeyBytes == crypto_kx_PUBLICKEYBYTES);
static_assert(kStreamHeaderBytes == crypto_secretstream_xchacha20poly1305_HEADERBYTES);
static_assert(kStreamOverheadBytes == crypto_secretstream_xchacha20poly1305_ABYTES);

namespace {

const unsigned char* Bytes(std::string_view s) {
  // libsodium wants a valid pointer even for zero bytes; an empty view may hold nullptr.
  static const unsigned char kNothing = 0;
  return s.empty() ? &kNothing : reinterpret_cast<const unsigned char*>(s.data());
}

void HashParts(std::initializer_list<std::string_view> parts, const SymmetricKey* key,
               unsigned char out[kHashBytes]) {
  TIDEMAP_CHECK(Init().ok());
  crypto_generichash_state state;
  crypto_generichash_init(&state, key == nullptr ? nullptr : key->data(),
                          key == nullptr ? 0 : key->size(), kHashBytes);
  for (std::string_view part : parts) crypto_generichash_update(&state, Bytes(part), part.size());
  crypto_generichash_final(&state, out, kHashBytes);
  // A keyed state holds the key; it is on the stack, so clear it before returning.
  sodium_memzero(&state, sizeof(state));
}

}  // namespace

Status Init() {
  // sodium_init is itself thread-safe and idempotent (returns 1 when already done).
  if (sodium_init() < 0) return Status::Internal("libsodium failed to initialize");
  return Status::Ok();
}

Status GenerateSigningKeyPair(PublicKey* public_key, std::string* secret_key) {
  TIDEMAP_RETURN_IF_ERROR(Init());
  secret_key->resize(kSecretKeyBytes);
  crypto_sign_keypair(public_key->data(), reinterpret_cast<unsigned char*>(secret_key->data()));
  return Status::Ok();
}

Status PublicKeyFromSecret(std::string_view secret_key, PublicKey* public_key) {
  if (secret_key.size() != kSecretKeyBytes) {
    return Status::InvalidArgument("secret key has " + std::to_string(secret_key.size()) +
                                   " bytes, expected " + std::to_string(kSecretKeyBytes));
  }
  crypto_sign_ed25519_sk_to_pk(public_key->data(),
                               reinterpret_cast<const unsigned char*>(secret_key.data()));
  return Status::Ok();
}

Status Sign(std::string_view secret_key, std::string_view message, std::string* signature) {
  if (secret_key.size() != kSecretKeyBytes) {
    return Status::InvalidArgument("secret key has the wrong size");
  }
  signature->resize(kSignatureBytes);
  crypto_sign_detached(reinterpret_cast<unsigned char*>(signature->data()), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       reinterpret_cast<const unsigned char*>(secret_key.data()));
  return Status::Ok();
}

bool Verify(const PublicKey& public_key, std::string_view message, std::string_view signature) {
  if (signature.size() != kSignatureBytes) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), public_key.data()) == 0;
}

void RandomBytes(void* buf, size_t len) {
  TIDEMAP_CHECK(Init().ok());
  randombytes_buf(buf, len);
}

void Wipe(void* buf, size_t len) { sodium_memzero(buf, len); }

std::string PublicKeyToText(const PublicKey& key) {
  return ToHex(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()));
}

Result<PublicKey> PublicKeyFromText(std::string_view text) {
  std::string bytes;
  if (text.size() != kPublicKeyBytes * 2 || !FromHex(text, &bytes)) {
    return Status::InvalidArgument("not a public key (expected 64 hex digits): \"" +
                                   Printable(text) + "\"");
  }
  PublicKey key;
  for (size_t i = 0; i < kPublicKeyBytes; ++i) key[i] = static_cast<uint8_t>(bytes[i]);
  return key;
}

std::string Base64Encode(std::string_view bytes) {
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), variant);
  out.resize(out.size() - 1);  // the encoded length counts the terminating NUL
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return Status::InvalidArgument("not valid base64");
  }
  out.resize(len);
  return out;
}

uint64_t NodeIdOf(const PublicKey& key) {
  unsigned char out[16];
  crypto_generichash(out, sizeof(out), key.data(), key.size(), nullptr, 0);
  return DecodeFixed64BE(reinterpret_cast<const char*>(out));
}

Hash256 GenericHash(std::initializer_list<std::string_view> parts) {
  Hash256 out;
  HashParts(parts, nullptr, out.data());
  return out;
}

SymmetricKey SymmetricKey::FromBytesForTesting(std::string_view bytes) {
  SymmetricKey key;
  for (size_t i = 0; i < key.size() && i < bytes.size(); ++i) {
    key.bytes_[i] = static_cast<uint8_t>(bytes[i]);
  }
  return key;
}

SymmetricKey::~SymmetricKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

void SigningKeyPairFromSeedForTesting(const SymmetricKey& seed, PublicKey* public_key,
                                      std::string* secret_key) {
  static_assert(kSymmetricKeyBytes == crypto_sign_SEEDBYTES);
  TIDEMAP_CHECK(Init().ok());
  secret_key->resize(kSecretKeyBytes);
  crypto_sign_seed_keypair(public_key->data(), reinterpret_cast<unsigned char*>(secret_key->data()),
                           seed.data());
}

SymmetricKey DeriveKey(const SymmetricKey& key, std::initializer_list<std::string_view> parts) {
  SymmetricKey out;
  HashParts(parts, &key, out.data());
  return out;
}

KxKeyPair KxKeyPair::Generate() {
  TIDEMAP_CHECK(Init().ok());
  KxKeyPair pair;
  crypto_kx_keypair(pair.public_key_.data(), pair.secret_key_.data());
  return pair;
}

KxKeyPair KxKeyPair::FromSeedForTesting(const SymmetricKey& seed) {
  TIDEMAP_CHECK(Init().ok());
  KxKeyPair pair;
  crypto_kx_seed_keypair(pair.public_key_.data(), pair.secret_key_.data(), seed.data());
  return pair;
}

KxKeyPair::~KxKeyPair() = default;  // SymmetricKey wipes the secret half

Status KxKeyPair::ClientSessionKeys(const KxPublicKey& server, SymmetricKey* rx,
                                    SymmetricKey* tx) const {
  SymmetricKey r, t;
  if (crypto_kx_client_session_keys(r.data(), t.data(), public_key_.data(), secret_key_.data(),
                                    server.data()) != 0) {
    return Status::Corruption("unacceptable key exchange public key");
  }
  *rx = r;
  *tx = t;
  return Status::Ok();
}

Status KxKeyPair::ServerSessionKeys(const KxPublicKey& client, SymmetricKey* rx,
                                    SymmetricKey* tx) const {
  SymmetricKey r, t;
  if (crypto_kx_server_session_keys(r.data(), t.data(), public_key_.data(), secret_key_.data(),
                                    client.data()) != 0) {
    return Status::Corruption("unacceptable key exchange public key");
  }
  *rx = r;
  *tx = t;
  return Status::Ok();
}

namespace {

unsigned char SodiumTag(StreamTag tag) {
  return tag == StreamTag::kFinal ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                  : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
}

}  // namespace

struct SecretStreamPush::State {
  crypto_secretstream_xchacha20poly1305_state s;
  ~State() { sodium_memzero(&s, sizeof(s)); }
};

SecretStreamPush::SecretStreamPush(const SymmetricKey& key, std::string* header)
    : state_(std::make_unique<State>()) {
  TIDEMAP_CHECK(Init().ok());
  unsigned char h[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
  crypto_secretstream_xchacha20poly1305_init_push(&state_->s, h, key.data());
  header->append(reinterpret_cast<const char*>(h), sizeof(h));
}

SecretStreamPush::SecretStreamPush(SecretStreamPush&&) noexcept = default;
SecretStreamPush& SecretStreamPush::operator=(SecretStreamPush&&) noexcept = default;
SecretStreamPush::~SecretStreamPush() = default;

void SecretStreamPush::Push(std::string_view plaintext, std::string_view ad, StreamTag tag,
                            std::string* out) {
  TIDEMAP_CHECK_MSG(state_ != nullptr, "Push on a moved-from SecretStreamPush");
  const size_t start = out->size();
  out->resize(start + plaintext.size() + kStreamOverheadBytes);
  unsigned long long written = 0;
  crypto_secretstream_xchacha20poly1305_push(
      &state_->s, reinterpret_cast<unsigned char*>(out->data() + start), &written, Bytes(plaintext),
      plaintext.size(), Bytes(ad), ad.size(), SodiumTag(tag));
  TIDEMAP_CHECK(written == plaintext.size() + kStreamOverheadBytes);
}

struct SecretStreamPull::State {
  crypto_secretstream_xchacha20poly1305_state s;
  ~State() { sodium_memzero(&s, sizeof(s)); }
};

SecretStreamPull::SecretStreamPull() : state_(std::make_unique<State>()) {}
SecretStreamPull::SecretStreamPull(SecretStreamPull&&) noexcept = default;
SecretStreamPull& SecretStreamPull::operator=(SecretStreamPull&&) noexcept = default;
SecretStreamPull::~SecretStreamPull() = default;

Result<SecretStreamPull> SecretStreamPull::Start(const SymmetricKey& key, std::string_view header) {
  if (header.size() != kStreamHeaderBytes) {
    return Status::InvalidArgument("stream header has " + std::to_string(header.size()) +
                                   " bytes, expected " + std::to_string(kStreamHeaderBytes));
  }
  TIDEMAP_CHECK(Init().ok());
  SecretStreamPull pull;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&pull.state_->s, Bytes(header), key.data()) !=
      0) {
    return Status::Corruption("stream header refused");
  }
  return pull;
}

Status SecretStreamPull::Pull(std::string_view ciphertext, std::string_view ad,
                              std::string* plaintext, StreamTag* tag) {
  TIDEMAP_CHECK_MSG(state_ != nullptr, "Pull on a moved-from SecretStreamPull");
  if (ciphertext.size() < kStreamOverheadBytes) {
    return Status::Corruption("encrypted message of " + std::to_string(ciphertext.size()) +
                              " bytes is shorter than its " + std::to_string(kStreamOverheadBytes) +
                              "-byte tag");
  }
  plaintext->resize(ciphertext.size() - kStreamOverheadBytes);
  // A one-byte scratch target when the message is empty (data() of an empty string is valid,
  // but keep libsodium away from writing through a pointer we did not size).
  unsigned char scratch = 0;
  unsigned char* m =
      plaintext->empty() ? &scratch : reinterpret_cast<unsigned char*>(plaintext->data());
  unsigned long long len = 0;
  unsigned char t = 0;
  if (crypto_secretstream_xchacha20poly1305_pull(&state_->s, m, &len, &t, Bytes(ciphertext),
                                                 ciphertext.size(), Bytes(ad), ad.size()) != 0) {
    plaintext->clear();
    return Status::Corruption(
        "failed authentication (tampered, truncated, reordered or replayed, "
        "or not sealed with this stream's key)");
  }
  TIDEMAP_CHECK(len == plaintext->size());
  if (t == crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
    *tag = StreamTag::kMessage;
  } else if (t == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    *tag = StreamTag::kFinal;
  } else {
    plaintext->clear();
    return Status::Corruption("message carries stream tag " + std::to_string(t) +
                              ", which tidemap does not use");
  }
  return Status::Ok();
}

bool SecretEquals(std::string_view a, std::string_view b) {
  unsigned char da[crypto_generichash_BYTES], db[crypto_generichash_BYTES];
  crypto_generichash(da, sizeof(da), reinterpret_cast<const unsigned char*>(a.data()), a.size(),
                     nullptr, 0);
  crypto_generichash(db, sizeof(db), reinterpret_cast<const unsigned char*>(b.data()), b.size(),
                     nullptr, 0);
  return sodium_memcmp(da, db, sizeof(da)) == 0;
}

}  // namespace tidemap::crypto
