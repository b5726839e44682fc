#include <tidemap/server/data_dir.h>

#include <cstdlib>
#include <filesystem>

namespace tidemap {

Result<ValueKeySource> ResolveValueKey(const std::string& dir, const std::string& key_file,
                                       const std::string& passphrase_file, bool for_init) {
  if (!key_file.empty() && !passphrase_file.empty()) {
    return Status::InvalidArgument("give a key file or a passphrase file, not both");
  }
  ValueKeySource source;
  source.key_file = key_file;
  if (!passphrase_file.empty()) {
    TIDEMAP_ASSIGN_OR_RETURN(source.passphrase, LoadPassphraseFile(passphrase_file));
    return source;
  }
  std::error_code ec;
  const bool encrypted =
      std::filesystem::exists(std::filesystem::path(dir) / std::string(kEncryptionFileName), ec);
  const char* env = std::getenv(std::string(kPassphraseEnv).c_str());
  if (key_file.empty() && (encrypted || for_init) && env != nullptr && *env != '\0') {
    source.passphrase = std::string(env);
  }
  return source;
}

Result<std::unique_ptr<DataDir>> DataDir::Init(const std::string& dir,
                                               const DataDirOptions& options) {
  if (options.encrypt && options.value_key.empty()) {
    return Status::InvalidArgument("--encrypt needs --key-file FILE, --passphrase-file FILE or " +
                                   std::string(kPassphraseEnv));
  }
  if (!options.encrypt && !options.value_key.empty()) {
    return Status::InvalidArgument("a key for values at rest is given without --encrypt");
  }
  TIDEMAP_ASSIGN_OR_RETURN(Identity identity, Identity::Create(dir));
  if (!options.encrypt) return OpenWith(dir, std::move(identity), options, /*create=*/true);
  // The encryption file is written before the database, so no value is ever
  // written in the clear.
  crypto::SymmetricKey key;
  TIDEMAP_ASSIGN_OR_RETURN(const EncryptionConfig config,
                           NewEncryptionConfig(options.value_key, options.pwhash, &key));
  TIDEMAP_RETURN_IF_ERROR(SaveEncryptionConfig(dir, config, /*replace=*/false));
  return OpenWith(dir, std::move(identity), options, /*create=*/true, /*new_incarnation=*/false,
                  &key);
}

Status DataDir::UnlockValues(const DataDirOptions& options, const crypto::SymmetricKey* key) {
  TIDEMAP_ASSIGN_OR_RETURN(const std::optional<EncryptionConfig> config,
                           LoadEncryptionConfig(dir_));
  if (!config.has_value()) {
    if (options.value_key.empty()) return Status::Ok();
    return Status::InvalidArgument("data dir " + dir_ +
                                   " is not encrypted at rest; a key for its values "
                                   "(--key-file, a passphrase) is only for an encrypted one");
  }
  crypto::SymmetricKey unlocked;
  if (key != nullptr) {
    unlocked = *key;
  } else {
    TIDEMAP_ASSIGN_OR_RETURN(unlocked, UnlockValueKey(dir_, *config, options.value_key));
  }
  TIDEMAP_ASSIGN_OR_RETURN(value_cipher_, MakeValueCipher(*config, unlocked));
  value_key_ = unlocked;
  return Status::Ok();
}

namespace {

std::string DbPath(const std::string& dir) { return (std::filesystem::path(dir) / "db").string(); }

// Loads DIR's identity: a dir without one is not a data dir.
Result<Identity> LoadIdentity(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return Status::Unavailable("data dir " + dir +
                               " does not exist; create it with `tidemap init --data " + dir + "`");
  }
  auto identity = Identity::Load(dir);
  if (!identity.ok()) {
    if (identity.status().IsNotFound()) {
      return Status::Unavailable(dir + " is not a tidemap data dir (" +
                                 identity.status().message() + ")");
    }
    return identity.status();
  }
  return identity;
}

// What opening DIR's database failed with, for an operator: every failure
// but a refusal means the node cannot use DIR (exit 3).
Status OpenError(const std::string& dir, const Status& s) {
  if (s.IsUnavailable()) {
    // "database DIR/db is in use by pid N" from the directory lock.
    const std::string& m = s.message();
    const size_t at = m.find(" is in use");
    return Status::Unavailable(
        "data dir " + dir +
        (at == std::string::npos ? " is in use by another process" : m.substr(at)) +
        " (a running `tidemap serve`?)");
  }
  if (s.IsRefused()) return s.WithContext("data dir " + dir);
  if (s.IsNotFound() && s.message().rfind("no database at ", 0) == 0) {
    return Status::Unavailable("data dir " + dir + " has no database (" + DbPath(dir) +
                               "/CURRENT does not exist); `tidemap init` creates one only "
                               "in a new dir, `tidemap repair --data " +
                               dir + "` rebuilds one from the files left");
  }
  return Status::Corruption("data dir " + dir + ": " + s.message() + "; `tidemap repair --data " +
                            dir + "` rebuilds the database from what can still be read");
}

}  // namespace

Result<std::unique_ptr<DataDir>> DataDir::Open(const std::string& dir,
                                               const DataDirOptions& options) {
  TIDEMAP_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(dir));
  return OpenWith(dir, std::move(identity), options, /*create=*/false);
}

Result<DataDirRepairReport> DataDir::Repair(const std::string& dir, const DataDirOptions& options) {
  TIDEMAP_RETURN_IF_ERROR(LoadIdentity(dir).status());  // a data dir, before touching db/
  DataDirRepairReport report;
  auto repaired = Store::Repair(DbPath(dir));
  if (repaired.status().IsNotFound()) {
    return Status::Unavailable("data dir " + dir + " has no database to repair (" + DbPath(dir) +
                               " does not exist)");
  }
  if (!repaired.ok()) return OpenError(dir, repaired.status());
  report.store = std::move(repaired).value();
  {
    TIDEMAP_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(dir));
    TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> d,
                             OpenWith(dir, std::move(identity), options, /*create=*/false,
                                      /*new_incarnation=*/true));
    TIDEMAP_RETURN_IF_ERROR(d->replica().RebuildDerivedRows().status());
  }
  // Reopened, so that everything built at open (the key filter) is built
  // from the rebuilt rows.
  TIDEMAP_ASSIGN_OR_RETURN(Identity identity, LoadIdentity(dir));
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> d,
                           OpenWith(dir, std::move(identity), options, /*create=*/false));
  Replica& r = d->replica();
  TIDEMAP_ASSIGN_OR_RETURN(report.scrub, r.Scrub());
  TIDEMAP_ASSIGN_OR_RETURN(ReplicaStats stats, r.Stats());
  report.keys = stats.keys;
  report.tombstones = stats.tombstones;
  report.incarnation = r.incarnation();
  return report;
}

Result<std::unique_ptr<DataDir>> DataDir::OpenWith(const std::string& dir, Identity identity,
                                                   const DataDirOptions& options, bool create,
                                                   bool new_incarnation,
                                                   const crypto::SymmetricKey* key) {
  std::unique_ptr<DataDir> d(new DataDir(dir, std::move(identity), options.durability));
  // Before the database opens: a wrong key fails here, before any record is read.
  TIDEMAP_RETURN_IF_ERROR(d->UnlockValues(options, key));
  ReplicaOptions ro;
  ro.value_cipher = d->value_cipher_.get();
  ro.path = DbPath(dir);
  ro.env = options.env;
  ro.create_if_missing = create;
  ro.new_incarnation = new_incarnation;
  ro.clock = options.clock;
  if (ro.clock == nullptr) {
    d->own_clock_ = std::make_unique<SystemClock>();
    ro.clock = d->own_clock_.get();
  }
  ro.node_id = d->identity_.node_id();
  ro.durability = options.durability;
  ro.hlc = options.hlc;
  ro.retention = options.retention;
  ro.tombstone_horizon_ms = options.tombstone_horizon_ms;
  ro.write_buffer_bytes = options.write_buffer_bytes;
  ro.storage_quota_bytes = options.storage_quota_bytes;
  ro.read_only = options.read_only;
  // Sync-mode writers waiting for their group's commit sleep rather than
  // yield in a loop: a node's writers are the HTTP and transport workers,
  // which share few cores with the event loops, and a waiter that yields
  // takes the CPU those need while the fsync runs.
  ro.group_commit_spin_max_us = 0;
  auto replica = Replica::Open(std::move(ro));
  if (!replica.ok()) return OpenError(dir, replica.status());
  d->replica_ = std::move(replica).value();
  return d;
}

}  // namespace tidemap
