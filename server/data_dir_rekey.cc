// DataDir::Rekey: every value of a data dir resealed under a new key.
//
// The order makes it resumable: (1) DIR/encryption is replaced by one that
// names the new key and holds the old key sealed under it, (2) the replica,
// opened with the new key, reseals every value still under the old one and
// compacts, (3) DIR/encryption is replaced by one without the old key. A
// crash after (1) leaves a data dir whose values all open with the new key;
// running Rekey again redoes (2) and (3).
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

// Step (1), or the check that the rekey in progress is to `new_key_file`.
Result<EncryptionConfig> StartRekey(const std::string& dir, const EncryptionConfig& config,
                                    const ValueKeySource& old_source,
                                    const std::string& new_key_file, DataDirRekeyReport* report) {
  TIDEMAP_ASSIGN_OR_RETURN(const crypto::SymmetricKey new_key, LoadOrCreateNewKey(new_key_file));
  if (config.old_key_id != 0) {
    if (KeyCheckValue(new_key) != config.key_check) {
      return Status::Unavailable("data dir " + dir + " has a rekey to another key in progress; " +
                                 "give that key as --new-key-file to finish it");
    }
    report->resumed = true;
    return config;
  }
  TIDEMAP_ASSIGN_OR_RETURN(const crypto::SymmetricKey old_key,
                           UnlockValueKey(dir, config, old_source));
  TIDEMAP_ASSIGN_OR_RETURN(EncryptionConfig next, BeginRekeyConfig(config, old_key, new_key));
  TIDEMAP_RETURN_IF_ERROR(SaveEncryptionConfig(dir, next, /*replace=*/true));
  return next;
}

}  // namespace

Result<DataDirRekeyReport> DataDir::Rekey(const std::string& dir, const DataDirOptions& options,
                                          const std::string& new_key_file) {
  if (new_key_file.empty()) return Status::InvalidArgument("rekey needs --new-key-file FILE");
  if (const Status id = Identity::Load(dir).status(); !id.ok()) {
    if (!id.IsNotFound()) return id;
    return Status::Unavailable(dir + " is not a tidemap data dir (" + id.message() + ")");
  }
  TIDEMAP_ASSIGN_OR_RETURN(const std::optional<EncryptionConfig> config, LoadEncryptionConfig(dir));
  if (!config.has_value()) {
    return Status::InvalidArgument("data dir " + dir +
                                   " is not encrypted at rest; there is no key to change");
  }
  DataDirRekeyReport report;
  EncryptionConfig next;
  {
    // Step (1) only while no process holds the database (a running node).
    auto lock = DirLock::Acquire((std::filesystem::path(dir) / "db").string());
    if (!lock.ok()) {
      return Status::Unavailable("data dir " + dir + ": " + lock.status().message() +
                                 " (a running `tidemap serve`?)");
    }
    TIDEMAP_ASSIGN_OR_RETURN(next,
                             StartRekey(dir, *config, options.value_key, new_key_file, &report));
  }
  report.old_key_id = next.old_key_id;
  report.new_key_id = next.key_id;
  {
    DataDirOptions with_new = options;
    with_new.read_only = false;
    with_new.value_key = ValueKeySource{new_key_file, std::nullopt};
    TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> d, Open(dir, with_new));
    TIDEMAP_ASSIGN_OR_RETURN(report.reseal, d->replica().ResealValues());
  }
  TIDEMAP_RETURN_IF_ERROR(SaveEncryptionConfig(dir, FinishRekeyConfig(next), /*replace=*/true));
  return report;
}

}  // namespace tidemap
