// DataDir::Rekey and DataDir::RekeyServing: every value of a data dir
// resealed under a new key, the first on a closed data dir, the second on
// the open one of a running node. Both take the same three steps.
//
// The order makes it resumable: (1) DIR/encryption is replaced by one that
// names the new key and holds the old key sealed under it, (2) the replica,
// sealing under the new key, reseals every value still under the old one and
// compacts, (3) DIR/encryption is replaced by one without the old key. A
// crash after (1) leaves a data dir whose values all open with the new key;
// running a rekey to the same key again redoes (2) and (3).
#include <filesystem>
#include <utility>

#include <tidemap/server/data_dir.h>
#include <tidemap/storage/dir_lock.h>

namespace tidemap {

namespace {

// The new key: from `path`, or a fresh one written there when it does not exist.
Result<crypto::SymmetricKey> LoadOrCreateNewKey(const std::string& path) {
  auto key = LoadValueKeyFile(path);
  if (key.ok() || !key.status().IsUnavailable()) return key;
  TIDEMAP_RETURN_IF_ERROR(CreateValueKeyFile(path));
  return LoadValueKeyFile(path);
}

// DIR/encryption, which a rekey needs: InvalidArgument when DIR has none.
Result<EncryptionConfig> LoadRekeyConfig(const std::string& dir) {
  TIDEMAP_ASSIGN_OR_RETURN(const std::optional<EncryptionConfig> config, LoadEncryptionConfig(dir));
  if (!config.has_value()) {
    return Status::InvalidArgument("data dir " + dir +
                                   " is not encrypted at rest; there is no key to change");
  }
  return *config;
}

// Step (1), or the check that the rekey in progress is to `new_key_file`.
// `old_key` gives config's key (called only when step (1) runs); *new_key
// receives the new key.
Result<EncryptionConfig> StartRekey(const std::string& dir, const EncryptionConfig& config,
                                    const std::function<Result<crypto::SymmetricKey>()>& old_key,
                                    const std::string& new_key_file, crypto::SymmetricKey* new_key,
                                    DataDirRekeyReport* report) {
  if (new_key_file.empty()) return Status::InvalidArgument("rekey needs --new-key-file FILE");
  TIDEMAP_ASSIGN_OR_RETURN(*new_key, LoadOrCreateNewKey(new_key_file));
  // A rekey in progress is finished, whatever step a crash stopped it at;
  // one already finished to this key is run again (it finds nothing to
  // reseal), so that "run it again" is always safe.
  const bool done_before = KeyCheckValue(*new_key) == config.key_check;
  if (config.old_key_id != 0 || done_before) {
    if (!done_before) {
      return Status::Unavailable("data dir " + dir + " has a rekey to another key in progress; " +
                                 "give that key as --new-key-file to finish it");
    }
    report->resumed = true;
    return config;
  }
  TIDEMAP_ASSIGN_OR_RETURN(const crypto::SymmetricKey old, old_key());
  TIDEMAP_ASSIGN_OR_RETURN(EncryptionConfig next, BeginRekeyConfig(config, old, *new_key));
  TIDEMAP_RETURN_IF_ERROR(SaveEncryptionConfig(dir, next, /*replace=*/true));
  return next;
}

// Step (3), once every value is under the new key.
Status FinishRekey(const std::string& dir, const EncryptionConfig& next,
                   DataDirRekeyReport* report) {
  report->old_key_id = next.old_key_id;
  report->new_key_id = next.key_id;
  return SaveEncryptionConfig(dir, FinishRekeyConfig(next), /*replace=*/true);
}

}  // namespace

Result<DataDirRekeyReport> DataDir::Rekey(const std::string& dir, const DataDirOptions& options,
                                          const std::string& new_key_file) {
  if (new_key_file.empty()) return Status::InvalidArgument("rekey needs --new-key-file FILE");
  if (const Status id = Identity::Load(dir).status(); !id.ok()) {
    if (!id.IsNotFound()) return id;
    return Status::Unavailable(dir + " is not a tidemap data dir (" + id.message() + ")");
  }
  TIDEMAP_ASSIGN_OR_RETURN(const EncryptionConfig config, LoadRekeyConfig(dir));
  DataDirRekeyReport report;
  EncryptionConfig next;
  {
    // Step (1) only while no process holds the database: a running node is
    // rekeyed through its HTTP API (RekeyServing).
    auto lock = DirLock::Acquire((std::filesystem::path(dir) / "db").string());
    if (!lock.ok()) {
      return Status::Unavailable(
          "data dir " + dir + ": " + lock.status().message() +
          " (a running `tidemap serve`?); rekey a running node by its address instead: "
          "`tidemap rekey --http HOST:PORT --new-key-file " +
          new_key_file + "`");
    }
    crypto::SymmetricKey new_key;
    const auto old_key = [&] { return UnlockValueKey(dir, config, options.value_key); };
    TIDEMAP_ASSIGN_OR_RETURN(next,
                             StartRekey(dir, config, old_key, new_key_file, &new_key, &report));
  }
  {
    DataDirOptions with_new = options;
    with_new.read_only = false;
    with_new.value_key = ValueKeySource{new_key_file, std::nullopt};
    TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> d, Open(dir, with_new));
    TIDEMAP_ASSIGN_OR_RETURN(report.reseal, d->replica().ResealValues());
  }
  TIDEMAP_RETURN_IF_ERROR(FinishRekey(dir, next, &report));
  return report;
}

Result<DataDirRekeyReport> DataDir::RekeyServing(
    const std::string& new_key_file, const std::function<bool(const ResealReport&)>& on_page) {
  TIDEMAP_ASSIGN_OR_RETURN(const EncryptionConfig config, LoadRekeyConfig(dir_));
  if (value_cipher_ == nullptr) {
    return Status::Internal("data dir " + dir_ + " was opened without its key");
  }
  DataDirRekeyReport report;
  crypto::SymmetricKey new_key;
  const auto old_key = [this]() -> Result<crypto::SymmetricKey> { return value_key_; };
  TIDEMAP_ASSIGN_OR_RETURN(const EncryptionConfig next,
                           StartRekey(dir_, config, old_key, new_key_file, &new_key, &report));
  if (value_cipher_->seal_key_id() != next.key_id) {
    // DIR/encryption already names the new key, so a crash from here on
    // opens every value sealed under it.
    TIDEMAP_ASSIGN_OR_RETURN(crypto::AeadKey sealing, crypto::AeadKey::Create(next.suite, new_key));
    TIDEMAP_RETURN_IF_ERROR(replica_->BetweenCommits([&] {
      value_cipher_->SwitchSealKey(next.key_id, std::move(sealing));
      return Status::Ok();
    }));
    value_key_ = new_key;
  }
  TIDEMAP_ASSIGN_OR_RETURN(report.reseal, replica_->ResealValues(on_page));
  TIDEMAP_RETURN_IF_ERROR(FinishRekey(dir_, next, &report));
  return report;
}

}  // namespace tidemap
