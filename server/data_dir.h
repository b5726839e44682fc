// A node's data directory: DIR/identity.key (its Ed25519 identity, mode 0600)
// and DIR/db (its LevelDB replica). Shared by the CLI and the daemon.
#ifndef TIDEMAP_SERVER_DATA_DIR_H_
#define TIDEMAP_SERVER_DATA_DIR_H_

#include <memory>
#include <string>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/identity.h>

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
};

// What DataDir::Repair found and did.
struct DataDirRepairReport {
  StoreRepairReport store;  // LevelDB's part: tables kept and lost, records dropped
  uint64_t keys = 0;        // live records after the repair
  uint64_t tombstones = 0;
  ScrubReport scrub;         // the Merkle tree against a full rebuild, after the repair
  uint64_t incarnation = 0;  // the new incarnation peers will see
};

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

  const std::string& dir() const { return dir_; }
  const Identity& identity() const { return identity_; }
  Replica& replica() { return *replica_; }
  Durability durability() const { return durability_; }

 private:
  DataDir(std::string dir, Identity identity, Durability durability)
      : dir_(std::move(dir)), identity_(std::move(identity)), durability_(durability) {}
  static Result<std::unique_ptr<DataDir>> OpenWith(const std::string& dir, Identity identity,
                                                   const DataDirOptions& options, bool create,
                                                   bool new_incarnation = false);

  std::string dir_;
  Identity identity_;
  Durability durability_;
  std::unique_ptr<SystemClock> own_clock_;
  std::unique_ptr<Replica> replica_;  // declared last: closed first
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_DATA_DIR_H_
