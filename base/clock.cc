#include <tidemap/base/clock.h>

#include <chrono>

namespace tidemap {

uint64_t SystemClock::NowMillis() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count();
  const int64_t shifted = ms + offset_ms_;
  return shifted < 0 ? 0 : static_cast<uint64_t>(shifted);
}

}  // namespace tidemap
