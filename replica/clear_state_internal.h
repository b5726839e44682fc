// Map clears: which maps were cleared, at what version, and how far the
// removal of their older records got.
//
// Design (docs/storage.md, "Map clears"): a clear of map M is M's record at
// the reserved empty key, a tombstone stamped like any write, so it is one
// Merkle item, one oplog entry and one record on the wire. Every record of M
// older than it is hidden from reads at once (VersionOf), dropped when it
// arrives from a peer, and removed from the store and the tree in bounded
// batches off the commit path (Replica::RemoveClearedRecords). A meta row per
// cleared map (rows::ClearRow) holds the version and the removal's progress.
//
// Thread-safety: every method may be called from any thread; the state is
// guarded by mu_, a leaf lock (see replica/impl_internal.h). Committed and
// Progress are called under the replica's commit_mu, by a group's leader and
// by the removal.
#ifndef TIDEMAP_REPLICA_CLEAR_STATE_INTERNAL_H_
#define TIDEMAP_REPLICA_CLEAR_STATE_INTERNAL_H_

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// A clear is a map's record at this key, which no write may use (a key
// must not be empty).
inline constexpr std::string_view kClearKey = "";

class ClearState {
 public:
  // Loads every clear meta row (replacing what is held).
  Status Load(const Store& store) TIDEMAP_EXCLUDES(mu_);
  // The version of `map`'s clear; nullopt when it was never cleared. Cheap
  // (no lock) while no map is cleared.
  std::optional<Version> VersionOf(std::string_view map) const TIDEMAP_EXCLUDES(mu_);
  // Whether a record of `map` at `version` is cleared (older than the clear).
  bool Hides(std::string_view map, const Version& version) const TIDEMAP_EXCLUDES(mu_) {
    if (!any_.load(std::memory_order_acquire)) return false;
    const std::optional<Version> clear = VersionOf(map);
    return clear.has_value() && version < *clear;
  }
  // A clear of `map` at `version` committed: its removal starts over.
  void Committed(std::string_view map, const Version& version) TIDEMAP_EXCLUDES(mu_);
  // A map whose removal is not done, with its row (nullopt: none).
  struct Pending {
    std::string map;
    rows::ClearRow row;
  };
  std::optional<Pending> NextPending() const TIDEMAP_EXCLUDES(mu_);
  // A removal batch of `map` committed `row`; ignored when the map was
  // cleared again meanwhile (another version).
  void Progress(std::string_view map, const rows::ClearRow& row) TIDEMAP_EXCLUDES(mu_);
  // Cleared maps, and those whose removal is not done.
  size_t maps() const TIDEMAP_EXCLUDES(mu_);
  size_t pending() const TIDEMAP_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::map<std::string, rows::ClearRow, std::less<>> rows_ TIDEMAP_GUARDED_BY(mu_);
  std::atomic<bool> any_{false};  // !rows_.empty()
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_CLEAR_STATE_INTERNAL_H_
