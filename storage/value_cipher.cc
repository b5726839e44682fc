#include <tidemap/storage/value_cipher.h>

#include <utility>

#include <tidemap/base/check.h>

namespace tidemap {

ValueCipher::ValueCipher(uint8_t key_id, crypto::AeadKey key) {
  TIDEMAP_CHECK(key_id != 0);
  MutexLock lock(&mu_);
  const crypto::AeadKey* published = Publish(key_id, std::move(key));
  owned_seals_.push_back(std::make_unique<SealKey>(SealKey{key_id, published}));
  seal_.store(owned_seals_.back().get(), std::memory_order_release);
}

const crypto::AeadKey* ValueCipher::Publish(uint8_t key_id, crypto::AeadKey key) {
  owned_keys_.push_back(std::make_unique<crypto::AeadKey>(std::move(key)));
  const crypto::AeadKey* published = owned_keys_.back().get();
  keys_[key_id].store(published, std::memory_order_release);
  return published;
}

void ValueCipher::AddOpenKey(uint8_t key_id, crypto::AeadKey key) {
  TIDEMAP_CHECK(key_id != 0 && keys_[key_id].load(std::memory_order_acquire) == nullptr);
  MutexLock lock(&mu_);
  Publish(key_id, std::move(key));
}

void ValueCipher::SwitchSealKey(uint8_t key_id, crypto::AeadKey key) {
  TIDEMAP_CHECK(key_id != 0 && key_id != seal_key_id() && key.suite() == suite());
  MutexLock lock(&mu_);
  // The key is published before it seals anything, so every value sealed
  // under it opens at once.
  const crypto::AeadKey* published = Publish(key_id, std::move(key));
  owned_seals_.push_back(std::make_unique<SealKey>(SealKey{key_id, published}));
  seal_.store(owned_seals_.back().get(), std::memory_order_release);
}

crypto::AeadSuite ValueCipher::suite() const {
  return seal_.load(std::memory_order_acquire)->key->suite();
}

size_t ValueCipher::overhead() const {
  return 1 + seal_.load(std::memory_order_acquire)->key->overhead();
}

void ValueCipher::Seal(std::string_view ad, std::string_view plaintext, std::string* out) const {
  const SealKey* seal = seal_.load(std::memory_order_acquire);
  out->push_back(static_cast<char>(seal->key_id));
  seal->key->Seal(plaintext, ad, out);
}

Status ValueCipher::Open(std::string_view ad, std::string_view sealed,
                         std::string* plaintext) const {
  plaintext->clear();
  const std::optional<uint8_t> id = KeyIdOf(sealed);
  if (!id.has_value()) return Status::Corruption("sealed value is empty");
  const crypto::AeadKey* key = keys_[*id].load(std::memory_order_acquire);
  if (key == nullptr) {
    return Status::Corruption("value sealed under key id " + std::to_string(*id) +
                              ", which is not a key of this data dir");
  }
  const Status opened = key->Open(sealed.substr(1), ad, plaintext);
  if (!opened.ok()) {
    return Status::Corruption(opened.message() +
                              " (tampered bytes, or a value moved from another key or version)");
  }
  return Status::Ok();
}

std::optional<uint8_t> ValueCipher::KeyIdOf(std::string_view sealed) {
  if (sealed.empty()) return std::nullopt;
  return static_cast<uint8_t>(sealed[0]);
}

}  // namespace tidemap
