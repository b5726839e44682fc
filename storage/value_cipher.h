// ValueCipher: seals and opens record values at rest (see the record grammar
// at the top of storage/rows.cc).
//
//   sealed := key_id:u8 nonce ciphertext tag
//
// key_id names the key the value was sealed under (1..255, never 0), so that
// while a rekey runs, values under the old key and under the new one both
// open. The nonce is random per seal; the associated data (given by the
// record codec) binds the value to its map, key and version, so a sealed
// value copied under another key or version fails to open.
//
// Thread-safety: Seal and Open may run on any number of threads at once, also
// while AddOpenKey or SwitchSealKey runs (those two take an internal mutex,
// one at a time). A key, once added, stays in memory until the cipher is
// destroyed, so a Seal or Open that raced a switch never uses a freed key.
#ifndef TIDEMAP_STORAGE_VALUE_CIPHER_H_
#define TIDEMAP_STORAGE_VALUE_CIPHER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/aead.h>
#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>

namespace tidemap {

class ValueCipher {
 public:
  // Seals under `key`, named `key_id` (non-zero) in each sealed value.
  ValueCipher(uint8_t key_id, crypto::AeadKey key);
  ValueCipher(const ValueCipher&) = delete;
  ValueCipher& operator=(const ValueCipher&) = delete;

  // Also opens values sealed under `key_id` (the old key of a rekey in
  // progress). REQUIRES: `key_id` non-zero and not already known.
  void AddOpenKey(uint8_t key_id, crypto::AeadKey key);
  // The live half of a rekey: seals under `key`, named `key_id`, from now on;
  // every key known until now keeps opening. A known key of id `key_id` is
  // replaced (ids wrap around after 255 rekeys). A Seal that runs at the
  // same time uses either key, and names the one it used. REQUIRES:
  // `key_id` non-zero and not the sealing key's id; `key` of the same suite.
  void SwitchSealKey(uint8_t key_id, crypto::AeadKey key);

  // The id of the key new values are sealed under.
  uint8_t seal_key_id() const { return seal_.load(std::memory_order_acquire)->key_id; }
  crypto::AeadSuite suite() const;
  // Bytes a sealed value has beyond its plaintext.
  size_t overhead() const;

  // Appends key_id || nonce || ciphertext || tag of `plaintext` to *out,
  // authenticating `ad` (not stored).
  void Seal(std::string_view ad, std::string_view plaintext, std::string* out) const;
  // Opens what Seal wrote into *plaintext. Corruption, with *plaintext
  // empty, when the bytes are short, name an unknown key id or fail
  // authentication (tampered bytes, another `ad`, another key).
  Status Open(std::string_view ad, std::string_view sealed, std::string* plaintext) const;
  // The key id of a sealed value (nullopt when empty).
  static std::optional<uint8_t> KeyIdOf(std::string_view sealed);

 private:
  struct SealKey {
    uint8_t key_id;
    const crypto::AeadKey* key;
  };
  // Keeps `key` until destruction and publishes it under `key_id`.
  const crypto::AeadKey* Publish(uint8_t key_id, crypto::AeadKey key) TIDEMAP_REQUIRES(mu_);

  Mutex mu_;  // one AddOpenKey or SwitchSealKey at a time
  std::vector<std::unique_ptr<crypto::AeadKey>> owned_keys_ TIDEMAP_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<SealKey>> owned_seals_ TIDEMAP_GUARDED_BY(mu_);
  std::array<std::atomic<const crypto::AeadKey*>, 256> keys_{};  // by key id; null: unknown
  std::atomic<const SealKey*> seal_{nullptr};                    // never null once built
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_VALUE_CIPHER_H_
