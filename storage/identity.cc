// The identity file, DIR/identity.key: three lines of ASCII, each ending in
// '\n', nothing before, between or after them.
//
//   file   := "tidemap-identity v1" '\n'
//             "public " hex64 '\n'       ; the Ed25519 public key (32 bytes)
//             "secret " hex128 '\n'      ; the Ed25519 secret key (64 bytes, libsodium
//                                        ; layout: 32-byte seed then the public key)
//   hex64  := 64 lowercase hex digits
//   hex128 := 128 lowercase hex digits
//
// A v1 file is therefore exactly kFileBytes (228) bytes. It is a text file so an
// operator can see which public key a node has without running tidemap; it is
// created with mode 0600 and refused when group or others may read or write it.
#include <tidemap/storage/identity.h>

#include <unistd.h>

#include <filesystem>
#include <system_error>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/base/private_file.h>

namespace tidemap {
namespace {

constexpr std::string_view kHeaderLine = "tidemap-identity v1\n";
constexpr std::string_view kHeaderPrefix = "tidemap-identity ";
constexpr std::string_view kPublicPrefix = "public ";
constexpr std::string_view kSecretPrefix = "secret ";
constexpr size_t kPublicLineBytes = kPublicPrefix.size() + 2 * crypto::kPublicKeyBytes + 1;
constexpr size_t kSecretLineBytes = kSecretPrefix.size() + 2 * crypto::kSecretKeyBytes + 1;
constexpr size_t kFileBytes = kHeaderLine.size() + kPublicLineBytes + kSecretLineBytes;
static_assert(kFileBytes == 228);

// What Load reads at most, so a wrong path to a huge file costs nothing.
constexpr size_t kReadBytesMax = 4096;

// A message proves ownership of the secret key: a damaged seed half would
// still pass a comparison of the embedded public key, but not a signature.
constexpr std::string_view kSelfCheckMessage = "tidemap identity self-check";

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Zeroes a buffer that held secret material when it goes out of scope.
class ScopedWipe {
 public:
  ScopedWipe(void* buf, size_t len) : buf_(buf), len_(len) {}
  ~ScopedWipe() { crypto::Wipe(buf_, len_); }
  ScopedWipe(const ScopedWipe&) = delete;
  ScopedWipe& operator=(const ScopedWipe&) = delete;

 private:
  void* buf_;
  size_t len_;
};

Status CorruptionIn(const std::string& path, const std::string& why) {
  return Status::Corruption("identity file " + path + ": " + why);
}

// Parses the bytes of an identity file (see the grammar above). Messages never
// quote the secret line.
Status Parse(std::string_view text, const std::string& path, crypto::PublicKey* public_key,
             std::string* secret_key) {
  if (text.empty()) {
    return CorruptionIn(path,
                        "the file is empty (an interrupted `tidemap init`?); if this node never "
                        "ran, remove the file and run `tidemap init` again");
  }
  if (text.size() < kHeaderLine.size() && kHeaderLine.substr(0, text.size()) == text) {
    return CorruptionIn(path, "truncated: " + std::to_string(text.size()) +
                                  " bytes, a v1 identity file has " + std::to_string(kFileBytes));
  }
  if (text.substr(0, kHeaderPrefix.size()) != kHeaderPrefix) {
    return CorruptionIn(path,
                        "not a tidemap identity file (line 1 must be \"tidemap-identity v1\")");
  }
  if (text.substr(0, kHeaderLine.size()) != kHeaderLine) {
    const std::string_view line1 = text.substr(0, text.find('\n'));
    return CorruptionIn(path, "unsupported format \"" + Printable(line1) +
                                  "\"; this build reads \"tidemap-identity v1\"");
  }
  if (text.size() != kFileBytes) {
    return CorruptionIn(path, std::string(text.size() < kFileBytes ? "truncated" : "too long") +
                                  ": " + std::to_string(text.size()) +
                                  " bytes, a v1 identity file has exactly " +
                                  std::to_string(kFileBytes));
  }
  text.remove_prefix(kHeaderLine.size());

  const std::string_view public_line = text.substr(0, kPublicLineBytes);
  const std::string_view public_hex =
      public_line.substr(kPublicPrefix.size(), 2 * crypto::kPublicKeyBytes);
  if (public_line.substr(0, kPublicPrefix.size()) != kPublicPrefix || public_line.back() != '\n' ||
      !IsLowerHex(public_hex)) {
    return CorruptionIn(path, "line 2 must be \"public \" and 64 lowercase hex digits");
  }
  Result<crypto::PublicKey> parsed = crypto::PublicKeyFromText(public_hex);
  if (!parsed.ok()) return CorruptionIn(path, "line 2: " + parsed.status().message());
  *public_key = *parsed;
  text.remove_prefix(kPublicLineBytes);

  const std::string_view secret_line = text;
  const std::string_view secret_hex =
      secret_line.substr(kSecretPrefix.size(), 2 * crypto::kSecretKeyBytes);
  if (secret_line.substr(0, kSecretPrefix.size()) != kSecretPrefix || secret_line.back() != '\n' ||
      !IsLowerHex(secret_hex) || !FromHex(secret_hex, secret_key)) {
    return CorruptionIn(path, "line 3 must be \"secret \" and 128 lowercase hex digits");
  }
  return Status::Ok();
}

}  // namespace

std::string Identity::PathIn(const std::string& dir) {
  return (std::filesystem::path(dir) / kIdentityFileName).string();
}

Identity::Identity(const crypto::PublicKey& public_key, std::string_view secret_key)
    : public_key_(public_key), secret_key_(secret_key) {}

Identity::Identity(Identity&& other) noexcept
    : public_key_(other.public_key_), secret_key_(std::move(other.secret_key_)) {
  // A moved-from std::string may keep its buffer; leave no copy behind.
  other.WipeSecret();
}

Identity& Identity::operator=(Identity&& other) noexcept {
  if (this != &other) {
    WipeSecret();
    public_key_ = other.public_key_;
    secret_key_ = std::move(other.secret_key_);
    other.WipeSecret();
  }
  return *this;
}

Identity::~Identity() { WipeSecret(); }

void Identity::WipeSecret() {
  crypto::Wipe(secret_key_.data(), secret_key_.size());
  secret_key_.clear();
}

std::string Identity::public_key_text() const { return crypto::PublicKeyToText(public_key_); }

uint64_t Identity::node_id() const { return crypto::NodeIdOf(public_key_); }

Result<Identity> Identity::Create(const std::string& dir) {
  if (dir.empty()) return Status::InvalidArgument("data directory path is empty");
  std::error_code ec;
  const bool created_dir = std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create data directory " + dir + ": " + ec.message());
  const std::string path = PathIn(dir);

  crypto::PublicKey public_key;
  std::string secret_key;
  TIDEMAP_RETURN_IF_ERROR(crypto::GenerateSigningKeyPair(&public_key, &secret_key));
  Identity identity(public_key, secret_key);
  crypto::Wipe(secret_key.data(), secret_key.size());

  std::string secret_hex = ToHex(identity.secret_key());
  std::string contents;
  contents.reserve(kFileBytes);
  contents.append(kHeaderLine);
  contents.append(kPublicPrefix).append(identity.public_key_text()).append("\n");
  contents.append(kSecretPrefix).append(secret_hex).append("\n");
  crypto::Wipe(secret_hex.data(), secret_hex.size());
  ScopedWipe wipe_contents(contents.data(), contents.size());
  TIDEMAP_CHECK(contents.size() == kFileBytes);

  const Status written =
      WritePrivateFile(path, "identity file " + path, contents, /*replace=*/false);
  if (written.IsRefused()) {
    return Status::Refused("identity file " + path +
                           " already exists; refusing to overwrite a node identity");
  }
  TIDEMAP_RETURN_IF_ERROR(written);
  // The file and its name are durable; a directory we just made becomes
  // durable with its parent.
  if (created_dir) {
    const std::filesystem::path parent =
        std::filesystem::path(dir).lexically_normal().parent_path();
    if (Status s = SyncDir(parent.empty() ? "." : parent.string()); !s.ok()) {
      ::unlink(path.c_str());
      return s;
    }
  }
  return identity;
}

Result<Identity> Identity::Load(const std::string& dir) {
  const std::string path = PathIn(dir);
  Result<std::string> text = ReadPrivateFile(path, "identity file " + path, kReadBytesMax);
  if (!text.ok()) {
    if (text.status().IsNotFound()) {
      return Status::NotFound("identity file " + path +
                              " not found; create a node identity with `tidemap init --data " +
                              dir + "`");
    }
    return text.status();
  }
  ScopedWipe wipe_text(text->data(), text->size());

  crypto::PublicKey public_key{};
  std::string secret_key;
  secret_key.reserve(crypto::kSecretKeyBytes);
  Status s = Parse(*text, path, &public_key, &secret_key);
  Identity identity(public_key, secret_key);
  crypto::Wipe(secret_key.data(), secret_key.size());
  if (!s.ok()) return s;

  crypto::PublicKey embedded;
  TIDEMAP_RETURN_IF_ERROR(crypto::PublicKeyFromSecret(identity.secret_key(), &embedded));
  std::string signature;
  TIDEMAP_RETURN_IF_ERROR(crypto::Sign(identity.secret_key(), kSelfCheckMessage, &signature));
  if (embedded != public_key || !crypto::Verify(public_key, kSelfCheckMessage, signature)) {
    return CorruptionIn(path,
                        "the public key on line 2 does not belong to the secret key on line 3");
  }
  return identity;
}

}  // namespace tidemap
