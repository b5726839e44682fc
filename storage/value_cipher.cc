#include <tidemap/storage/value_cipher.h>

#include <utility>

#include <tidemap/base/check.h>

namespace tidemap {

ValueCipher::ValueCipher(uint8_t key_id, crypto::AeadKey key) : seal_key_id_(key_id) {
  TIDEMAP_CHECK(key_id != 0);
  keys_.emplace_back(key_id, std::move(key));
}

void ValueCipher::AddOpenKey(uint8_t key_id, crypto::AeadKey key) {
  TIDEMAP_CHECK(key_id != 0 && KeyFor(key_id) == nullptr);
  keys_.emplace_back(key_id, std::move(key));
}

crypto::AeadSuite ValueCipher::suite() const { return keys_.front().second.suite(); }

size_t ValueCipher::overhead() const { return 1 + keys_.front().second.overhead(); }

const crypto::AeadKey* ValueCipher::KeyFor(uint8_t key_id) const {
  for (const auto& [id, key] : keys_) {
    if (id == key_id) return &key;
  }
  return nullptr;
}

void ValueCipher::Seal(std::string_view ad, std::string_view plaintext, std::string* out) const {
  out->push_back(static_cast<char>(seal_key_id_));
  keys_.front().second.Seal(plaintext, ad, out);
}

Status ValueCipher::Open(std::string_view ad, std::string_view sealed,
                         std::string* plaintext) const {
  plaintext->clear();
  const std::optional<uint8_t> id = KeyIdOf(sealed);
  if (!id.has_value()) return Status::Corruption("sealed value is empty");
  const crypto::AeadKey* key = KeyFor(*id);
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
