// A node's data directory: DIR/identity.key (its Ed25519 identity, mode 0600),
// DIR/db (its LevelDB replica) and, when its values are encrypted at rest,
// DIR/encryption (how they are sealed; storage/value_key.h). Shared by the
// CLI and the daemon.
#ifndef TIDEMAP_SERVER_DATA_DIR_H_
#define TIDEMAP_SERVER_DATA_DIR_H_

#include <functional>
#include <memory>
#include <string>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/identity.h>
#include <tidemap/storage/value_key.h>

namespace tidemap {

struct DataDirOptions {
  Durability durability = Durability::kSync;
  Clock* clock = nullptr;       // nullptr: the system clock
  leveldb::Env* env = nullptr;  // nullptr: the real file system
  HlcOptions hlc;               // max_clock_offset_ms
  OplogRetention retention;
  uint64_t tombstone_horizon_ms = uint64_t{7} * 24 * 3600 * 1000;  // see ReplicaOptions
  size_t write_buffer_bytes = size_t{4} << 20;                     // see ReplicaOptions
  uint64_t storage_quota_bytes = 0;                                // see ReplicaOptions
  // Open for reading only: nothing is written to DIR (see
  // ReplicaOptions::read_only), so it works on a full disk; writes are Refused.
  bool read_only = false;
  // Encryption at rest. Opening a data dir whose values are sealed (it has
  // DIR/encryption) needs its key from here: a key file or a passphrase.
  ValueKeySource value_key;
  // Init only: seal the new data dir's values under `value_key` (a key file
  // that does not exist yet is created with a fresh key), with these Argon2id
  // costs for a passphrase.
  bool encrypt = false;
  crypto::PwhashParams pwhash = crypto::PwhashDefaultParams();
};

// What DataDir::Rekey did.
struct DataDirRekeyReport {
  bool resumed = false;  // it finished a rekey a crash had interrupted
  uint8_t old_key_id = 0;
  uint8_t new_key_id = 0;
  ResealReport reseal;
};

// What DataDir::Repair found and did.
struct DataDirRepairReport {
  StoreRepairReport store;  // LevelDB's part: tables kept and lost, records dropped
  uint64_t keys = 0;        // live records after the repair
  uint64_t tombstones = 0;
  ScrubReport scrub;         // the Merkle tree against a full rebuild, after the repair
  uint64_t incarnation = 0;  // the new incarnation peers will see
};

// The key source of DIR's values from a command's settings: `key_file`, or
// the passphrase in `passphrase_file` (not both: InvalidArgument), or, with
// neither, when DIR is encrypted at rest (or `for_init`), a passphrase in
// the environment variable TIDEMAP_PASSPHRASE. Empty when none applies.
Result<ValueKeySource> ResolveValueKey(const std::string& dir, const std::string& key_file,
                                       const std::string& passphrase_file, bool for_init = false);

// An opened data dir. Destroying it closes the replica (and releases the lock).
class DataDir {
 public:
  // Creates DIR with a new identity and an empty replica. Refused when DIR
  // already holds an identity: an identity is never overwritten.
  static Result<std::unique_ptr<DataDir>> Init(const std::string& dir,
                                               const DataDirOptions& options = {});
  // Opens an existing DIR; never creates or deletes anything in it. Errors
  // name DIR: Unavailable when it is not a data dir, has no database, or
  // another process holds it ("DIR is in use by pid N"); Corruption when its
  // database cannot be opened (a missing CURRENT, a missing or unreadable
  // MANIFEST...), with a pointer to `tidemap repair`; Refused for a database
  // of another node or schema version.
  static Result<std::unique_ptr<DataDir>> Open(const std::string& dir,
                                               const DataDirOptions& options = {});
  // `tidemap repair`: rebuilds DIR's database from the files LevelDB can
  // still read (Store::Repair), opens it under a new incarnation (peers then
  // reconcile with it by a tree diff both ways, so whatever they hold that
  // the repair lost comes back) and scrubs it. Needs DIR not in use.
  static Result<DataDirRepairReport> Repair(const std::string& dir,
                                            const DataDirOptions& options = {});
  // `tidemap rekey`: reseals every value of DIR, whose key `options.value_key`
  // names, under the key in `new_key_file` (created with a fresh key when it
  // does not exist), then compacts the database so no copy under the old key
  // (nor in the clear) stays in its files. Needs DIR not in use. Resumable:
  // DIR/encryption records the rekey (with the old key sealed under the new
  // one) before any value is rewritten, so after a crash every value opens
  // with the new key, and running Rekey again with the same new key (the
  // old one is then not needed) finishes the job.
  static Result<DataDirRekeyReport> Rekey(const std::string& dir, const DataDirOptions& options,
                                          const std::string& new_key_file);
  // The rekey of this open data dir while its replica serves reads and
  // writes (a running `tidemap serve`): the same three steps as Rekey.
  // (1) DIR/encryption names the new key (and holds the old one sealed
  // under it), then the value cipher seals under the new key from the next
  // commit on, values under the old one still opening; (2) every value is
  // resealed, then the database compacted; (3) DIR/encryption drops the old
  // key. After a stop or crash past (1) the data dir opens with the new key
  // only, and a rekey to the same new key (either form) finishes the job; a
  // rekey to another key is Unavailable until then. The old key opens
  // values in this process until the data dir closes (a scan that started
  // before the reseal may still meet them). InvalidArgument when the values
  // are in the clear or the new key is the old one; the key file errors of
  // Rekey. `on_page` as in Replica::ResealValues. One at a time: the caller
  // serializes calls; any other thread may read and write meanwhile.
  Result<DataDirRekeyReport> RekeyServing(
      const std::string& new_key_file,
      const std::function<bool(const ResealReport&)>& on_page = nullptr);

  const std::string& dir() const { return dir_; }
  const Identity& identity() const { return identity_; }
  Replica& replica() { return *replica_; }
  // Whether its values are sealed at rest (DIR/encryption exists).
  bool encrypted() const { return value_cipher_ != nullptr; }
  // The AEAD suite of its values. REQUIRES: encrypted().
  crypto::AeadSuite value_suite() const { return value_cipher_->suite(); }
  // The id of the key new values are sealed under (it changes when
  // RekeyServing switches keys). REQUIRES: encrypted(). Any thread.
  uint8_t value_key_id() const { return value_cipher_->seal_key_id(); }
  Durability durability() const { return durability_; }

 private:
  DataDir(std::string dir, Identity identity, Durability durability)
      : dir_(std::move(dir)), identity_(std::move(identity)), durability_(durability) {}
  static Result<std::unique_ptr<DataDir>> OpenWith(const std::string& dir, Identity identity,
                                                   const DataDirOptions& options, bool create,
                                                   bool new_incarnation = false,
                                                   const crypto::SymmetricKey* key = nullptr);
  // DIR/encryption's cipher, when DIR has one, into value_cipher_. `key`:
  // the key already unlocked (by init), else options.value_key's.
  Status UnlockValues(const DataDirOptions& options, const crypto::SymmetricKey* key);

  std::string dir_;
  Identity identity_;
  Durability durability_;
  std::unique_ptr<SystemClock> own_clock_;
  std::unique_ptr<ValueCipher> value_cipher_;  // null: values in the clear
  // The key value_cipher_ seals under as opened (RekeyServing's old key,
  // to seal into DIR/encryption); changed only by RekeyServing.
  crypto::SymmetricKey value_key_;
  std::unique_ptr<Replica> replica_;  // declared last: closed first
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_DATA_DIR_H_
