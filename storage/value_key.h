// Keys for values at rest (encryption at rest) and the data dir's record of
// how its values are sealed: DIR/encryption. The key itself never sits in the
// data dir's database: it comes from a key file (mode 0600) or from a
// passphrase turned into a key by Argon2id, and a key check value stored in
// DIR/encryption tells a wrong key apart before any record is read.
//
// Every function here is a plain function of its arguments and the files it
// names; none keeps state.
#ifndef TIDEMAP_STORAGE_VALUE_KEY_H_
#define TIDEMAP_STORAGE_VALUE_KEY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <tidemap/base/aead.h>
#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap {

// The environment variable a passphrase may come from (the CLI reads it).
inline constexpr std::string_view kPassphraseEnv = "TIDEMAP_PASSPHRASE";

// Where the key of a data dir's values comes from: a key file, or a passphrase.
struct ValueKeySource {
  std::string key_file;
  std::optional<std::string> passphrase;
  bool empty() const { return key_file.empty() && !passphrase.has_value(); }
};

// ---- key files ----
//
//   file := "tidemap-value-key v1" '\n' "key " hex64 '\n'
//
// Created with mode 0600 and refused when group or others may read or write it.

// Writes a fresh random key to `path`; Refused when `path` exists.
Status CreateValueKeyFile(const std::string& path);
// The key in `path`. Unavailable when it does not exist, Refused when group
// or others may access it, Corruption when it is not a key file.
Result<crypto::SymmetricKey> LoadValueKeyFile(const std::string& path);
// The passphrase in `path` (one trailing newline dropped): a private file
// like a key file. InvalidArgument when it is empty.
Result<std::string> LoadPassphraseFile(const std::string& path);

// ---- DIR/encryption ----
//
//   file   := "tidemap-encryption v1" '\n' line* ; one "name fields" per line, in order:
//   suite aes-256-gcm | xchacha20-poly1305        ; AeadSuite, chosen at init
//   key_id N                                      ; 1..255, in every sealed value
//   key_check HEX32                               ; KeyCheckValue of the key
//   kdf file | kdf argon2id OPS MEM SALT_HEX32    ; where the key comes from
//   [rekey_from N HEX32 WRAPPED_HEX]              ; a rekey in progress: the old
//            key's id and check, and the old key sealed under the current one
inline constexpr std::string_view kEncryptionFileName = "encryption";

struct EncryptionConfig {
  crypto::AeadSuite suite = crypto::AeadSuite::kXChaCha20Poly1305;
  uint8_t key_id = 1;
  std::string key_check;  // KeyCheckValue of the key (16 bytes)
  // Key from a passphrase: the Argon2id salt and parameters.
  bool from_passphrase = false;
  std::string salt;
  crypto::PwhashParams params;
  // A rekey in progress (old_key_id non-zero): values sealed under the old
  // key still open, with the old key unwrapped by the current one.
  uint8_t old_key_id = 0;
  std::string old_key_check;
  std::string old_key_wrapped;
};

// 16 bytes that identify `key` without revealing it (keyed BLAKE2b of a label).
std::string KeyCheckValue(const crypto::SymmetricKey& key);

// DIR/encryption, or nullopt when DIR has none (its values are in the clear).
Result<std::optional<EncryptionConfig>> LoadEncryptionConfig(const std::string& dir);
// Writes DIR/encryption: a new file (Refused if one exists), or a
// replacement that a crash leaves either old or new.
Status SaveEncryptionConfig(const std::string& dir, const EncryptionConfig& config, bool replace);

// The config of a new encrypted data dir: AES-256-GCM where the CPU has it,
// else XChaCha20-Poly1305; the key from `source` (a key file that does not
// exist yet is created with a fresh key; a passphrase gets a new salt and
// `params`). *key receives the key.
Result<EncryptionConfig> NewEncryptionConfig(const ValueKeySource& source,
                                             const crypto::PwhashParams& params,
                                             crypto::SymmetricKey* key);

// The key of `source` for `config`, checked against its key check value.
// Unavailable when `source` is empty or the key is wrong (the message says
// which, and whether it is the old key of an unfinished rekey).
Result<crypto::SymmetricKey> UnlockValueKey(const std::string& dir, const EncryptionConfig& config,
                                            const ValueKeySource& source);
// The cipher of `config` under its (unlocked) `key`: seals under it, and
// while a rekey is in progress also opens values under the old key.
Result<std::unique_ptr<ValueCipher>> MakeValueCipher(const EncryptionConfig& config,
                                                     const crypto::SymmetricKey& key);

// The config of a rekey from `old_key` (config's current key) to `new_key`:
// the next key id, the old key wrapped under the new one.
Result<EncryptionConfig> BeginRekeyConfig(const EncryptionConfig& config,
                                          const crypto::SymmetricKey& old_key,
                                          const crypto::SymmetricKey& new_key);
// The config once every value is under the new key: no old key any more.
EncryptionConfig FinishRekeyConfig(const EncryptionConfig& config);

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_VALUE_KEY_H_
