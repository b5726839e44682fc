// Turning a key source into the cipher of a data dir's values, and the
// config changes of a rekey (see storage/value_key.h).
#include <cstring>
#include <utility>

#include <tidemap/base/crypto.h>
#include <tidemap/storage/value_key.h>

namespace tidemap {

namespace {

// The associated data of a wrapped old key: binds it to both key ids.
std::string WrapAd(uint8_t old_id, uint8_t new_id) {
  return "tidemap rekey: key " + std::to_string(old_id) + " under key " + std::to_string(new_id);
}

// The key `source` names for `config` (a passphrase goes through Argon2id
// with the config's salt and parameters), unchecked.
Result<crypto::SymmetricKey> KeyOf(const EncryptionConfig& config, const ValueKeySource& source) {
  if (source.passphrase.has_value()) {
    if (!config.from_passphrase) {
      return Status::Unavailable(
          "its values are sealed under a key file, not a passphrase; give --key-file FILE");
    }
    return crypto::KeyFromPassphrase(*source.passphrase, config.salt, config.params);
  }
  if (config.from_passphrase) {
    return Status::Unavailable(
        "its values are sealed under a key derived from a passphrase; give --passphrase-file "
        "FILE or set " +
        std::string(kPassphraseEnv));
  }
  return LoadValueKeyFile(source.key_file);
}

}  // namespace

Result<EncryptionConfig> NewEncryptionConfig(const ValueKeySource& source,
                                             const crypto::PwhashParams& params,
                                             crypto::SymmetricKey* key) {
  if (source.empty()) {
    return Status::InvalidArgument("--encrypt needs --key-file FILE, --passphrase-file FILE or " +
                                   std::string(kPassphraseEnv));
  }
  EncryptionConfig c;
  c.suite = crypto::PreferredAeadSuite();
  if (source.passphrase.has_value()) {
    c.from_passphrase = true;
    c.params = params;
    c.salt.resize(crypto::kPwhashSaltBytes);
    crypto::RandomBytes(c.salt.data(), c.salt.size());
  } else {
    auto existing = LoadValueKeyFile(source.key_file);
    if (!existing.ok() && existing.status().IsUnavailable()) {
      TIDEMAP_RETURN_IF_ERROR(CreateValueKeyFile(source.key_file));
    }
  }
  TIDEMAP_ASSIGN_OR_RETURN(*key, KeyOf(c, source));
  c.key_check = KeyCheckValue(*key);
  return c;
}

Result<crypto::SymmetricKey> UnlockValueKey(const std::string& dir, const EncryptionConfig& config,
                                            const ValueKeySource& source) {
  const std::string what = "data dir " + dir + " is encrypted at rest";
  if (source.empty()) {
    return Status::Unavailable(what +
                               " and no key was given: give --key-file FILE (or "
                               "--passphrase-file FILE, or set " +
                               std::string(kPassphraseEnv) + ", for a passphrase)");
  }
  auto key = KeyOf(config, source);
  if (!key.ok()) {
    if (key.status().IsRefused()) return key.status();
    return Status::Unavailable(what + ": " + key.status().message());
  }
  const std::string check = KeyCheckValue(*key);
  if (check == config.key_check) return key;
  const std::string given =
      source.passphrase.has_value() ? "the passphrase" : "the key in " + source.key_file;
  if (config.old_key_id != 0 && check == config.old_key_check) {
    return Status::Unavailable(what + ": " + given +
                               " is the old key of an unfinished rekey; open it with the new "
                               "key, or finish with `tidemap rekey`");
  }
  return Status::Unavailable(what + ": " + given +
                             " is wrong (it does not match the key check value in " + dir + "/" +
                             std::string(kEncryptionFileName) + ")");
}

Result<std::unique_ptr<ValueCipher>> MakeValueCipher(const EncryptionConfig& config,
                                                     const crypto::SymmetricKey& key) {
  TIDEMAP_ASSIGN_OR_RETURN(crypto::AeadKey sealing, crypto::AeadKey::Create(config.suite, key));
  std::string old_bytes;
  if (config.old_key_id != 0) {
    const Status s =
        sealing.Open(config.old_key_wrapped, WrapAd(config.old_key_id, config.key_id), &old_bytes);
    if (!s.ok()) return Status::Corruption("the old key of the rekey in progress: " + s.message());
  }
  auto cipher = std::make_unique<ValueCipher>(config.key_id, std::move(sealing));
  if (config.old_key_id == 0) return cipher;
  if (old_bytes.size() != crypto::kSymmetricKeyBytes) {
    return Status::Corruption("the old key of the rekey in progress has the wrong size");
  }
  crypto::SymmetricKey old_key;
  std::memcpy(old_key.data(), old_bytes.data(), old_key.size());
  crypto::Wipe(old_bytes.data(), old_bytes.size());
  if (KeyCheckValue(old_key) != config.old_key_check) {
    return Status::Corruption("the old key of the rekey in progress fails its key check");
  }
  TIDEMAP_ASSIGN_OR_RETURN(crypto::AeadKey old_aead,
                           crypto::AeadKey::Create(config.suite, old_key));
  cipher->AddOpenKey(config.old_key_id, std::move(old_aead));
  return cipher;
}

Result<EncryptionConfig> BeginRekeyConfig(const EncryptionConfig& config,
                                          const crypto::SymmetricKey& old_key,
                                          const crypto::SymmetricKey& new_key) {
  if (KeyCheckValue(old_key) == KeyCheckValue(new_key)) {
    return Status::InvalidArgument("the new key is the same as the old one");
  }
  EncryptionConfig next = config;
  next.key_id = static_cast<uint8_t>(config.key_id == 255 ? 1 : config.key_id + 1);
  next.key_check = KeyCheckValue(new_key);
  next.from_passphrase = false;
  next.salt.clear();
  next.params = {};
  next.old_key_id = config.key_id;
  next.old_key_check = config.key_check;
  TIDEMAP_ASSIGN_OR_RETURN(crypto::AeadKey wrap, crypto::AeadKey::Create(config.suite, new_key));
  next.old_key_wrapped.clear();
  wrap.Seal(std::string_view(reinterpret_cast<const char*>(old_key.data()), old_key.size()),
            WrapAd(next.old_key_id, next.key_id), &next.old_key_wrapped);
  return next;
}

EncryptionConfig FinishRekeyConfig(const EncryptionConfig& config) {
  EncryptionConfig done = config;
  done.old_key_id = 0;
  done.old_key_check.clear();
  done.old_key_wrapped.clear();
  return done;
}

}  // namespace tidemap
