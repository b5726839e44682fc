// A node's data directory: DIR/identity.key (its Ed25519 identity, mode 0600)
// and DIR/db (its LevelDB replica). Shared by the CLI and the daemon.
#ifndef TIDEMAP_SERVER_DATA_DIR_H_
#define TIDEMAP_SERVER_DATA_DIR_H_

#include <memory>
#include <string>

#include "base/clock.h"
#include "base/status.h"
#include "replica/replica.h"
#include "storage/identity.h"

namespace tidemap {

struct DataDirOptions {
  Durability durability = Durability::kSync;
  Clock* clock = nullptr;       // nullptr: the system clock
  leveldb::Env* env = nullptr;  // nullptr: the real file system
  HlcOptions hlc;               // max_clock_offset_ms
  OplogRetention retention;
  uint64_t tombstone_horizon_ms = uint64_t{7} * 24 * 3600 * 1000;  // see ReplicaOptions
  size_t write_buffer_bytes = size_t{4} << 20;                     // see ReplicaOptions
};

// An opened data dir. Destroying it closes the replica (and releases the lock).
class DataDir {
 public:
  // Creates DIR with a new identity and an empty replica. Refused when DIR
  // already holds an identity: an identity is never overwritten.
  static Result<std::unique_ptr<DataDir>> Init(const std::string& dir,
                                               const DataDirOptions& options = {});
  // Opens an existing DIR. Unavailable when it is not a data dir or another
  // process holds it ("in use"); the message names DIR.
  static Result<std::unique_ptr<DataDir>> Open(const std::string& dir,
                                               const DataDirOptions& options = {});

  const std::string& dir() const { return dir_; }
  const Identity& identity() const { return identity_; }
  Replica& replica() { return *replica_; }
  Durability durability() const { return durability_; }

 private:
  DataDir(std::string dir, Identity identity, Durability durability)
      : dir_(std::move(dir)), identity_(std::move(identity)), durability_(durability) {}
  static Result<std::unique_ptr<DataDir>> OpenWith(const std::string& dir, Identity identity,
                                                   const DataDirOptions& options);

  std::string dir_;
  Identity identity_;
  Durability durability_;
  std::unique_ptr<SystemClock> own_clock_;
  std::unique_ptr<Replica> replica_;  // declared last: closed first
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_DATA_DIR_H_
