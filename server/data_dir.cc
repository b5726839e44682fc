#include "server/data_dir.h"

#include <filesystem>

namespace tidemap {

Result<std::unique_ptr<DataDir>> DataDir::Init(const std::string& dir,
                                               const DataDirOptions& options) {
  TIDEMAP_ASSIGN_OR_RETURN(Identity identity, Identity::Create(dir));
  return OpenWith(dir, std::move(identity), options);
}

Result<std::unique_ptr<DataDir>> DataDir::Open(const std::string& dir,
                                               const DataDirOptions& options) {
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
  return OpenWith(dir, std::move(identity).value(), options);
}

Result<std::unique_ptr<DataDir>> DataDir::OpenWith(const std::string& dir, Identity identity,
                                                   const DataDirOptions& options) {
  std::unique_ptr<DataDir> d(new DataDir(dir, std::move(identity), options.durability));
  ReplicaOptions ro;
  ro.path = (std::filesystem::path(dir) / "db").string();
  ro.env = options.env;
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
  auto replica = Replica::Open(std::move(ro));
  if (!replica.ok()) {
    if (replica.status().IsUnavailable()) {
      return Status::Unavailable("data dir " + dir +
                                 " is in use by another process (a running `tidemap serve`?)");
    }
    return replica.status().WithContext("data dir " + dir);
  }
  d->replica_ = std::move(replica).value();
  return d;
}

}  // namespace tidemap
