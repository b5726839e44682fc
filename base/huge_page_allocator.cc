#include <tidemap/base/huge_page_allocator.h>

#include <sys/mman.h>

namespace tidemap {

namespace {

size_t RoundedUp(size_t bytes) {
  return (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
}

}  // namespace

void* AllocateHugePageBacked(size_t bytes) {
  if (bytes < kHugePageBytes) return ::operator new(bytes);
  void* p = ::operator new (RoundedUp(bytes), std::align_val_t{kHugePageBytes});
#ifdef MADV_HUGEPAGE
  // Advice only: without transparent huge pages the block is ordinary memory.
  madvise(p, RoundedUp(bytes), MADV_HUGEPAGE);
#endif
  return p;
}

void FreeHugePageBacked(void* p, size_t bytes) noexcept {
  if (bytes < kHugePageBytes) {
    ::operator delete(p);
    return;
  }
  ::operator delete (p, std::align_val_t{kHugePageBytes});
}

}  // namespace tidemap
