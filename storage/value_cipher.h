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
// Thread-safety: immutable once built (AddOpenKey before first use); Seal and
// Open may run on any number of threads at once.
#ifndef TIDEMAP_STORAGE_VALUE_CIPHER_H_
#define TIDEMAP_STORAGE_VALUE_CIPHER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/aead.h>
#include <tidemap/base/status.h>

namespace tidemap {

class ValueCipher {
 public:
  // Seals under `key`, named `key_id` (non-zero) in each sealed value.
  ValueCipher(uint8_t key_id, crypto::AeadKey key);
  ValueCipher(ValueCipher&&) noexcept = default;
  ValueCipher& operator=(ValueCipher&&) noexcept = default;

  // Also opens values sealed under `key_id` (the old key of a rekey in
  // progress). REQUIRES: `key_id` non-zero and not already known.
  void AddOpenKey(uint8_t key_id, crypto::AeadKey key);

  // The id of the key new values are sealed under.
  uint8_t seal_key_id() const { return seal_key_id_; }
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
  const crypto::AeadKey* KeyFor(uint8_t key_id) const;

  uint8_t seal_key_id_;
  std::vector<std::pair<uint8_t, crypto::AeadKey>> keys_;  // the sealing key first
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_VALUE_CIPHER_H_
