#include <tidemap/storage/key_order_sorter_internal.h>

#include <leveldb/write_batch.h>

#include <algorithm>
#include <array>
#include <cstddef>

namespace tidemap {

namespace {

leveldb::Slice ToSlice(std::string_view s) { return leveldb::Slice(s.data(), s.size()); }
std::string_view ToView(const leveldb::Slice& s) { return std::string_view(s.data(), s.size()); }

// The byte that picks a key's shared prefix in KeyOrderSorter (0 for the
// empty key, which sorts first either way).
uint8_t FirstByte(std::string_view key) { return static_cast<uint8_t>(key.empty() ? 0 : key[0]); }

}  // namespace

struct KeyOrderSorter::Change {
  std::string_view key;
  std::string_view value;
  bool put;
  // The sort key: the key's first byte, then the 7 bytes after the prefix
  // that every key of the batch starting with that byte shares; ties are
  // broken by the rest of the key, then by position (same key: order kept).
  uint64_t head;
  uint32_t position;
};

KeyOrderSorter::KeyOrderSorter() = default;
KeyOrderSorter::~KeyOrderSorter() = default;

void KeyOrderSorter::Sort(const leveldb::WriteBatch& in, leveldb::WriteBatch* out) {
  out->Clear();
  // Views into `in`.
  struct Collect : leveldb::WriteBatch::Handler {
    std::vector<Change>* changes;
    void Put(const leveldb::Slice& key, const leveldb::Slice& value) override {
      changes->push_back(Change{ToView(key), ToView(value), true, 0, 0});
    }
    void Delete(const leveldb::Slice& key) override {
      changes->push_back(Change{ToView(key), {}, false, 0, 0});
    }
  } collect;
  changes_.clear();
  collect.changes = &changes_;
  // A batch built through Put and Delete always parses; a corrupt one is
  // copied as it is, for the write to report.
  if (!in.Iterate(&collect).ok() || changes_.size() < 2) {
    out->Append(in);
    changes_.clear();
    return;
  }
  // The prefix shared by the keys starting with each byte (row families
  // share theirs: 'r' and a map name for records, for example), so that
  // the 7 bytes of the sort key are ones that tell keys apart.
  std::array<bool, 256> seen{};
  std::array<std::string_view, 256> first{};
  std::array<size_t, 256> shared{};
  for (const Change& c : changes_) {
    const auto b = FirstByte(c.key);
    if (!seen[b]) {
      seen[b] = true;
      first[b] = c.key;
      shared[b] = c.key.size();
    } else {
      const size_t n = std::min(shared[b], c.key.size());
      shared[b] = static_cast<size_t>(
          std::mismatch(c.key.begin(), c.key.begin() + static_cast<ptrdiff_t>(n), first[b].begin())
              .first -
          c.key.begin());
    }
  }
  for (size_t i = 0; i < changes_.size(); ++i) {
    Change& c = changes_[i];
    const auto b = FirstByte(c.key);
    uint64_t head = b;
    for (size_t j = 0; j < 7; ++j) {
      const size_t at = shared[b] + j;
      head = head << 8 | (at < c.key.size() ? static_cast<uint8_t>(c.key[at]) : 0);
    }
    c.head = head;
    c.position = static_cast<uint32_t>(i);
  }
  std::sort(changes_.begin(), changes_.end(), [&](const Change& x, const Change& y) {
    if (x.head != y.head) return x.head < y.head;
    // Same first byte, so the same shared prefix.
    const size_t skip = std::min(shared[FirstByte(x.key)], std::min(x.key.size(), y.key.size()));
    const int cmp = x.key.substr(skip).compare(y.key.substr(skip));
    if (cmp != 0) return cmp < 0;
    return x.position < y.position;
  });
  for (const Change& c : changes_) {
    if (c.put) {
      out->Put(ToSlice(c.key), ToSlice(c.value));
    } else {
      out->Delete(ToSlice(c.key));
    }
  }
  changes_.clear();
}

}  // namespace tidemap
