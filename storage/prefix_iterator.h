// PrefixIterator: a forward scan over one key family (or any key prefix) of a Store.
//
// Every row family of the keyspace (storage/rows.h) shares a key prefix, so a
// scan of a family is "seek, then step while the key still starts with the
// prefix". This class is that loop, once:
//
//   PrefixIterator rows(store, std::string(1, rows::kGcPrefix));
//   for (rows.SeekToFirst(); rows.Valid(); rows.Next()) { ... rows.key() ... }
//   return rows.status();
//
// Valid() is false past the last row of the prefix, so a loop never reads a
// neighbouring family. A read failure also ends the scan; status() says which.
//
// Thread-safety: none (like StoreIterator); one thread at a time. Lifetimes:
// the Store must outlive an owning PrefixIterator; a borrowed StoreIterator
// must outlive the PrefixIterator that borrows it.
#ifndef TIDEMAP_STORAGE_PREFIX_ITERATOR_H_
#define TIDEMAP_STORAGE_PREFIX_ITERATOR_H_

#include <memory>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/storage/storage.h>

namespace tidemap {

class PrefixIterator {
 public:
  // Scans `prefix` with an iterator of its own over a snapshot of `store`.
  PrefixIterator(const Store& store, std::string_view prefix);
  // Scans `prefix` with `it` (borrowed), so consecutive scans reuse one
  // iterator and its snapshot.
  PrefixIterator(StoreIterator* it, std::string_view prefix);
  ~PrefixIterator();
  PrefixIterator(const PrefixIterator&) = delete;
  PrefixIterator& operator=(const PrefixIterator&) = delete;

  // Positions at the first row of the prefix.
  void SeekToFirst();
  // Positions at the first row of the prefix at or after `start` (any key:
  // a start before the prefix means its first row, one past it an empty scan).
  void Seek(std::string_view start);
  // Positions at the first row of the prefix strictly after `start`
  // (resuming a scan after the last row it returned).
  void SeekAfter(std::string_view start);
  // True while positioned at a row whose key starts with the prefix.
  bool Valid() const;
  // REQUIRES: Valid().
  void Next();
  std::string_view key() const { return it_->key(); }
  std::string_view value() const { return it_->value(); }
  // Non-OK when the underlying read failed (a scan that ended early for
  // that reason is not a complete scan).
  Status status() const { return it_->status(); }

 private:
  std::unique_ptr<StoreIterator> owned_;
  StoreIterator* it_;
  std::string prefix_;
};

}  // namespace tidemap

#endif  // TIDEMAP_STORAGE_PREFIX_ITERATOR_H_
