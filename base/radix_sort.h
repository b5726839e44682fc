// RadixSortByKey: sorts a range by a 64-bit key per element, ties by a
// comparator, with an in-place most-significant-byte radix sort (American
// flag sort): a counting pass and a permutation pass per key byte, down to
// ranges small enough for std::sort. For many elements with well spread
// keys (hashes) it does a few linear passes where std::sort does log2(n)
// passes of comparisons. Not stable; no memory beyond the stack (two
// 256-entry tables a level, eight levels at most).
//
// Contract: `key_of(e)` is a uint64_t; `less` is a strict weak order that
// orders by key_of first (a < b whenever key_of(a) < key_of(b)), and breaks
// ties as the caller wants. The result is the range sorted by `less`.
#ifndef TIDEMAP_BASE_RADIX_SORT_H_
#define TIDEMAP_BASE_RADIX_SORT_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tidemap {

namespace radix_sort_internal {

// Ranges of at most this many elements go to std::sort.
inline constexpr size_t kSmallRange = 64;

template <typename T, typename KeyOf, typename Less>
void SortLevel(T* first, T* last, int shift, const KeyOf& key_of, const Less& less) {
  const auto n = static_cast<size_t>(last - first);
  if (n <= kSmallRange || shift < 0) {
    std::sort(first, last, less);
    return;
  }
  auto digit = [&](const T& e) { return static_cast<size_t>((key_of(e) >> shift) & 0xff); };
  std::array<size_t, 256> count{};
  for (T* p = first; p != last; ++p) ++count[digit(*p)];
  // head[d]: the next place of digit d's slot not yet holding a d; end[d]:
  // the end of the slot.
  std::array<T*, 256> head, end;
  T* at = first;
  for (size_t d = 0; d < 256; ++d) {
    head[d] = at;
    at += count[d];
    end[d] = at;
  }
  for (size_t d = 0; d < 256; ++d) {
    while (head[d] != end[d]) {
      T moving = std::move(*head[d]);
      for (size_t to = digit(moving); to != d; to = digit(moving)) {
        std::swap(moving, *head[to]++);
      }
      *head[d]++ = std::move(moving);
    }
  }
  T* begin = first;
  for (size_t d = 0; d < 256; ++d) {
    T* slot_end = begin + count[d];
    SortLevel(begin, slot_end, shift - 8, key_of, less);
    begin = slot_end;
  }
}

}  // namespace radix_sort_internal

template <typename T, typename KeyOf, typename Less>
void RadixSortByKey(T* first, T* last, const KeyOf& key_of, const Less& less) {
  radix_sort_internal::SortLevel(first, last, 56, key_of, less);
}

}  // namespace tidemap

#endif  // TIDEMAP_BASE_RADIX_SORT_H_
