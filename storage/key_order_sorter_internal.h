// KeyOrderSorter: the reordering behind Batch::SortByKey (storage/storage.h).
// Internal to storage/ (and its tests and benchmarks); not installed.
#ifndef TIDEMAP_STORAGE_KEY_ORDER_SORTER_INTERNAL_H_
#define TIDEMAP_STORAGE_KEY_ORDER_SORTER_INTERNAL_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace leveldb {
class WriteBatch;
}  // namespace leveldb

namespace tidemap {

// Copies a LevelDB batch's changes into another in key order, keeping the
// order of changes to the same key, so both batches commit exactly the same
// (the last change to a key wins either way). LevelDB inserts a batch into
// its memtable, a skip list, one change after another, each by a search from
// the top of the list; in key order a search walks mostly the nodes the one
// before it walked, still in cache, where random keys miss it at most
// levels. The sort compares 8-byte integers first, made of each key's first
// byte and the 7 bytes after the prefix that the batch's keys starting with
// that byte share (a row family and map name, say), so it costs less than
// the inserts save. Reusable; not thread-safe.
class KeyOrderSorter {
 public:
  KeyOrderSorter();
  ~KeyOrderSorter();
  // `*out` is cleared first; `in` and `*out` must differ.
  void Sort(const leveldb::WriteBatch& in, leveldb::WriteBatch* out);

 private:
  struct Change;
  std::vector<Change> changes_;
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_KEY_ORDER_SORTER_INTERNAL_H_
