// HugePageAllocator: a standard allocator for large buffers that are filled
// once and dropped (a loader's sort buffers). A block of at least
// kHugePageBytes is aligned to kHugePageBytes and advised for transparent
// huge pages (madvise MADV_HUGEPAGE, where the system has it), so filling it
// takes one page fault per 2 MiB rather than one per 4 KiB page; smaller
// blocks are plain operator new. Memory is still committed only as it is
// touched: reserving a large capacity costs address space, not memory.
//
// Thread-safety: stateless; blocks may be allocated and freed on any thread.
#ifndef TIDEMAP_BASE_HUGE_PAGE_ALLOCATOR_H_
#define TIDEMAP_BASE_HUGE_PAGE_ALLOCATOR_H_

#include <cstddef>
#include <new>

namespace tidemap {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// `bytes` of storage aligned to at least alignof(std::max_align_t), as
// above; throws std::bad_alloc. Freed by FreeHugePageBacked with the same
// `bytes`.
void* AllocateHugePageBacked(size_t bytes);
void FreeHugePageBacked(void* p, size_t bytes) noexcept;

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT: rebinding is implicit

  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(AllocateHugePageBacked(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeHugePageBacked(p, n * sizeof(T)); }

  template <typename U>
  friend bool operator==(const HugePageAllocator&, const HugePageAllocator<U>&) {
    return true;
  }
};

}  // namespace tidemap

#endif  // TIDEMAP_BASE_HUGE_PAGE_ALLOCATOR_H_
