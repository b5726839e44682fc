#include <tidemap/replica/clear_state_internal.h>

#include <string>
#include <utility>

#include <tidemap/base/coding.h>
#include <tidemap/storage/prefix_iterator.h>

namespace tidemap {

Status ClearState::Load(const Store& store) {
  std::map<std::string, rows::ClearRow, std::less<>> loaded;
  PrefixIterator it(store, rows::MetaKey(rows::kMetaClearPrefix));
  for (it.SeekToFirst(); it.Valid(); it.Next()) {
    std::string_view map;
    if (!rows::ParseClearRowKey(it.key(), &map)) {
      return Status::Corruption("malformed clear row " + Printable(it.key()));
    }
    TIDEMAP_ASSIGN_OR_RETURN(rows::ClearRow row, rows::DecodeClearRow(it.value()));
    loaded.emplace(std::string(map), std::move(row));
  }
  TIDEMAP_RETURN_IF_ERROR(it.status());
  MutexLock l(&mu_);
  rows_ = std::move(loaded);
  any_.store(!rows_.empty(), std::memory_order_release);
  return Status::Ok();
}

std::optional<Version> ClearState::VersionOf(std::string_view map) const {
  if (!any_.load(std::memory_order_acquire)) return std::nullopt;
  MutexLock l(&mu_);
  const auto it = rows_.find(map);
  if (it == rows_.end()) return std::nullopt;
  return it->second.version;
}

void ClearState::Committed(std::string_view map, const Version& version) {
  MutexLock l(&mu_);
  rows_.insert_or_assign(std::string(map), rows::ClearRow{version, false, {}});
  any_.store(true, std::memory_order_release);
}

std::optional<ClearState::Pending> ClearState::NextPending() const {
  MutexLock l(&mu_);
  for (const auto& [map, row] : rows_) {
    if (!row.done) return Pending{map, row};
  }
  return std::nullopt;
}

void ClearState::Progress(std::string_view map, const rows::ClearRow& row) {
  MutexLock l(&mu_);
  const auto it = rows_.find(map);
  if (it == rows_.end() || it->second.version != row.version) return;
  it->second = row;
}

size_t ClearState::maps() const {
  MutexLock l(&mu_);
  return rows_.size();
}

size_t ClearState::pending() const {
  MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [map, row] : rows_) n += row.done ? 0 : 1;
  return n;
}

}  // namespace tidemap
