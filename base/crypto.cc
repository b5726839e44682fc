#include "base/crypto.h"

#include <sodium.h>

#include "base/coding.h"

namespace tidemap::crypto {

static_assert(kPublicKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kSecretKeyBytes == crypto_sign_SECRETKEYBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);

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

bool SecretEquals(std::string_view a, std::string_view b) {
  unsigned char da[crypto_generichash_BYTES], db[crypto_generichash_BYTES];
  crypto_generichash(da, sizeof(da), reinterpret_cast<const unsigned char*>(a.data()), a.size(),
                     nullptr, 0);
  crypto_generichash(db, sizeof(db), reinterpret_cast<const unsigned char*>(b.data()), b.size(),
                     nullptr, 0);
  return sodium_memcmp(da, db, sizeof(da)) == 0;
}

}  // namespace tidemap::crypto
