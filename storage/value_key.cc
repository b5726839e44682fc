// The files of encryption at rest: key files, passphrase files and the data
// dir's DIR/encryption (grammars in storage/value_key.h).
#include <tidemap/storage/value_key.h>

#include <charconv>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include <tidemap/base/coding.h>
#include <tidemap/base/private_file.h>

namespace tidemap {

namespace {

constexpr std::string_view kKeyHeader = "tidemap-value-key v1\n";
constexpr std::string_view kKeyPrefix = "key ";
constexpr std::string_view kConfigHeader = "tidemap-encryption v1";
constexpr size_t kSecretFileBytesMax = 4096;
constexpr size_t kKeyCheckBytes = 16;

std::string ConfigPath(const std::string& dir) {
  return (std::filesystem::path(dir) / std::string(kEncryptionFileName)).string();
}

// Splits `line` at spaces.
std::vector<std::string> Fields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

bool ParseU64(const std::string& text, uint64_t* out) {
  const char* end = text.data() + text.size();
  auto [at, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && at == end;
}

bool ParseByte(const std::string& text, uint8_t* out) {
  uint64_t v = 0;
  if (!ParseU64(text, &v) || v == 0 || v > 255) return false;
  *out = static_cast<uint8_t>(v);
  return true;
}

// Applies one "name fields..." line of DIR/encryption to *c; false when malformed.
bool ApplyConfigLine(const std::vector<std::string>& f, EncryptionConfig* c) {
  if (f.size() == 2 && f[0] == "suite") {
    auto suite = crypto::ParseAeadSuite(f[1]);
    if (!suite.ok()) return false;
    c->suite = *suite;
    return true;
  }
  if (f.size() == 2 && f[0] == "key_id") return ParseByte(f[1], &c->key_id);
  if (f.size() == 2 && f[0] == "key_check") {
    return FromHex(f[1], &c->key_check) && c->key_check.size() == kKeyCheckBytes;
  }
  if (f.size() == 2 && f[0] == "kdf" && f[1] == "file") return true;
  if (f.size() == 5 && f[0] == "kdf" && f[1] == "argon2id") {
    c->from_passphrase = true;
    return ParseU64(f[2], &c->params.ops_limit) && ParseU64(f[3], &c->params.mem_limit_bytes) &&
           FromHex(f[4], &c->salt) && c->salt.size() == crypto::kPwhashSaltBytes;
  }
  if (f.size() == 4 && f[0] == "rekey_from") {
    return ParseByte(f[1], &c->old_key_id) && FromHex(f[2], &c->old_key_check) &&
           c->old_key_check.size() == kKeyCheckBytes && FromHex(f[3], &c->old_key_wrapped);
  }
  return false;
}

}  // namespace

Status CreateValueKeyFile(const std::string& path) {
  crypto::SymmetricKey key;
  crypto::RandomBytes(key.data(), key.size());
  std::string text =
      std::string(kKeyHeader) + std::string(kKeyPrefix) +
      ToHex(std::string_view(reinterpret_cast<const char*>(key.data()), key.size())) + "\n";
  const Status s = WritePrivateFile(path, "key file " + path, text, /*replace=*/false);
  crypto::Wipe(text.data(), text.size());
  return s;
}

Result<crypto::SymmetricKey> LoadValueKeyFile(const std::string& path) {
  auto text = ReadPrivateFile(path, "key file " + path, kSecretFileBytesMax);
  if (text.status().IsNotFound()) return Status::Unavailable(text.status().message());
  if (!text.ok()) return text.status();
  std::string bytes;
  const std::string_view t = *text;
  const size_t hex_at = kKeyHeader.size() + kKeyPrefix.size();
  const bool ok = t.size() == hex_at + 2 * crypto::kSymmetricKeyBytes + 1 &&
                  t.substr(0, kKeyHeader.size()) == kKeyHeader &&
                  t.substr(kKeyHeader.size(), kKeyPrefix.size()) == kKeyPrefix &&
                  t.back() == '\n' &&
                  FromHex(t.substr(hex_at, 2 * crypto::kSymmetricKeyBytes), &bytes);
  crypto::Wipe(text->data(), text->size());
  if (!ok) {
    crypto::Wipe(bytes.data(), bytes.size());
    return Status::Corruption("key file " + path +
                              " is not a tidemap value key (line 1 \"tidemap-value-key v1\", "
                              "line 2 \"key \" and 64 hex digits)");
  }
  crypto::SymmetricKey key;
  std::memcpy(key.data(), bytes.data(), key.size());
  crypto::Wipe(bytes.data(), bytes.size());
  return key;
}

Result<std::string> LoadPassphraseFile(const std::string& path) {
  auto text = ReadPrivateFile(path, "passphrase file " + path, kSecretFileBytesMax);
  if (text.status().IsNotFound()) return Status::Unavailable(text.status().message());
  if (!text.ok()) return text.status();
  if (!text->empty() && text->back() == '\n') text->pop_back();
  if (text->empty()) return Status::InvalidArgument("passphrase file " + path + " is empty");
  return std::move(text).value();
}

std::string KeyCheckValue(const crypto::SymmetricKey& key) {
  const crypto::SymmetricKey check = crypto::DeriveKey(key, {"tidemap value key check v1"});
  return std::string(reinterpret_cast<const char*>(check.data()), kKeyCheckBytes);
}

Result<std::optional<EncryptionConfig>> LoadEncryptionConfig(const std::string& dir) {
  const std::string path = ConfigPath(dir);
  auto text = ReadPrivateFile(path, "encryption file " + path, kSecretFileBytesMax);
  if (text.status().IsNotFound()) return std::optional<EncryptionConfig>();
  if (!text.ok()) return text.status();
  std::istringstream in(*text);
  std::string line;
  if (!std::getline(in, line) || line != kConfigHeader) {
    return Status::Corruption("encryption file " + path + ": line 1 must be \"" +
                              std::string(kConfigHeader) + "\"");
  }
  EncryptionConfig c;
  for (int n = 2; std::getline(in, line); ++n) {
    if (!ApplyConfigLine(Fields(line), &c)) {
      return Status::Corruption("encryption file " + path + ": line " + std::to_string(n) +
                                " is malformed: " + Printable(line));
    }
  }
  if (c.key_check.empty()) {
    return Status::Corruption("encryption file " + path + " has no key_check line");
  }
  return std::optional<EncryptionConfig>(std::move(c));
}

Status SaveEncryptionConfig(const std::string& dir, const EncryptionConfig& c, bool replace) {
  std::string text = std::string(kConfigHeader) + "\n";
  text += "suite " + std::string(crypto::AeadSuiteName(c.suite)) + "\n";
  text += "key_id " + std::to_string(c.key_id) + "\n";
  text += "key_check " + ToHex(c.key_check) + "\n";
  if (c.from_passphrase) {
    text += "kdf argon2id " + std::to_string(c.params.ops_limit) + " " +
            std::to_string(c.params.mem_limit_bytes) + " " + ToHex(c.salt) + "\n";
  } else {
    text += "kdf file\n";
  }
  if (c.old_key_id != 0) {
    text += "rekey_from " + std::to_string(c.old_key_id) + " " + ToHex(c.old_key_check) + " " +
            ToHex(c.old_key_wrapped) + "\n";
  }
  const std::string path = ConfigPath(dir);
  return WritePrivateFile(path, "encryption file " + path, text, replace);
}

}  // namespace tidemap
