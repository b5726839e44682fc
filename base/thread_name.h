// Names the calling thread, as `top -H`, `perf` and /proc/<pid>/task/*/comm
// show it. Linux keeps 15 bytes of a name; longer ones are cut there.
#ifndef TIDEMAP_BASE_THREAD_NAME_H_
#define TIDEMAP_BASE_THREAD_NAME_H_

#include <pthread.h>

#include <string>
#include <string_view>

namespace tidemap {

inline constexpr size_t kThreadNameMax = 15;

inline void NameThisThread(std::string_view name) {
  const std::string cut(name.substr(0, kThreadNameMax));
  pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace tidemap

#endif  // TIDEMAP_BASE_THREAD_NAME_H_
