#include <tidemap/server/byte_budget_internal.h>

#include <algorithm>

#include <tidemap/base/check.h>

namespace tidemap {

uint64_t ByteBudget::bytes_held() const {
  MutexLock l(&mu_);
  return held_;
}

uint64_t ByteBudget::bytes_held_peak() const {
  MutexLock l(&mu_);
  return peak_;
}

bool ByteBudget::TryTake(uint64_t bytes) {
  MutexLock l(&mu_);
  if (bytes > bytes_max_ - held_) return false;
  held_ += bytes;
  peak_ = std::max(peak_, held_);
  return true;
}

void ByteBudget::Give(uint64_t bytes) {
  MutexLock l(&mu_);
  TIDEMAP_CHECK(bytes <= held_);
  held_ -= bytes;
}

bool ByteReservation::GrowTo(uint64_t bytes) {
  if (bytes <= bytes_) return true;
  if (!budget_->TryTake(bytes - bytes_)) return false;
  bytes_ = bytes;
  return true;
}

void ByteReservation::Release() {
  if (bytes_ == 0) return;
  budget_->Give(bytes_);
  bytes_ = 0;
}

}  // namespace tidemap
