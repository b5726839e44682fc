// Scans shared by the replica's readers: the key-hash index by hash range,
// the records with their metadata, and the split of a large read into
// parallel slices.
//
// Every scan of a key family goes through PrefixIterator (storage/), so none
// reads past its family. Corruption, naming the row, for a malformed row.
//
// Thread-safety: the functions keep no state; each call uses its own (or the
// given) iterator, which is not shared between threads.
#ifndef TIDEMAP_REPLICA_READERS_INTERNAL_H_
#define TIDEMAP_REPLICA_READERS_INTERNAL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <tidemap/base/check.h>
#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

// Whether a record of expiry `expiry_ms` (0: none) has expired at `now_ms`.
inline bool IsExpired(uint64_t expiry_ms, uint64_t now_ms) {
  return expiry_ms != 0 && expiry_ms <= now_ms;
}

// Calls fn(key_hash, map, key, meta) for every key-hash index row with a key
// hash in [lo, hi], in key-hash order, reusing `it`.
template <typename Fn>
Status ForEachIndexRow(StoreIterator* it, uint64_t lo, uint64_t hi, Fn&& fn) {
  PrefixIterator index(it, std::string_view(&rows::kHashIndexPrefix, 1));
  for (index.Seek(rows::HashIndexPrefix(lo)); index.Valid(); index.Next()) {
    uint64_t h = 0;
    std::string_view m, k;
    if (!rows::ParseHashIndexKey(index.key(), &h, &m, &k)) {
      return Status::Corruption("malformed key-hash index row");
    }
    if (h > hi) break;
    TIDEMAP_ASSIGN_OR_RETURN(rows::RecordMeta meta, rows::DecodeHashIndexValue(index.value()));
    fn(h, m, k, meta);
  }
  return index.status();
}

// Calls `fn` for every stored record (tombstones included) in (map, key)
// order until it returns false.
Status ForEachRecordMeta(const Store& store, const std::function<bool(const KeyMeta&)>& fn);

// A tree-diff read (bucket summaries, records by key hash) is split across
// threads only when each gets at least this many buckets or hashes: below
// that, starting a thread costs more than the cold block reads it overlaps.
inline constexpr size_t kParallelReadSliceMin = 128;
// diff_read_threads 0 means the machine's hardware threads, at most this many.
inline constexpr uint32_t kDiffReadThreadsAuto = 4;

// Calls fn(slice, begin, end) for consecutive slices of [0, n): one slice on
// the calling thread when n is small or `threads` is 1, else up to `threads`
// slices (the caller runs the first), each at least kParallelReadSliceMin
// long. Returns the first failure in slice order. fn must only touch what its
// slice owns.
template <typename Fn>
Status ForEachReadSlice(size_t n, uint32_t threads, Fn&& fn) {
  TIDEMAP_CHECK(threads >= 1);
  const size_t slices = std::clamp<size_t>(n / kParallelReadSliceMin, 1, threads);
  std::vector<Status> results(slices);
  const auto run = [&](size_t slice) {
    results[slice] = fn(slice, n * slice / slices, n * (slice + 1) / slices);
  };
  std::vector<std::thread> helpers;
  helpers.reserve(slices - 1);
  for (size_t slice = 1; slice < slices; ++slice) helpers.emplace_back(run, slice);
  run(0);
  for (std::thread& t : helpers) t.join();
  for (Status& r : results) {
    if (!r.ok()) return std::move(r);
  }
  return Status::Ok();
}

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_READERS_INTERNAL_H_
